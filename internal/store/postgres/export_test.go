package postgres

import (
	"context"
	"io/fs"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Helpers for the tests of package postgres_test, which see the store
// from outside.

// PoolForTest is the store's pool, for checks in SQL.
func (s *Store) PoolForTest() *pgxpool.Pool { return s.pool }

// MigrateForTest applies the migrations of fsys.
func (s *Store) MigrateForTest(fsys fs.FS) error { return s.migrate(context.Background(), fsys) }

// LeadKeyForTest is the advisory lock key of Lead(name).
func (s *Store) LeadKeyForTest(name string) int64 { return s.lockKey("lead\x00" + name) }

// LockKeyForTest is the advisory lock key of Lock(name).
func (s *Store) LockKeyForTest(name string) int64 { return s.lockKey("lock\x00" + name) }

// ChannelForTest is the store's NOTIFY channel.
func (s *Store) ChannelForTest() string { return s.channel }

// EventLockKeyForTest is the key of the event writers' lock.
func (s *Store) EventLockKeyForTest() int64 { return s.eventLock }

// QueuedForTest is how many writes wait for the batcher (abandoned ones
// included until it passes them).
func (s *Store) QueuedForTest() int {
	s.batch.mu.Lock()
	defer s.batch.mu.Unlock()
	return len(s.batch.queue)
}
