// Package localfleet runs a real drover server in this process, on
// loopback over mutual TLS with its own PKI and a real SQLite store, for
// the programs that measure or show drover (cmd/drover-bench,
// cmd/drover-screenshots). Tests use the real binary instead.
package localfleet

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"
	"time"

	"github.com/drover-dev/drover/internal/blob"
	"github.com/drover-dev/drover/internal/client"
	"github.com/drover-dev/drover/internal/pki"
	"github.com/drover-dev/drover/internal/server"
	"github.com/drover-dev/drover/internal/store/sqlite"
)

// Fleet is a running server with its PKI.
type Fleet struct {
	// URL is the server's address (https://127.0.0.1:PORT).
	URL string
	// Store is the server's store, for filling it directly.
	Store *sqlite.DB
	// Admin is a client with an admin certificate.
	Admin *client.Client
	// Devices are the clients Device made, by device id.
	Devices map[string]*client.Client

	dir, pki, ca string
	cleanup      []func()
}

// Start runs a server with its data under dir ("" = a temporary folder,
// removed by Close).
func Start(ctx context.Context, dir string) (*Fleet, error) {
	f := &Fleet{Devices: map[string]*client.Client{}}
	if dir == "" {
		d, err := os.MkdirTemp("", "drover-local-")
		if err != nil {
			return nil, err
		}
		f.cleanup = append(f.cleanup, func() { os.RemoveAll(d) })
		dir = d
	}
	f.dir, f.pki = dir, filepath.Join(dir, "pki")
	f.ca = filepath.Join(f.pki, "ca.crt")
	ok := false
	defer func() {
		if !ok {
			f.Close()
		}
	}()
	now := time.Now()
	if err := pki.Init(f.pki, now); err != nil {
		return nil, err
	}
	sc, sk, err := pki.Issue(f.pki, pki.IssueOptions{Role: pki.RoleServer, Name: "localhost"}, now)
	if err != nil {
		return nil, err
	}
	tlsCfg, err := pki.ServerTLSConfig(sc, sk, f.ca)
	if err != nil {
		return nil, err
	}
	if f.Store, err = sqlite.Open(ctx, filepath.Join(dir, "drover.db"), nil); err != nil {
		return nil, err
	}
	f.cleanup = append([]func(){func() { f.Store.Close() }}, f.cleanup...)
	blobs, err := blob.NewFileStore(blob.FileConfig{Dir: filepath.Join(dir, "blobs")})
	if err != nil {
		return nil, err
	}
	srv, err := server.New(ctx, server.Config{TLS: tlsCfg}, f.Store, blobs)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	sctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() { _ = srv.Serve(sctx, ln); close(done) }()
	f.cleanup = append([]func(){func() { stop(); <-done }}, f.cleanup...)
	f.URL = "https://" + ln.Addr().String()
	if f.Admin, err = f.Client(pki.RoleAdmin, "ops"); err != nil {
		return nil, err
	}
	ok = true
	return f, nil
}

// Client returns a client with a new certificate of role and name.
func (f *Fleet) Client(role pki.Role, name string) (*client.Client, error) {
	c, k, err := pki.Issue(f.pki, pki.IssueOptions{Role: role, Name: name}, time.Now())
	if err != nil {
		return nil, err
	}
	tc, err := pki.ClientTLSConfig(c, k, f.ca)
	if err != nil {
		return nil, err
	}
	cl, err := client.New(client.Config{Addr: f.URL, TLS: tc})
	if err != nil {
		return nil, err
	}
	f.cleanup = append([]func(){cl.Close}, f.cleanup...)
	return cl, nil
}

// Device returns a client with a new device certificate for id, and
// keeps it in Devices.
func (f *Fleet) Device(id string) (*client.Client, error) {
	cl, err := f.Client(pki.RoleDevice, id)
	if err == nil {
		f.Devices[id] = cl
	}
	return cl, err
}

// Browser returns an HTTPS client without a client certificate, logged in
// to the fleet page through a one-time URL, as a browser would be.
func (f *Fleet) Browser(ctx context.Context) (*http.Client, error) {
	pool, err := pki.LoadCertPool(f.ca)
	if err != nil {
		return nil, err
	}
	jar, _ := cookiejar.New(nil)
	br := &http.Client{Jar: jar, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}}
	f.cleanup = append([]func(){br.CloseIdleConnections}, f.cleanup...)
	url, err := f.LoginURL(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := br.Get(url)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("log in to the fleet page: %s", resp.Status)
	}
	return br, nil
}

// LoginURL is a one-time login URL of the fleet page.
func (f *Fleet) LoginURL(ctx context.Context) (string, error) {
	l, err := f.Admin.UILogin(ctx, 10*time.Minute)
	if err != nil {
		return "", err
	}
	return f.URL + l.Path, nil
}

// Close stops the server and removes what Start made.
func (f *Fleet) Close() {
	for _, c := range f.cleanup {
		c()
	}
	f.cleanup = nil
}
