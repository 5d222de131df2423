package servermain

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/client"
	"github.com/drover-dev/drover/internal/pki"
	"github.com/drover-dev/drover/internal/store"
	"github.com/drover-dev/drover/internal/store/postgres/pgtest"
	"github.com/drover-dev/drover/internal/store/sqlite"
	"github.com/drover-dev/drover/internal/store/storecopy"
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
		{"postgres unreachable", func(c *Config) { c.DB = "postgres://u:secret@127.0.0.1:1/db?connect_timeout=5" }, false},
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
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: error shows the password: %v", tt.name, err)
		}
		if err := m.Close(); err != nil {
			t.Errorf("%s: Close after a failed Run: %v", tt.name, err)
		}
	}
}

// A server on PostgreSQL keeps nothing of the store in its data folder,
// and its blobs where --blobs says.
func TestMainOnPostgres(t *testing.T) {
	cfg, newClient := setup(t)
	cfg.DB = pgtest.URL(t)
	cfg.Blobs = filepath.Join(t.TempDir(), "shared-blobs")
	ctx := context.Background()
	m := New(cfg)
	if err := m.Run(ctx); err != nil {
		t.Fatalf("Run on PostgreSQL: %v", err)
	}
	defer m.Close()
	admin := newClient(pki.RoleAdmin, "ops", m.Addr())
	if _, err := admin.Devices(ctx); err != nil {
		t.Fatalf("Devices: %v", err)
	}
	if _, err := os.Stat(filepath.Join(cfg.Data, "drover.db")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("drover.db in the data folder of a server on PostgreSQL: %v", err)
	}
	if _, err := os.Stat(filepath.Join(cfg.Blobs, "sha256")); err != nil {
		t.Errorf("blob folder --blobs not used: %v", err)
	}
	if _, err := os.Stat(filepath.Join(cfg.Data, "blobs")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("blobs in the data folder despite --blobs: %v", err)
	}
}

func TestMigrate(t *testing.T) {
	ctx := context.Background()
	data := t.TempDir()
	src, err := sqlite.Open(ctx, filepath.Join(data, "drover.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	d := api.Device{ID: "dev-1", LastSeen: time.Now()}
	if _, err := src.Commit(ctx, store.Write{Device: &d, Events: []api.Event{{Time: d.LastSeen, Kind: api.KindLog}}}); err != nil {
		t.Fatal(err)
	}
	src.Close()

	for _, tt := range []struct {
		name  string
		cfg   MigrateConfig
		badDB bool
		want  string
	}{
		{"not postgres", MigrateConfig{From: data, To: "sqlite:/tmp/x.db"}, true, "want postgres://"},
		{"no database in --from", MigrateConfig{From: t.TempDir(), To: "postgres://u:secret@127.0.0.1:1/db"}, false, "no drover.db"},
		{"unreachable", MigrateConfig{From: data, To: "postgres://u:secret@127.0.0.1:1/db?connect_timeout=5"}, false, "--to postgres://***@127.0.0.1:1/db"},
	} {
		_, err := Migrate(ctx, tt.cfg)
		if err == nil || errors.Is(err, ErrBadDB) != tt.badDB || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: Migrate = %v, want an error with %q (ErrBadDB %v) and no password", tt.name, err, tt.want, tt.badDB)
		}
	}

	url := pgtest.URL(t)
	r, err := Migrate(ctx, MigrateConfig{From: data, To: url})
	if err != nil || len(r.Mismatches()) != 0 || r.Target.N[storecopy.KindDevices] != 1 || r.Target.N[storecopy.KindEvents] != 1 {
		t.Fatalf("Migrate = %+v, %v, want one device and one event copied", r, err)
	}
	if _, err := Migrate(ctx, MigrateConfig{From: data, To: url}); !errors.Is(err, storecopy.ErrNotEmpty) {
		t.Errorf("Migrate again = %v, want ErrNotEmpty", err)
	}
}
