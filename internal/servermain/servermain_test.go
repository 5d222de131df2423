package servermain

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/client"
	"github.com/drover-dev/drover/internal/pki"
)

// setup returns the Config of a server with its own fleet CA, and a
// function that makes a client of that CA for a server address.
func setup(t *testing.T) (Config, func(role pki.Role, name, addr string) *client.Client) {
	t.Helper()
	dir := t.TempDir()
	pkiDir := filepath.Join(dir, "pki")
	now := time.Now()
	if err := pki.Init(pkiDir, now); err != nil {
		t.Fatal(err)
	}
	sc, sk, err := pki.Issue(pkiDir, pki.IssueOptions{Role: pki.RoleServer, Name: "localhost"}, now)
	if err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(pkiDir, "ca.crt")
	cfg := Config{Data: filepath.Join(dir, "data"), Listen: "127.0.0.1:0", TLSCert: sc, TLSKey: sk, CACert: ca}
	return cfg, func(role pki.Role, name, addr string) *client.Client {
		c, k, err := pki.Issue(pkiDir, pki.IssueOptions{Role: role, Name: name}, now)
		if err != nil {
			t.Fatal(err)
		}
		tlsCfg, err := pki.ClientTLSConfig(c, k, ca)
		if err != nil {
			t.Fatal(err)
		}
		cl, err := client.New(client.Config{Addr: addr, TLS: tlsCfg})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
		return cl
	}
}

// TestMainRunClose: Run opens everything and serves on a free port, the
// data folder is private, Close stops it (twice is fine) and a second
// Main on the same data opens what the first stored.
func TestMainRunClose(t *testing.T) {
	cfg, newClient := setup(t)
	ctx := context.Background()
	m := New(cfg)
	if err := m.Run(ctx); err != nil {
		t.Fatalf("Run: %v", err)
	}
	admin := newClient(pki.RoleAdmin, "ops", m.Addr())
	if _, err := admin.Devices(ctx); err != nil {
		t.Fatalf("Devices: %v", err)
	}
	st, err := os.Stat(cfg.Data)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("data folder mode = %v, %v; want 0700", st.Mode().Perm(), err)
	}
	if err := m.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := m.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := admin.Devices(ctx); err == nil {
		t.Error("the server still answers after Close")
	}

	// ctx ends serving too; Wait says it ended cleanly.
	ctx2, cancel := context.WithCancel(ctx)
	m2 := New(cfg)
	if err := m2.Run(ctx2); err != nil {
		t.Fatalf("Run again on the same data: %v", err)
	}
	cancel()
	if err := m2.Wait(); err != nil {
		t.Errorf("Wait after ctx done = %v", err)
	}
	if err := m2.Close(); err != nil {
		t.Errorf("Close after ctx done: %v", err)
	}
}

func TestMainRefusals(t *testing.T) {
	cfg, _ := setup(t)
	for _, tt := range []struct {
		name   string
		change func(*Config)
		badDB  bool
	}{
		{"postgres", func(c *Config) { c.DB = "postgres://u:secret@h/db" }, true},
		{"unknown db", func(c *Config) { c.DB = "mysql://h" }, true},
		{"no certificate", func(c *Config) { c.TLSCert = filepath.Join(t.TempDir(), "none.crt") }, false},
		{"bad address", func(c *Config) { c.Listen = "256.0.0.1:1" }, false},
	} {
		c := cfg
		tt.change(&c)
		m := New(c)
		err := m.Run(context.Background())
		if err == nil {
			m.Close()
			t.Errorf("%s: Run succeeded", tt.name)
			continue
		}
		if errors.Is(err, ErrBadDB) != tt.badDB {
			t.Errorf("%s: Run = %v, ErrBadDB %v, want %v", tt.name, err, errors.Is(err, ErrBadDB), tt.badDB)
		}
		if tt.name == "postgres" && strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: error shows the password: %v", tt.name, err)
		}
		if err := m.Close(); err != nil {
			t.Errorf("%s: Close after a failed Run: %v", tt.name, err)
		}
	}
}
