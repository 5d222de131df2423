package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/drover-dev/drover/internal/store"
)

// PutTrustFiles implements store.Trust.
func (db *DB) PutTrustFiles(ctx context.Context, files []store.TrustFile) error {
	if err := store.CheckTrustFiles(files); err != nil {
		return err
	}
	tx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("put trust files: %w", err)
	}
	defer tx.Rollback()
	for _, f := range files {
		var cur int64
		var data []byte
		err := tx.QueryRowContext(ctx, `SELECT version, data FROM trust_files WHERE role = ? ORDER BY version DESC LIMIT 1`, f.Role).Scan(&cur, &data)
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return fmt.Errorf("put trust files: %w", err)
		case cur == f.Version && bytes.Equal(data, f.Data):
			continue
		case f.Version <= cur:
			return fmt.Errorf("put trust file %s version %d: newest is %d: %w", f.Role, f.Version, cur, store.ErrConflict)
		}
		if f.Role != "root" {
			if _, err := tx.ExecContext(ctx, `DELETE FROM trust_files WHERE role = ?`, f.Role); err != nil {
				return fmt.Errorf("put trust files: %w", err)
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO trust_files (role, version, data) VALUES (?, ?, ?)`, f.Role, f.Version, f.Data); err != nil {
			return fmt.Errorf("put trust files: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("put trust files: %w", err)
	}
	return nil
}

// TrustFile implements store.Trust.
func (db *DB) TrustFile(ctx context.Context, role string, version int64) (store.TrustFile, error) {
	f := store.TrustFile{Role: role}
	var err error
	if version == 0 {
		err = db.read.QueryRowContext(ctx, `SELECT version, data FROM trust_files WHERE role = ? ORDER BY version DESC LIMIT 1`, role).Scan(&f.Version, &f.Data)
	} else {
		f.Version = version
		err = db.read.QueryRowContext(ctx, `SELECT data FROM trust_files WHERE role = ? AND version = ?`, role, version).Scan(&f.Data)
	}
	if errors.Is(err, sql.ErrNoRows) {
		return store.TrustFile{}, fmt.Errorf("trust file %s version %d: %w", role, version, store.ErrNotFound)
	}
	if err != nil {
		return store.TrustFile{}, fmt.Errorf("trust file %s: %w", role, err)
	}
	return f, nil
}
