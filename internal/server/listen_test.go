package server

import (
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/pki"
)

// TestHandshakeSlots: with every handshake slot taken, a new connection
// waits for its turn (counted as waiting) instead of sharing the CPU with
// the handshakes under way, and its handshake completes once a slot is
// free; a connection that waits longer than a fifth of the handshake
// deadline is closed without one, while its client still has the time to
// try again.
func TestHandshakeSlots(t *testing.T) {
	fx := newServed(t)
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var counts handshakeCounts
	const timeout = 10 * time.Second
	hl := newHandshakeListener(inner, fx.tls, timeout, fx.log, &counts, 1)
	t.Cleanup(func() { hl.Close() })
	go func() {
		for {
			c, err := hl.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	addr := inner.Addr().String()

	// A client that connects and sends nothing holds the only slot: its
	// handshake waits for a hello.
	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	// The listener starts accepting on its first Accept; wait for it to
	// have taken the silent connection's slot.
	waitUntil(t, 5*time.Second, "the silent connection's handshake holds the slot", func() bool { return len(hl.slots) == 1 })

	cfg := fx.clientTLS(pki.RoleDevice, "dev-1")
	cfg.ServerName = "localhost"
	done := make(chan error, 1)
	go func() {
		c, err := tls.Dial("tcp", addr, cfg)
		if err == nil {
			c.Close()
		}
		done <- err
	}()
	waitUntil(t, 5*time.Second, "the second connection waits for a slot", func() bool { return counts.waiting.Load() == 1 })
	select {
	case err := <-done:
		t.Fatalf("handshake finished (%v) while the only slot was taken", err)
	default:
	}
	// The silent client leaves: its slot goes to the waiting one.
	silent.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("handshake after the slot was freed: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("handshake did not finish once the slot was free")
	}
	if w := counts.waiting.Load(); w != 0 {
		t.Errorf("%d connections still waiting, want 0", w)
	}
	// With TLS 1.3 the client is done first: the server's side ends when
	// the client's Finished arrives.
	waitUntil(t, 5*time.Second, "the server counts the handshake", func() bool { return counts.done.Load() == 1 })

	// A connection that waits too long is closed unanswered, its
	// handshake never started: the client's hello gets no reply.
	hl.slots <- struct{}{} // every slot busy, for as long as the test says
	start := time.Now()
	c, err := tls.Dial("tcp", addr, cfg)
	if err == nil {
		c.Close()
		t.Fatal("handshake completed with every slot taken")
	}
	if waited := time.Since(start); waited < timeout/5 || waited > timeout/2 {
		t.Errorf("closed after %v, want after a fifth of the handshake deadline (%v)", waited, timeout/5)
	}
	<-hl.slots
	if n := counts.done.Load(); n != 1 {
		t.Errorf("handshakes done = %d, want still 1", n)
	}
	if w := counts.waiting.Load(); w != 0 {
		t.Errorf("%d connections still waiting, want 0", w)
	}
}
