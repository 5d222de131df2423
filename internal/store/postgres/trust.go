package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/drover-dev/drover/internal/store"
)

// PutTrustFiles implements store.Trust. Writers take turns (a lock on
// the table, which readers pass): the newest version read is still the
// newest when the new one is written, so two publishers of one version
// cannot both win.
func (s *Store) PutTrustFiles(ctx context.Context, files []store.TrustFile) error {
	if err := store.CheckTrustFiles(files); err != nil {
		return err
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("put trust files: %w", err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `LOCK TABLE trust_files IN EXCLUSIVE MODE`); err != nil {
		return fmt.Errorf("put trust files: %w", err)
	}
	for _, f := range files {
		var cur int64
		var data []byte
		err := tx.QueryRow(ctx, `SELECT version, data FROM trust_files WHERE role = $1 ORDER BY version DESC LIMIT 1`, f.Role).Scan(&cur, &data)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			return fmt.Errorf("put trust files: %w", err)
		case cur == f.Version && bytes.Equal(data, f.Data):
			continue
		case f.Version <= cur:
			return fmt.Errorf("put trust file %s version %d: newest is %d: %w", f.Role, f.Version, cur, store.ErrConflict)
		}
		if f.Role != "root" {
			if _, err := tx.Exec(ctx, `DELETE FROM trust_files WHERE role = $1`, f.Role); err != nil {
				return fmt.Errorf("put trust files: %w", err)
			}
		}
		if _, err := tx.Exec(ctx, `INSERT INTO trust_files (role, version, data) VALUES ($1, $2, $3)`, f.Role, f.Version, f.Data); err != nil {
			return fmt.Errorf("put trust files: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("put trust files: %w", err)
	}
	return nil
}

// TrustFile implements store.Trust.
func (s *Store) TrustFile(ctx context.Context, role string, version int64) (store.TrustFile, error) {
	f := store.TrustFile{Role: role}
	var err error
	if version == 0 {
		err = s.pool.QueryRow(ctx, `SELECT version, data FROM trust_files WHERE role = $1 ORDER BY version DESC LIMIT 1`, role).Scan(&f.Version, &f.Data)
	} else {
		f.Version = version
		err = s.pool.QueryRow(ctx, `SELECT data FROM trust_files WHERE role = $1 AND version = $2`, role, version).Scan(&f.Data)
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return store.TrustFile{}, fmt.Errorf("trust file %s version %d: %w", role, version, store.ErrNotFound)
	}
	if err != nil {
		return store.TrustFile{}, fmt.Errorf("trust file %s: %w", role, err)
	}
	return f, nil
}
