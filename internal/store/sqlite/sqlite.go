// Package sqlite implements store.Store on SQLite, through the pure-Go
// driver modernc.org/sqlite (no cgo), for a server that keeps everything
// in one file under --data. Everything specific to SQLite's SQL dialect
// lives here; the contract and its conformance suite are in package store
// and storetest.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/drover-dev/drover/internal/store"
)

// DB is a store.Store in one SQLite database file.
//
// SQLite allows one writer at a time, so writes go through a pool of
// exactly one connection: database/sql queues writers in the process
// instead of each spinning on SQLITE_BUSY. Reads go through a separate
// pool; in WAL mode they run beside the writer and see every committed
// write.
type DB struct {
	write  *sql.DB
	read   *sql.DB
	logger *slog.Logger

	putDevice *sql.Stmt // hot: every report of every device

	outbox atomic.Bool // AppendEvents also queues events in the outbox (outbox.go)
}

var _ store.Store = (*DB)(nil)

// readConns bounds concurrent readers; each holds its own page cache.
const readConns = 4

// busyTimeout is how long a connection waits for a lock another process
// (or a checkpoint) holds before failing with SQLITE_BUSY.
const busyTimeout = 5 * time.Second

// Open opens (creating if needed) the database at path and brings its
// schema up to date. A database migrated by a newer drover is refused.
// A nil logger discards.
func Open(ctx context.Context, path string, logger *slog.Logger) (*DB, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if path == "" {
		return nil, errors.New("open sqlite store: no path given")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	// The database is private whatever the umask: create it 0600 before
	// SQLite does (its log files take the database's mode), and close
	// one an older drover left open to all.
	if err := privateFiles(abs); err != nil {
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	// A file: URI, escaped, so no file name can smuggle in parameters.
	name := "file:" + (&url.URL{Path: abs}).EscapedPath()

	common := url.Values{}
	common.Set("_busy_timeout", fmt.Sprint(busyTimeout.Milliseconds()))
	common.Set("_foreign_keys", "1")

	w := cloneValues(common)
	// WAL: readers never block the writer nor the writer readers.
	w.Set("_journal_mode", "WAL")
	// synchronous=NORMAL: in WAL mode a commit then appends to the log
	// without an fsync; the log is synced at checkpoints. The database
	// can never be corrupted this way, and an application crash loses
	// nothing; only a power loss may roll back the last commits. That
	// buys the thousands of commits a second that 5,000 devices
	// reporting every few seconds need, and a lost report is resent
	// within seconds.
	w.Set("_synchronous", "NORMAL")
	// Take the write lock at BEGIN, so a transaction that reads and
	// then writes never fails half-way on a lock upgrade.
	w.Set("_txlock", "immediate")

	r := cloneValues(common)
	r.Set("_query_only", "1")

	db := &DB{logger: logger}
	if db.write, err = sql.Open("sqlite", name+"?"+w.Encode()); err != nil {
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	db.write.SetMaxOpenConns(1)
	db.write.SetMaxIdleConns(1)
	db.write.SetConnMaxLifetime(0)
	db.write.SetConnMaxIdleTime(0)
	// The writer connects first: it creates the file and switches it to
	// WAL, which the read-only readers could not.
	if err := db.write.PingContext(ctx); err != nil {
		db.write.Close()
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	if db.read, err = sql.Open("sqlite", name+"?"+r.Encode()); err != nil {
		db.write.Close()
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	db.read.SetMaxOpenConns(readConns)
	db.read.SetMaxIdleConns(readConns)

	if err := db.migrate(ctx, migrationFS); err != nil {
		db.Close()
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	db.putDevice, err = db.write.PrepareContext(ctx, `
		INSERT INTO devices (id, last_seen, data) VALUES (?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen, data = excluded.data`)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	return db, nil
}

// privateFiles creates the database file at path with mode 0600 if it is
// missing, and sets it and its -wal and -shm files to 0600.
func privateFiles(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if err := os.Chmod(p, 0o600); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

func cloneValues(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}
	return out
}

// Close implements store.Store.
func (db *DB) Close() error {
	var errs []error
	if db.putDevice != nil {
		errs = append(errs, db.putDevice.Close())
	}
	if db.read != nil {
		errs = append(errs, db.read.Close())
	}
	if db.write != nil {
		// Let SQLite refresh its query planner statistics, as it
		// recommends before closing a long-lived connection.
		if _, err := db.write.Exec("PRAGMA optimize"); err != nil {
			db.logger.Warn("sqlite optimize on close", "err", err)
		}
		errs = append(errs, db.write.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close sqlite store: %w", err)
	}
	return nil
}

// timeFormat is RFC 3339 with a fixed nine-digit fraction: stored in UTC,
// text order is time order, which indexes and range queries rely on.
const timeFormat = "2006-01-02T15:04:05.000000000Z07:00"

func formatTime(t time.Time) string { return t.UTC().Format(timeFormat) }

func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("stored time %q: %w", s, err)
	}
	return t, nil
}
