package pki

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"
)

// TestHandshake runs real mutual-TLS handshakes over loopback: both sides
// must present a certificate of the one CA, each for its own use.
func TestHandshake(t *testing.T) {
	now := time.Now()
	dir := filepath.Join(t.TempDir(), "pki")
	otherDir := filepath.Join(t.TempDir(), "other")
	for _, d := range []string{dir, otherDir} {
		if err := Init(d, now); err != nil {
			t.Fatal(err)
		}
	}
	type pair struct{ crt, key string }
	issue := func(d string, opt IssueOptions) pair {
		t.Helper()
		crt, key, err := Issue(d, opt, now)
		if err != nil {
			t.Fatal(err)
		}
		return pair{crt, key}
	}
	server := issue(dir, IssueOptions{Role: RoleServer, Name: "srv"})
	device := issue(dir, IssueOptions{Role: RoleDevice, Name: "dev1"})
	admin := issue(dir, IssueOptions{Role: RoleAdmin, Name: "alice"})
	foreignDevice := issue(otherDir, IssueOptions{Role: RoleDevice, Name: "dev1"})
	foreignServer := issue(otherDir, IssueOptions{Role: RoleServer, Name: "srv"})
	ca := filepath.Join(dir, "ca.crt")

	tests := []struct {
		name     string
		server   pair
		client   pair
		wantOK   bool
		wantRole Role
	}{
		{"device", server, device, true, RoleDevice},
		{"admin", server, admin, true, RoleAdmin},
		{"client of another CA", server, foreignDevice, false, ""},
		{"server of another CA", foreignServer, device, false, ""},
		// A server certificate lacks client auth, so it cannot log in.
		{"server cert as client", server, server, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			scfg, err := ServerTLSConfig(tt.server.crt, tt.server.key, ca)
			if err != nil {
				t.Fatal(err)
			}
			ccfg, err := ClientTLSConfig(tt.client.crt, tt.client.key, ca)
			if err != nil {
				t.Fatal(err)
			}
			ccfg.ServerName = "localhost"
			role, serverErr, clientErr := handshake(t, scfg, ccfg)
			if gotOK := serverErr == nil && clientErr == nil; gotOK != tt.wantOK {
				t.Fatalf("handshake ok = %v (server: %v, client: %v), want %v", gotOK, serverErr, clientErr, tt.wantOK)
			}
			if role != tt.wantRole {
				t.Errorf("role seen by the server = %q, want %q", role, tt.wantRole)
			}
		})
	}
}

// handshake connects a client to a server over loopback. The server
// answers one byte after its handshake, so that the client learns of a
// refusal even under TLS 1.3, where its own handshake ends first.
func handshake(t *testing.T, scfg, ccfg *tls.Config) (role Role, serverErr, clientErr error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		role Role
		err  error
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		tc := tls.Server(c, scfg)
		if err := tc.Handshake(); err != nil {
			done <- result{err: err}
			return
		}
		var r result
		if chains := tc.ConnectionState().VerifiedChains; len(chains) > 0 {
			r.role, r.err = RoleOf(chains[0][0])
		} else {
			r.err = errors.New("no verified chain")
		}
		_, _ = tc.Write([]byte{1})
		done <- r
	}()

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	tc := tls.Client(c, ccfg)
	clientErr = tc.Handshake()
	if clientErr == nil {
		var b [1]byte
		_, clientErr = io.ReadFull(tc, b[:])
		if clientErr == nil && tc.ConnectionState().Version != tls.VersionTLS13 {
			clientErr = errors.New("not TLS 1.3")
		}
	}
	c.Close() // unblock the server if the client gave up first
	r := <-done
	return r.role, r.err, clientErr
}
