// Package postgres implements store.Store on PostgreSQL, through pgx and
// its pool, for servers that outgrow one SQLite file or run as several
// replicas on one database. It also implements store.Shared (replicas
// tell each other of changes with LISTEN/NOTIFY and choose a leader with
// an advisory lock) and store.Importer and store.Exporter for drover
// server migrate. Everything specific to PostgreSQL's SQL lives here; the
// contract and its conformance suite are in package store and storetest.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/drover-dev/drover/internal/store"
)

// Config says which database to use and how.
type Config struct {
	// URL is the database: postgres://USER[:PASSWORD]@HOST[:PORT]/DB?...
	// (any form pgx accepts). Its search_path (?search_path=S, or in
	// options) picks the schema of the store's tables; by default it is
	// the database's, usually public.
	URL string
	// Schema, if set, is where the store's tables live, made if missing;
	// it overrides the URL's search_path. Several stores can share one
	// database in several schemas (tests do).
	Schema string
	// MaxConns bounds the pool; 0 is pgxpool's default (4, or the number
	// of CPUs if more).
	MaxConns int32
	// Logger receives migrations applied and listen/lead reconnects; nil
	// discards.
	Logger *slog.Logger
}

// Store is a store.Store in one PostgreSQL schema.
type Store struct {
	pool   *pgxpool.Pool
	logger *slog.Logger
	schema string // the schema the tables live in (current_schema())

	// eventLock is the transaction advisory lock every event write
	// takes: it orders commits as IDs, so no reader with a cursor ever
	// sees ID 11 committed while 10 is still to come (events.go).
	eventLock int64
	channel   string // NOTIFY channel of this schema (shared.go)

	outbox atomic.Bool // AppendEvents also queues events in the outbox
	locks  lockPool    // connections of Lock (lock.go)
	batch  *batcher    // Commit's group commit (batch.go)
}

var (
	_ store.Store    = (*Store)(nil)
	_ store.Shared   = (*Store)(nil)
	_ store.Importer = (*Store)(nil)
	_ store.Exporter = (*Store)(nil)
)

// Open connects to the database, makes Config.Schema if it is given and
// missing, and brings the schema up to date (under an advisory lock, so
// replicas starting at once apply each migration once). A schema migrated
// by a newer drover is refused. Errors never show the URL's password.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	pcfg, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		// pgx's parse errors can quote the URL: say only that it is bad.
		return nil, errors.New("open postgres store: malformed database URL")
	}
	if cfg.Schema != "" {
		pcfg.ConnConfig.RuntimeParams["search_path"] = pgx.Identifier{cfg.Schema}.Sanitize()
	}
	if cfg.MaxConns > 0 {
		pcfg.MaxConns = cfg.MaxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("open postgres store: %w", err)
	}
	s := &Store{pool: pool, logger: logger}
	if err := s.setup(ctx, cfg.Schema); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open postgres store: %w", err)
	}
	s.startBatcher()
	return s, nil
}

func (s *Store) setup(ctx context.Context, schema string) error {
	if schema != "" {
		if _, err := s.pool.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+pgx.Identifier{schema}.Sanitize()); err != nil {
			return fmt.Errorf("create schema %s: %w", schema, err)
		}
	}
	var cur *string
	if err := s.pool.QueryRow(ctx, `SELECT current_schema()`).Scan(&cur); err != nil {
		return err
	}
	if cur == nil {
		return errors.New("no schema of the search_path exists: create it, or give one that does")
	}
	s.schema = *cur
	s.eventLock = s.lockKey("events")
	s.channel = channelName(s.schema)
	return s.migrate(ctx, migrationFS)
}

// Close implements store.Store. It first commits the writes Commit
// queued. The connections of Listen and Lead are not the pool's: their
// callers end them (ctx, release) before Close.
func (s *Store) Close() error {
	s.stopBatcher()
	s.locks.close()
	s.pool.Close()
	return nil
}

// lockKey is the advisory lock key of name in this store's schema: stores
// in other schemas of the database (other deployments, tests) never
// contend for it.
func (s *Store) lockKey(name string) int64 { return lockKey(s.schema, name) }

func lockKey(schema, name string) int64 {
	h := fnv.New64a()
	h.Write([]byte("drover\x00" + schema + "\x00" + name))
	return int64(h.Sum64())
}

// splitTime is t as timestamptz holds it (whole microseconds) and the
// nanoseconds below, which the *_ns columns keep.
func splitTime(t time.Time) (time.Time, int16) {
	ns := t.Nanosecond() % 1000
	return t.Add(-time.Duration(ns)).UTC(), int16(ns)
}

// joinTime is splitTime undone, in UTC.
func joinTime(t time.Time, ns int16) time.Time { return t.Add(time.Duration(ns)).UTC() }
