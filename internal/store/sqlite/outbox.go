package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/store"
)

// SetOutbox implements store.Outbox.
func (db *DB) SetOutbox(enabled bool) { db.outbox.Store(enabled) }

// queueOutbox writes e's outbox row inside AppendEvents' transaction.
func queueOutbox(ctx context.Context, tx *sql.Tx, e api.Event) error {
	body, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO outbox (id, body) VALUES (?, ?)`, e.ID, body); err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	return nil
}

// OutboxNext implements store.Outbox.
func (db *DB) OutboxNext(ctx context.Context, after int64, limit int) ([]api.Event, error) {
	if limit <= 0 {
		limit = store.DefaultEventLimit
	}
	rows, err := db.read.QueryContext(ctx, `SELECT body FROM outbox WHERE id > ? ORDER BY id LIMIT ?`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	defer rows.Close()
	out := []api.Event{}
	for rows.Next() {
		var body []byte
		if err := rows.Scan(&body); err != nil {
			return nil, fmt.Errorf("read outbox: %w", err)
		}
		var e api.Event
		if err := json.Unmarshal(body, &e); err != nil {
			return nil, fmt.Errorf("read outbox: %w", err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	return out, nil
}

// OutboxDelete implements store.Outbox.
func (db *DB) OutboxDelete(ctx context.Context, upTo int64) (int64, error) {
	res, err := db.write.ExecContext(ctx, `DELETE FROM outbox WHERE id <= ?`, upTo)
	if err != nil {
		return 0, fmt.Errorf("delete from outbox: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("delete from outbox: %w", err)
	}
	return n, nil
}

// OutboxDepth implements store.Outbox.
func (db *DB) OutboxDepth(ctx context.Context) (int64, error) {
	var n int64
	if err := db.read.QueryRowContext(ctx, `SELECT COUNT(*) FROM outbox`).Scan(&n); err != nil {
		return 0, fmt.Errorf("outbox depth: %w", err)
	}
	return n, nil
}

// PruneEvents implements store.Outbox.
func (db *DB) PruneEvents(ctx context.Context, before time.Time, keep int) (int64, error) {
	tx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("prune events: %w", err)
	}
	defer tx.Rollback()
	var total int64
	if !before.IsZero() {
		res, err := tx.ExecContext(ctx, `DELETE FROM events WHERE time < ?`, formatTime(before))
		if err != nil {
			return 0, fmt.Errorf("prune events: %w", err)
		}
		n, _ := res.RowsAffected()
		total += n
	}
	if keep > 0 {
		res, err := tx.ExecContext(ctx, `
			DELETE FROM events WHERE id <= (SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET ?)`, keep)
		if err != nil {
			return 0, fmt.Errorf("prune events: %w", err)
		}
		n, _ := res.RowsAffected()
		total += n
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("prune events: %w", err)
	}
	return total, nil
}
