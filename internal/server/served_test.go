package server

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/blob"
	"github.com/drover-dev/drover/internal/client"
	"github.com/drover-dev/drover/internal/pki"
	"github.com/drover-dev/drover/internal/store"
	"github.com/drover-dev/drover/internal/store/sqlite"
)

// served is a fixture for tests that need what only Serve runs (the
// publisher, the outbox watch, terminations resumed at start): it runs
// Serve on loopback over a store that outlives one server, so a test can
// stop a server and start another over the same data, as a restart does.
type served struct {
	t      *testing.T
	pkiDir string
	ca     string
	tls    *tls.Config
	st     store.Store
	blobs  blob.Store
	log    *slog.Logger
}

func newServed(t *testing.T) *served {
	t.Helper()
	dir := t.TempDir()
	fx := &served{t: t, pkiDir: filepath.Join(dir, "pki")}
	if err := pki.Init(fx.pkiDir, time.Now()); err != nil {
		t.Fatal(err)
	}
	fx.ca = filepath.Join(fx.pkiDir, "ca.crt")
	sc, sk := fx.issue(pki.RoleServer, "localhost")
	var err error
	if fx.tls, err = pki.ServerTLSConfig(sc, sk, fx.ca); err != nil {
		t.Fatal(err)
	}
	st, err := sqlite.Open(context.Background(), filepath.Join(dir, "db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	fx.st = st
	if fx.blobs, err = blob.NewFileStore(blob.FileConfig{Dir: filepath.Join(dir, "blobs")}); err != nil {
		t.Fatal(err)
	}
	lw := &lateSafeWriter{t: t}
	t.Cleanup(lw.stop)
	fx.log = slog.New(slog.NewTextHandler(lw, nil))
	return fx
}

func (fx *served) issue(role pki.Role, name string) (cert, key string) {
	fx.t.Helper()
	c, k, err := pki.Issue(fx.pkiDir, pki.IssueOptions{Role: role, Name: name}, time.Now())
	if err != nil {
		fx.t.Fatal(err)
	}
	return c, k
}

// clientTLS is the TLS configuration of a client with a new certificate.
func (fx *served) clientTLS(role pki.Role, name string) *tls.Config {
	fx.t.Helper()
	c, k := fx.issue(role, name)
	cfg, err := pki.ClientTLSConfig(c, k, fx.ca)
	if err != nil {
		fx.t.Fatal(err)
	}
	return cfg
}

func (fx *served) client(role pki.Role, name, addr string) *client.Client {
	fx.t.Helper()
	cl, err := client.New(client.Config{Addr: addr, TLS: fx.clientTLS(role, name)})
	if err != nil {
		fx.t.Fatal(err)
	}
	fx.t.Cleanup(cl.Close)
	return cl
}

// start makes a server with cfg over the fixture's store and serves it
// on loopback (through wrap, when given) until stop or the test's end.
func (fx *served) start(cfg Config, wrap func(net.Listener) net.Listener) (srv *Server, addr string, stop func()) {
	t := fx.t
	t.Helper()
	cfg.TLS = fx.tls
	if cfg.Logger == nil {
		cfg.Logger = fx.log
	}
	srv, err := New(context.Background(), cfg, fx.st, fx.blobs)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr = "https://" + ln.Addr().String()
	if wrap != nil {
		ln = wrap(ln)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	stop = sync.OnceFunc(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, http.ErrServerClosed) {
				t.Errorf("Serve = %v after stop", err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("Serve did not return within 15s of stop")
		}
	})
	t.Cleanup(stop)
	return srv, addr, stop
}

// lateSafeWriter sends the server's log to the test's log, and drops what
// background goroutines write once the test is over (t.Log would panic).
type lateSafeWriter struct {
	mu      sync.Mutex
	t       *testing.T
	stopped bool
}

func (w *lateSafeWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.stopped {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *lateSafeWriter) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
}

// waitUntil polls cond every 20ms until it holds or the deadline passes.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
