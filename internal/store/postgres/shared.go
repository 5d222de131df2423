package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/drover-dev/drover/internal/store"
)

// Timings of store.Shared.
const (
	// maxPayload is PostgreSQL's bound on a NOTIFY payload (it must be
	// shorter than 8000 bytes).
	maxPayload = 8000
	// listenPing is how long the listening connection may stay quiet
	// before it is pinged: a connection that broke without a word is
	// found, and its listener resynced, within about this long.
	listenPing = 15 * time.Second
	// leadPing is how often the connection holding a leadership is
	// pinged; leadPingTimeout how long a ping (of that connection, or of
	// a quiet listening one) may take before the connection counts as
	// lost.
	leadPing        = time.Second
	leadPingTimeout = 3 * time.Second
	// minBackoff and maxBackoff bound the wait between reconnects.
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// channelName is the NOTIFY channel of a schema: "drover" in public,
// "drover.SCHEMA" elsewhere (hashed if too long for an identifier), so
// deployments in other schemas of one database never hear each other.
func channelName(schema string) string {
	c := "drover"
	if schema != "public" {
		c += "." + schema
	}
	if len(c) > 63 {
		h := fnv.New64a()
		h.Write([]byte(schema))
		c = fmt.Sprintf("drover.%016x", h.Sum64())
	}
	return c
}

// Broadcast implements store.Shared with pg_notify: delivered to every
// listener when the transaction it runs in commits (here, at once). A
// change whose keys would not fit a notification is sent without them,
// meaning every key of its kind.
func (s *Store) Broadcast(ctx context.Context, c store.Change) error {
	body, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("broadcast: %w", err)
	}
	if len(body) >= maxPayload {
		c.Keys = nil
		if body, err = json.Marshal(c); err != nil {
			return fmt.Errorf("broadcast: %w", err)
		}
	}
	if _, err := s.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, s.channel, string(body)); err != nil {
		return fmt.Errorf("broadcast %s: %w", c.Kind, err)
	}
	return nil
}

// Listen implements store.Shared on a connection of its own (the pool's
// connections come and go; a LISTEN must stay). After every connect it
// calls fn with ChangeResync, since what was sent meanwhile is lost; a
// lost connection is made again with backoff until ctx is done. It
// returns nil when ctx is done.
func (s *Store) Listen(ctx context.Context, fn func(store.Change)) error {
	delay := minBackoff
	for {
		listened, err := s.listen(ctx, fn)
		if ctx.Err() != nil {
			return nil
		}
		if listened {
			delay = minBackoff
		}
		s.logger.Warn("listen for store changes: connection lost", "err", err, "retry", delay)
		if !sleep(ctx, delay) {
			return nil
		}
		delay = min(2*delay, maxBackoff)
	}
}

// listen is one connection of Listen: it reports whether it got as far
// as listening, and why it ended.
func (s *Store) listen(ctx context.Context, fn func(store.Change)) (bool, error) {
	conn, err := s.connect(ctx)
	if err != nil {
		return false, err
	}
	defer closeConn(conn)
	if _, err := conn.Exec(ctx, `LISTEN `+pgx.Identifier{s.channel}.Sanitize()); err != nil {
		return false, err
	}
	fn(store.Change{Kind: store.ChangeResync})
	for {
		wctx, cancel := context.WithTimeout(ctx, listenPing)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return true, ctx.Err()
		case err != nil && wctx.Err() != nil:
			// Quiet for a while: is the connection still there?
			pctx, cancel := context.WithTimeout(ctx, leadPingTimeout)
			err := conn.Ping(pctx)
			cancel()
			if err != nil {
				return true, err
			}
			continue
		case err != nil:
			return true, err
		}
		var c store.Change
		if err := json.Unmarshal([]byte(n.Payload), &c); err != nil || c.Kind == "" {
			// Not ours to read: whatever it meant, drop every cache.
			s.logger.Warn("store change notification not understood", "payload", n.Payload)
			c = store.Change{Kind: store.ChangeResync}
		}
		fn(c)
	}
}

// Lead implements store.Shared with a session advisory lock, keyed by
// name (and the schema), taken on a connection of its own: PostgreSQL
// releases it when that connection ends, so a replica killed outright
// gives up its leadership as soon as the server notices the closed
// connection. The returned context, a child of ctx, is cancelled when a
// ping of the connection (about every second) fails: another replica may
// lead by then. release unlocks and closes the connection; call it
// always, also after ctx is done.
func (s *Store) Lead(ctx context.Context, name string) (context.Context, func(), error) {
	key := s.lockKey("lead\x00" + name)
	delay := minBackoff
	for {
		conn, err := s.connect(ctx)
		if err == nil {
			if _, err = conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, key); err == nil {
				lctx, release := s.hold(ctx, conn, key, name)
				return lctx, release, nil
			}
			closeConn(conn)
		}
		if ctx.Err() != nil {
			return nil, nil, fmt.Errorf("lead %s: %w", name, ctx.Err())
		}
		s.logger.Warn("wait for leadership: connection lost", "lead", name, "err", err, "retry", delay)
		if !sleep(ctx, delay) {
			return nil, nil, fmt.Errorf("lead %s: %w", name, ctx.Err())
		}
		delay = min(2*delay, maxBackoff)
	}
}

// hold watches conn, which holds the lock key, until release is called.
func (s *Store) hold(ctx context.Context, conn *pgx.Conn, key int64, name string) (context.Context, func()) {
	lctx, lost := context.WithCancel(ctx)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(leadPing)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-lctx.Done():
				return
			case <-t.C:
			}
			pctx, cancel := context.WithTimeout(lctx, leadPingTimeout)
			err := conn.Ping(pctx)
			cancel()
			if err != nil {
				if lctx.Err() == nil {
					s.logger.Warn("leadership lost", "lead", name, "err", err)
				}
				lost()
				return
			}
		}
	}()
	release := sync.OnceFunc(func() {
		close(stop)
		<-done
		rctx, cancel := context.WithTimeout(context.Background(), leadPingTimeout)
		defer cancel()
		// Closing alone would release the lock too; unlocking first
		// frees it even if the close takes a while to reach the server.
		_, _ = conn.Exec(rctx, `SELECT pg_advisory_unlock($1)`, key)
		_ = conn.Close(rctx)
		lost()
	})
	return lctx, release
}

// connect opens a connection of its own, outside the pool, with the
// pool's settings (search_path included).
func (s *Store) connect(ctx context.Context) (*pgx.Conn, error) {
	return pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig.Copy())
}

// closeConn closes a dedicated connection, bounded in time.
func closeConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), leadPingTimeout)
	defer cancel()
	_ = conn.Close(ctx)
}

// sleep waits d, or less if ctx is done first; it reports whether it
// waited all of d.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
