package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/drover-dev/drover/internal/store"
)

// PutSession implements store.Sessions.
func (s *Store) PutSession(ctx context.Context, sess store.Session, now time.Time, max int) error {
	if err := store.CheckSession(sess); err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM ui_sessions WHERE expires <= $1`, now); err != nil {
			return fmt.Errorf("put session: prune: %w", err)
		}
		if max > 0 {
			_, err := tx.Exec(ctx, `DELETE FROM ui_sessions WHERE key IN (
				SELECT key FROM ui_sessions WHERE kind = $1 AND key <> $2 ORDER BY expires
				LIMIT greatest(0, (SELECT COUNT(*) FROM ui_sessions WHERE kind = $1 AND key <> $2) - $3))`,
				sess.Kind, sess.Key, max-1)
			if err != nil {
				return fmt.Errorf("put session: bound: %w", err)
			}
		}
		_, err := tx.Exec(ctx, `INSERT INTO ui_sessions (key, kind, "user", csrf, expires) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (key) DO UPDATE SET kind = excluded.kind, "user" = excluded."user", csrf = excluded.csrf, expires = excluded.expires`,
			sess.Key, sess.Kind, sess.User, sess.CSRF, sess.Expires)
		if err != nil {
			return fmt.Errorf("put session: %w", err)
		}
		return nil
	})
}

// TakeSession implements store.Sessions.
func (s *Store) TakeSession(ctx context.Context, key string) (store.Session, error) {
	sess, err := scanSession(s.pool.QueryRow(ctx, `DELETE FROM ui_sessions WHERE key = $1 RETURNING key, kind, "user", csrf, expires`, key))
	if err != nil {
		return store.Session{}, fmt.Errorf("take session: %w", err)
	}
	return sess, nil
}

// Session implements store.Sessions.
func (s *Store) Session(ctx context.Context, key string) (store.Session, error) {
	sess, err := scanSession(s.pool.QueryRow(ctx, `SELECT key, kind, "user", csrf, expires FROM ui_sessions WHERE key = $1`, key))
	if err != nil {
		return store.Session{}, fmt.Errorf("session: %w", err)
	}
	return sess, nil
}

// DeleteSession implements store.Sessions.
func (s *Store) DeleteSession(ctx context.Context, key string) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM ui_sessions WHERE key = $1`, key); err != nil {
		return fmt.Errorf("delete session: %w", err)
	}
	return nil
}

func scanSession(row pgx.Row) (store.Session, error) {
	var sess store.Session
	err := row.Scan(&sess.Key, &sess.Kind, &sess.User, &sess.CSRF, &sess.Expires)
	if errors.Is(err, pgx.ErrNoRows) {
		return sess, store.ErrNotFound
	}
	sess.Expires = sess.Expires.UTC()
	return sess, err
}
