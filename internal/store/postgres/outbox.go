package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/store"
)

// SetOutbox implements store.Outbox.
func (s *Store) SetOutbox(enabled bool) { s.outbox.Store(enabled) }

// OutboxNext implements store.Outbox.
func (s *Store) OutboxNext(ctx context.Context, after int64, limit int) ([]api.Event, error) {
	if limit <= 0 {
		limit = store.DefaultEventLimit
	}
	rows, err := s.pool.Query(ctx, `SELECT body FROM outbox WHERE id > $1 ORDER BY id LIMIT $2`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (api.Event, error) {
		var body []byte
		var e api.Event
		if err := row.Scan(&body); err != nil {
			return e, err
		}
		return e, json.Unmarshal(body, &e)
	})
	if err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	if out == nil {
		out = []api.Event{}
	}
	return out, nil
}

// OutboxDelete implements store.Outbox.
func (s *Store) OutboxDelete(ctx context.Context, upTo int64) (int64, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM outbox WHERE id <= $1`, upTo)
	if err != nil {
		return 0, fmt.Errorf("delete from outbox: %w", err)
	}
	return tag.RowsAffected(), nil
}

// OutboxDepth implements store.Outbox.
func (s *Store) OutboxDepth(ctx context.Context) (int64, error) {
	var n int64
	if err := s.pool.QueryRow(ctx, `SELECT COUNT(*) FROM outbox`).Scan(&n); err != nil {
		return 0, fmt.Errorf("outbox depth: %w", err)
	}
	return n, nil
}

// PruneEvents implements store.Outbox.
func (s *Store) PruneEvents(ctx context.Context, before time.Time, keep int) (int64, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("prune events: %w", err)
	}
	defer tx.Rollback(ctx)
	var total int64
	if !before.IsZero() {
		at, ns := splitTime(before)
		tag, err := tx.Exec(ctx, `DELETE FROM events WHERE (time, time_ns) < ($1, $2)`, at, ns)
		if err != nil {
			return 0, fmt.Errorf("prune events: %w", err)
		}
		total += tag.RowsAffected()
	}
	if keep > 0 {
		tag, err := tx.Exec(ctx, `
			DELETE FROM events WHERE id <= (SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET $1)`, keep)
		if err != nil {
			return 0, fmt.Errorf("prune events: %w", err)
		}
		total += tag.RowsAffected()
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("prune events: %w", err)
	}
	return total, nil
}
