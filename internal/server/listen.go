package server

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// handshakeListener hands net/http connections whose TLS handshake is
// already done. Each handshake runs in a goroutine of its own that ends
// with it. net/http would run it in the goroutine that then serves the
// connection for as long as the agent stays connected, and the deep stack
// a handshake needs (certificate parsing and verification) would stay
// with that goroutine: many kB for every idle agent holding its
// long-poll.
//
// At most handshakesPerCPU handshakes per CPU run at once; the rest wait
// their turn, for a fifth of the handshake deadline at most, and are then
// closed without work (the client retries with backoff). Unbounded, the
// handshakes of a whole fleet reconnecting or fetching at once share the
// CPU so finely that each takes as long as all of them: every client
// gives up (10 s) before its own is done, the server's work is lost, and
// the fleet retries into the same storm. A queue as long as the deadline
// loses the same way: each handshake then starts just before its client
// gives up. Bounded in both, the handshakes that start finish while their
// clients wait, at the rate the CPU allows.
type handshakeListener struct {
	inner   net.Listener
	cfg     *tls.Config
	timeout time.Duration
	log     *slog.Logger
	// counts are the server's handshake metrics.
	counts *handshakeCounts
	// slots holds a token for each handshake running.
	slots chan struct{}

	ready  chan net.Conn
	ctx    context.Context
	cancel context.CancelFunc
	start  sync.Once
	wg     sync.WaitGroup

	// failed is closed when the inner listener fails for good; err says
	// why.
	failed chan struct{}
	err    error

	closeOnce sync.Once
	closeErr  error
	// mu guards closed against inject adding to wg while Close waits.
	mu     sync.Mutex
	closed bool
}

// handshakesPerCPU bounds the handshakes running at once, per CPU. A
// handshake waits for two of the client's flights, so on a network with
// 200 ms round trips this still lets about 600 complete a second per CPU,
// more than a CPU can compute.
const handshakesPerCPU = 128

// handshakeCounts are the handshake metrics of a server.
type handshakeCounts struct {
	// done counts the handshakes completed, resumed those of them that
	// resumed a session; waiting is how many accepted connections wait
	// for a handshake slot.
	done, resumed, waiting atomic.Int64
}

func newHandshakeListener(inner net.Listener, cfg *tls.Config, timeout time.Duration, log *slog.Logger, counts *handshakeCounts, slots int) *handshakeListener {
	ctx, cancel := context.WithCancel(context.Background())
	return &handshakeListener{inner: inner, cfg: cfg, timeout: timeout, log: log, counts: counts, slots: make(chan struct{}, slots),
		ready: make(chan net.Conn), ctx: ctx, cancel: cancel, failed: make(chan struct{})}
}

// Accept returns the next connection whose handshake succeeded.
func (l *handshakeListener) Accept() (net.Conn, error) {
	// Accepting starts with the first call, after net/http has set up
	// HTTP/2 on the configuration.
	l.start.Do(func() {
		l.wg.Add(1)
		go l.acceptLoop()
	})
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.failed:
		return nil, l.err
	case <-l.ctx.Done():
		return nil, net.ErrClosed
	}
}

// temporaryAccept tells the accept failures that pass: out of file
// descriptors or memory, a connection reset before it was accepted.
func temporaryAccept(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// acceptLoop accepts TCP connections and starts a handshake for each. It
// waits out temporary failures (out of file descriptors) as net/http does.
func (l *handshakeListener) acceptLoop() {
	defer l.wg.Done()
	var delay time.Duration
	for {
		c, err := l.inner.Accept()
		if err != nil {
			if l.ctx.Err() != nil {
				return
			}
			if temporaryAccept(err) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				l.log.Warn("accept failed; retrying", "err", err, "in", delay)
				select {
				case <-time.After(delay):
					continue
				case <-l.ctx.Done():
					return
				}
			}
			l.err = err
			close(l.failed)
			return
		}
		delay = 0
		l.wg.Add(1)
		go l.handshake(c)
	}
}

func (l *handshakeListener) handshake(c net.Conn) {
	defer l.wg.Done()
	// The deadline counts from the accept, as the client's own does.
	ctx, cancel := context.WithTimeout(l.ctx, l.timeout)
	defer cancel()
	wait := time.NewTimer(l.timeout / 5)
	defer wait.Stop()
	l.counts.waiting.Add(1)
	slot := false
	select {
	case l.slots <- struct{}{}:
		slot = true
	case <-wait.C:
	case <-ctx.Done():
	}
	l.counts.waiting.Add(-1)
	if !slot {
		l.log.Debug("TLS handshake not started: the server is busy", "remote", c.RemoteAddr().String())
		_ = c.Close()
		return
	}
	tc := tls.Server(c, l.cfg)
	err := tc.HandshakeContext(ctx)
	<-l.slots
	if err != nil {
		// net/http logs these to its error log, which is debug here.
		l.log.Debug("TLS handshake error", "remote", c.RemoteAddr().String(), "err", err)
		_ = c.Close()
		return
	}
	l.counts.done.Add(1)
	if tc.ConnectionState().DidResume {
		l.counts.resumed.Add(1)
	}
	select {
	case l.ready <- tc:
	case <-l.ctx.Done():
		_ = tc.Close()
	}
}

// inject hands net/http a connection again: one whose long-poll was
// answered outside it (park.go), to read its next request. After Close it
// closes the connection.
func (l *handshakeListener) inject(c net.Conn) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		_ = c.Close()
		return
	}
	l.wg.Add(1)
	l.mu.Unlock()
	go func() {
		defer l.wg.Done()
		select {
		case l.ready <- c:
		case <-l.ctx.Done():
			_ = c.Close()
		}
	}()
}

// Close stops accepting, ends the handshakes under way and waits for
// their goroutines.
func (l *handshakeListener) Close() error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed = true
		l.mu.Unlock()
		l.cancel()
		l.closeErr = l.inner.Close()
		l.wg.Wait()
	})
	return l.closeErr
}

func (l *handshakeListener) Addr() net.Addr { return l.inner.Addr() }
