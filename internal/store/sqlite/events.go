package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/store"
)

// AppendEvents implements store.Store: one transaction, so a batch gets
// consecutive IDs and a failure stores none of it.
func (db *DB) AppendEvents(ctx context.Context, evs []api.Event) ([]api.Event, error) {
	return db.Commit(ctx, store.Write{Events: evs})
}

// Commit implements store.Store.
func (db *DB) Commit(ctx context.Context, w store.Write) ([]api.Event, error) {
	c, err := store.CheckWrite(w)
	if err != nil {
		return nil, err
	}
	if c.Empty(w) {
		return c.Events, nil
	}
	out, device, docs, docData := c.Events, c.Device, c.Documents, c.DocData
	tx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	defer tx.Rollback()
	for _, k := range w.RemoveDocuments {
		if _, err := tx.ExecContext(ctx, `DELETE FROM documents WHERE key = ?`, k); err != nil {
			return nil, fmt.Errorf("commit: remove document %s: %w", k, err)
		}
	}
	for _, id := range w.RemoveDevices {
		if _, err := tx.ExecContext(ctx, `DELETE FROM devices WHERE id = ?`, id); err != nil {
			return nil, fmt.Errorf("commit: remove device %s: %w", id, err)
		}
	}
	if device != nil {
		if _, err := tx.StmtContext(ctx, db.putDevice).ExecContext(ctx, w.Device.ID, formatTime(w.Device.LastSeen), string(device)); err != nil {
			return nil, fmt.Errorf("commit: device %s: %w", w.Device.ID, err)
		}
	}
	for i, d := range docs {
		name := d.ID
		if d.Kind == api.DocGroup {
			name = d.Group
		}
		if _, err := tx.ExecContext(ctx, upsertDocument, d.Key(), d.Kind, name, string(docData[i])); err != nil {
			return nil, fmt.Errorf("commit: document %s: %w", d.Key(), err)
		}
	}
	if len(out) > 0 {
		if err := db.insertEvents(ctx, tx, out); err != nil {
			return nil, fmt.Errorf("commit: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	return out, nil
}

// insertEvents inserts checked events in tx, setting their IDs, and
// queues them in the outbox when it is on.
func (db *DB) insertEvents(ctx context.Context, tx *sql.Tx, out []api.Event) error {
	queue := db.outbox.Load()
	stmt, err := tx.PrepareContext(ctx, `
		INSERT INTO events (time, device, kind, level, priority, priority_rank, package, message, payload)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`)
	if err != nil {
		return err
	}
	defer stmt.Close()
	for i := range out {
		e := &out[i]
		var payload any // NULL, not an empty blob, when there is none
		if e.Payload != nil {
			payload = []byte(e.Payload)
		}
		res, err := stmt.ExecContext(ctx, formatTime(e.Time), e.Device, e.Kind, e.Level,
			e.Priority, api.PriorityRank(e.Priority), e.Package, e.Message, payload)
		if err != nil {
			return err
		}
		if e.ID, err = res.LastInsertId(); err != nil {
			return err
		}
		if queue {
			if err := queueOutbox(ctx, tx, *e); err != nil {
				return err
			}
		}
	}
	return nil
}

// Events implements store.Store.
func (db *DB) Events(ctx context.Context, f store.EventFilter) ([]api.Event, error) {
	where := []string{"id > ?"}
	args := []any{f.After}
	if f.Device != "" {
		where = append(where, "device = ?")
		args = append(args, f.Device)
	}
	if f.Kind != "" {
		where = append(where, "kind = ?")
		args = append(args, f.Kind)
	}
	if !f.Since.IsZero() {
		where = append(where, "time >= ?")
		args = append(args, formatTime(f.Since))
	}
	if f.MinPriority != "" {
		rank := api.PriorityRank(f.MinPriority)
		if rank == 0 {
			return nil, fmt.Errorf("list events: priority %q: want low, medium or high", f.MinPriority)
		}
		where = append(where, "priority_rank >= ?")
		args = append(args, rank)
	}
	limit := f.Limit
	if limit <= 0 {
		limit = store.DefaultEventLimit
	}
	args = append(args, limit)
	q := `SELECT id, time, device, kind, level, priority, package, message, payload FROM events WHERE ` +
		strings.Join(where, " AND ") + ` ORDER BY id LIMIT ?`
	if f.Last {
		q = `SELECT * FROM (SELECT id, time, device, kind, level, priority, package, message, payload FROM events WHERE ` +
			strings.Join(where, " AND ") + ` ORDER BY id DESC LIMIT ?) ORDER BY id`
	}
	rows, err := db.read.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	defer rows.Close()
	out := []api.Event{}
	for rows.Next() {
		var e api.Event
		var t string
		var payload []byte
		if err := rows.Scan(&e.ID, &t, &e.Device, &e.Kind, &e.Level, &e.Priority, &e.Package, &e.Message, &payload); err != nil {
			return nil, fmt.Errorf("list events: %w", err)
		}
		if e.Time, err = parseTime(t); err != nil {
			return nil, fmt.Errorf("list events: %w", err)
		}
		if payload != nil {
			e.Payload = payload
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	return out, nil
}
