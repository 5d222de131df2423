package postgres

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// maxLockConns bounds the connections that hold Lock's locks: more
// sections at once wait for one.
const maxLockConns = 16

// lockPool is the pool of Lock's connections, apart from the store's
// own, so a held lock never takes a connection its section's queries
// need (which would deadlock a full pool). Made at first use.
type lockPool struct {
	once sync.Once
	pool *pgxpool.Pool
	err  error
}

func (lp *lockPool) get(ctx context.Context, s *Store) (*pgxpool.Pool, error) {
	lp.once.Do(func() {
		cfg := s.pool.Config().Copy()
		cfg.MaxConns, cfg.MinConns = maxLockConns, 0
		lp.pool, lp.err = pgxpool.NewWithConfig(context.WithoutCancel(ctx), cfg)
	})
	return lp.pool, lp.err
}

func (lp *lockPool) close() {
	lp.once.Do(func() {}) // none made after Close
	if lp.pool != nil {
		lp.pool.Close()
	}
}

// Lock implements store.Shared with a session advisory lock keyed by name
// (and the schema), held on a connection of the lock pool until unlock.
// A connection whose lock or unlock did not answer cleanly is closed, not
// given back: closing the session releases whatever it held, so no lock
// outlives its section.
func (s *Store) Lock(ctx context.Context, name string) (func(), error) {
	pool, err := s.locks.get(ctx, s)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", name, err)
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", name, err)
	}
	key := s.lockKey("lock\x00" + name)
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, key); err != nil {
		closeConn(conn.Hijack())
		return nil, fmt.Errorf("lock %s: %w", name, err)
	}
	return sync.OnceFunc(func() {
		uctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var ok bool
		if err := conn.QueryRow(uctx, `SELECT pg_advisory_unlock($1)`, key).Scan(&ok); err != nil || !ok {
			closeConn(conn.Hijack())
			return
		}
		conn.Release()
	}), nil
}
