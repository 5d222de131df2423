package postgres_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"path/filepath"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/store"
	"github.com/drover-dev/drover/internal/store/postgres"
	"github.com/drover-dev/drover/internal/store/postgres/pgtest"
	"github.com/drover-dev/drover/internal/store/storetest"
)

func TestConformance(t *testing.T) {
	pgtest.Require(t)
	storetest.Run(t, func(t *testing.T) store.Store { return pgtest.Open(t) })
}

func open(t *testing.T, cfg postgres.Config) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Open = %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// Replicas starting at once on a new schema migrate it once: the others
// wait for the lock and find the work done.
func TestOpenConcurrent(t *testing.T) {
	cfg := pgtest.Config(t)
	const n = 4
	errs := make([]error, n)
	stores := make([]*postgres.Store, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stores[i], errs[i] = postgres.Open(context.Background(), cfg)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Open %d = %v", i, err)
			continue
		}
		stores[i].Close()
	}
	s := open(t, cfg)
	files, err := filepath.Glob("migrations/*.sql")
	if err != nil || len(files) == 0 {
		t.Fatalf("migrations/*.sql = %v, %v", files, err)
	}
	var count int
	if err := s.PoolForTest().QueryRow(context.Background(), `SELECT COUNT(*) FROM schema_migrations`).Scan(&count); err != nil || count != len(files) {
		t.Errorf("schema_migrations has %d rows, %v, want %d (one a migration)", count, err, len(files))
	}
}

// Data written through one store is there when the schema is opened again.
func TestReopenKeepsData(t *testing.T) {
	ctx := context.Background()
	cfg := pgtest.Config(t)
	s, err := postgres.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := s.AppendEvents(ctx, []api.Event{{Kind: api.KindLog}})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, cfg)
	more, err := s.AppendEvents(ctx, []api.Event{{Kind: api.KindLog}})
	if err != nil || more[0].ID <= evs[0].ID {
		t.Errorf("AppendEvents after reopen = %v, %v, want an ID above %d", more, err, evs[0].ID)
	}
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	cfg := pgtest.Config(t)
	s := open(t, cfg)
	if err := exec(s, `INSERT INTO schema_migrations (version, name) VALUES (9999, 'from_the_future')`); err != nil {
		t.Fatal(err)
	}
	if s2, err := postgres.Open(context.Background(), cfg); err == nil {
		s2.Close()
		t.Fatal("Open(newer schema) = nil error, want an error")
	}
}

// A migration that fails half-way leaves neither its changes nor its
// record.
func TestMigrationAtomic(t *testing.T) {
	s := pgtest.Open(t)
	broken := fstest.MapFS{
		"migrations/0001_init.sql": {Data: []byte("CREATE TABLE a (x integer);")},
		"migrations/0099_half.sql": {Data: []byte("CREATE TABLE b (x integer); CREATE TABLE oops (;")},
	}
	if err := s.MigrateForTest(broken); err == nil {
		t.Fatal("migrate(broken 0099) = nil, want an error")
	}
	var n int
	if err := s.PoolForTest().QueryRow(context.Background(), `SELECT COUNT(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename = 'b'`).Scan(&n); err != nil || n != 0 {
		t.Errorf("table b exists (%d, %v) after its migration failed, want not", n, err)
	}
	if err := s.PoolForTest().QueryRow(context.Background(), `SELECT COUNT(*) FROM schema_migrations WHERE version = 99`).Scan(&n); err != nil || n != 0 {
		t.Errorf("failed migration recorded (%d, %v), want not", n, err)
	}
}

// Config.Schema puts the tables in that schema, made if missing.
func TestSchema(t *testing.T) {
	ctx := context.Background()
	cfg := pgtest.Config(t)
	var b [6]byte
	_, _ = rand.Read(b[:])
	cfg.Schema = "drover_schema_" + hex.EncodeToString(b[:])
	s := open(t, cfg)
	t.Cleanup(func() { _ = exec(s, `DROP SCHEMA `+cfg.Schema+` CASCADE`) })
	if _, err := s.AppendEvents(ctx, []api.Event{{Kind: api.KindLog}}); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := s.PoolForTest().QueryRow(context.Background(), `SELECT COUNT(*) FROM pg_tables WHERE schemaname = $1 AND tablename = 'events'`, cfg.Schema).Scan(&n); err != nil || n != 1 {
		t.Errorf("events tables in schema %s = %d, %v, want 1", cfg.Schema, n, err)
	}
}

func exec(s *postgres.Store, query string, args ...any) error {
	_, err := s.PoolForTest().Exec(context.Background(), query, args...)
	return err
}
