package postgres

import (
	"context"
	"io/fs"
	"testing"
)

// Helpers for the tests of package postgres_test, which see the store
// from outside.

func (s *Store) QueryRowForTest(t *testing.T, query string, dest ...any) error {
	return s.pool.QueryRow(context.Background(), query).Scan(dest...)
}

func (s *Store) ExecForTest(t *testing.T, query string) error {
	_, err := s.pool.Exec(context.Background(), query)
	return err
}

func (s *Store) MigrateForTest(t *testing.T, fsys fs.FS) error {
	return s.migrate(context.Background(), fsys)
}

// LeadKeyForTest is the advisory lock key of Lead(name).
func (s *Store) LeadKeyForTest(name string) int64 { return s.lockKey("lead\x00" + name) }

// LockKeyForTest is the advisory lock key of Lock(name).
func (s *Store) LockKeyForTest(name string) int64 { return s.lockKey("lock\x00" + name) }
