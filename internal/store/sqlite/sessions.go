package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/drover-dev/drover/internal/store"
)

// PutSession implements store.Sessions.
func (db *DB) PutSession(ctx context.Context, s store.Session, now time.Time, max int) error {
	if err := store.CheckSession(s); err != nil {
		return err
	}
	tx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("put session: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `DELETE FROM ui_sessions WHERE expires <= ?`, formatTime(now)); err != nil {
		return fmt.Errorf("put session: prune: %w", err)
	}
	if max > 0 {
		_, err := tx.ExecContext(ctx, `DELETE FROM ui_sessions WHERE key IN (
			SELECT key FROM ui_sessions WHERE kind = ? AND key <> ? ORDER BY expires
			LIMIT max(0, (SELECT COUNT(*) FROM ui_sessions WHERE kind = ? AND key <> ?) - ?))`,
			s.Kind, s.Key, s.Kind, s.Key, max-1)
		if err != nil {
			return fmt.Errorf("put session: bound: %w", err)
		}
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO ui_sessions (key, kind, user, csrf, expires) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (key) DO UPDATE SET kind = excluded.kind, user = excluded.user, csrf = excluded.csrf, expires = excluded.expires`,
		s.Key, s.Kind, s.User, s.CSRF, formatTime(s.Expires))
	if err != nil {
		return fmt.Errorf("put session: %w", err)
	}
	return tx.Commit()
}

// TakeSession implements store.Sessions.
func (db *DB) TakeSession(ctx context.Context, key string) (store.Session, error) {
	s, err := db.scanSession(db.write.QueryRowContext(ctx, `DELETE FROM ui_sessions WHERE key = ? RETURNING key, kind, user, csrf, expires`, key))
	if err != nil {
		return store.Session{}, fmt.Errorf("take session: %w", err)
	}
	return s, nil
}

// Session implements store.Sessions.
func (db *DB) Session(ctx context.Context, key string) (store.Session, error) {
	s, err := db.scanSession(db.read.QueryRowContext(ctx, `SELECT key, kind, user, csrf, expires FROM ui_sessions WHERE key = ?`, key))
	if err != nil {
		return store.Session{}, fmt.Errorf("session: %w", err)
	}
	return s, nil
}

// DeleteSession implements store.Sessions.
func (db *DB) DeleteSession(ctx context.Context, key string) error {
	if _, err := db.write.ExecContext(ctx, `DELETE FROM ui_sessions WHERE key = ?`, key); err != nil {
		return fmt.Errorf("delete session: %w", err)
	}
	return nil
}

func (db *DB) scanSession(row *sql.Row) (store.Session, error) {
	var s store.Session
	var exp string
	err := row.Scan(&s.Key, &s.Kind, &s.User, &s.CSRF, &exp)
	if errors.Is(err, sql.ErrNoRows) {
		return s, store.ErrNotFound
	}
	if err != nil {
		return s, err
	}
	s.Expires, err = parseTime(exp)
	return s, err
}
