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
type handshakeListener struct {
	inner   net.Listener
	cfg     *tls.Config
	timeout time.Duration
	log     *slog.Logger
	// handshakes counts the handshakes done (the server's metric).
	handshakes *atomic.Int64

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

func newHandshakeListener(inner net.Listener, cfg *tls.Config, timeout time.Duration, log *slog.Logger, handshakes *atomic.Int64) *handshakeListener {
	ctx, cancel := context.WithCancel(context.Background())
	return &handshakeListener{inner: inner, cfg: cfg, timeout: timeout, log: log, handshakes: handshakes,
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
	tc := tls.Server(c, l.cfg)
	ctx, cancel := context.WithTimeout(l.ctx, l.timeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		// net/http logs these to its error log, which is debug here.
		l.log.Debug("TLS handshake error", "remote", c.RemoteAddr().String(), "err", err)
		_ = c.Close()
		return
	}
	l.handshakes.Add(1)
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
