// Package pgtest gives tests a PostgreSQL store of their own: a new schema
// in the database that DROVER_TEST_POSTGRES names, dropped when the test
// ends. A test that asks for one is skipped, naming the variable, when it
// is unset. Only tests import this package.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/drover-dev/drover/internal/store/postgres"
)

// Env is the variable with the test database's URL, such as
// postgres://postgres@127.0.0.1:5432/test?sslmode=disable.
const Env = "DROVER_TEST_POSTGRES"

// Require skips the test, naming the variable, unless Env is set; it
// returns the variable's value.
func Require(t testing.TB) string {
	t.Helper()
	v := os.Getenv(Env)
	if v == "" {
		t.Skipf("%s is unset: no PostgreSQL to test on", Env)
	}
	return v
}

// URL makes a new, empty schema and returns the test database's URL with
// search_path set to it, for what takes a URL (--db, --to). The schema is
// dropped at the test's cleanup, after the stores opened later in the
// test were closed (cleanups run last registered first). Every store
// opened with the URL shares the schema, as replicas of one server do.
func URL(t testing.TB) string {
	t.Helper()
	base := Require(t)
	var b [8]byte
	_, _ = rand.Read(b[:])
	schema := "drover_test_" + hex.EncodeToString(b[:])
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("connect to %s: %v", Env, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `CREATE SCHEMA `+schema); err != nil {
		t.Fatalf("create schema %s: %v", schema, err)
	}
	t.Cleanup(func() {
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Errorf("connect to drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, `DROP SCHEMA `+schema+` CASCADE`); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	return withSearchPath(base, schema)
}

// withSearchPath adds search_path to a URL or a keyword/value string.
func withSearchPath(base, schema string) string {
	if u, err := url.Parse(base); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		q := u.Query()
		q.Set("search_path", schema)
		u.RawQuery = q.Encode()
		return u.String()
	}
	return strings.TrimSpace(base) + " search_path=" + schema
}

// Config is URL as a postgres.Config with a small pool: the test server
// is shared by every package's tests.
func Config(t testing.TB) postgres.Config {
	t.Helper()
	return postgres.Config{URL: URL(t), MaxConns: 4}
}

// Open opens a store on a new schema, closed at the test's cleanup.
func Open(t testing.TB) *postgres.Store {
	t.Helper()
	cfg := Config(t)
	s, err := postgres.Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("open postgres store: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
