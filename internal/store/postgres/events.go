package postgres

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/store"
)

// insertEvent stores one event and returns its ID.
const insertEvent = `
	INSERT INTO events (time, time_ns, device, kind, level, priority, priority_rank, package, message, payload)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id`

// AppendEvents implements store.Store: one transaction, so a batch gets
// increasing IDs and a failure stores none of it.
func (s *Store) AppendEvents(ctx context.Context, evs []api.Event) ([]api.Event, error) {
	return s.Commit(ctx, store.Write{Events: evs})
}

// Commit implements store.Store. A write of a device record alone (the
// report of a device without news) is one statement outside any explicit
// transaction; anything else is checked here and committed by the
// batcher (batch.go), in one transaction with the other writes waiting
// then. A caller whose ctx ends before the batcher takes its write gets
// ctx.Err() and the write is not applied; once taken, the write's outcome
// is its batch's, which the caller waits for.
func (s *Store) Commit(ctx context.Context, w store.Write) ([]api.Event, error) {
	c, err := store.CheckWrite(w)
	if err != nil {
		return nil, err
	}
	out, device, docs, docData := c.Events, c.Device, c.Documents, c.DocData
	others := len(out) + len(docs) + len(w.RemoveDocuments) + len(w.RemoveDevices)
	if device != nil && others == 0 {
		seen, _ := splitTime(w.Device.LastSeen)
		if _, err := s.pool.Exec(ctx, putDevice, w.Device.ID, seen, string(device)); err != nil {
			return nil, fmt.Errorf("commit: device %s: %w", w.Device.ID, err)
		}
		return out, nil
	}
	if device == nil && others == 0 {
		return out, nil
	}

	// Removals before puts: the batcher keeps the order of a row's
	// changes, and these are in the order Write states.
	r := &request{events: out}
	for _, k := range w.RemoveDocuments {
		r.changes = append(r.changes, change{tableDocuments, k, `DELETE FROM documents WHERE key = $1`, []any{k}})
	}
	for _, id := range w.RemoveDevices {
		r.changes = append(r.changes, change{tableDevices, id, `DELETE FROM devices WHERE id = $1`, []any{id}})
	}
	if device != nil {
		seen, _ := splitTime(w.Device.LastSeen)
		r.changes = append(r.changes, change{tableDevices, w.Device.ID, putDevice, []any{w.Device.ID, seen, string(device)}})
	}
	for i, d := range docs {
		name := d.ID
		if d.Kind == api.DocGroup {
			name = d.Group
		}
		r.changes = append(r.changes, change{tableDocuments, d.Key(), upsertDocument, []any{d.Key(), d.Kind, name, string(docData[i])}})
	}
	return s.commitBatched(ctx, r)
}

// insertEvents queues, after the statements already in b, the event lock
// and checked events, sends b in tx and sets the events' IDs; with the
// outbox on, each event is queued there by the same statement.
//
// Event writers take turns (a transaction advisory lock, held to commit):
// a sequence hands out IDs in order but concurrent transactions may
// commit out of it, and a reader that saw 11 before 10 was committed
// would step over 10 for good. In turns, IDs become visible in order, so
// an ID is a cursor (Events, OutboxNext). Writes without events, such as
// every report's device record, do not wait. Commit's batches take the
// same turn (batch.go).
func (s *Store) insertEvents(ctx context.Context, tx pgx.Tx, b *pgx.Batch, out []api.Event) error {
	if len(out) > 0 {
		b.Queue(`SELECT pg_advisory_xact_lock($1)`, s.eventLock)
	}
	outbox := s.outbox.Load()
	for i := range out {
		e := &out[i]
		if err := queueEvent(b, e, outbox); err != nil {
			return err
		}
		b.QueuedQueries[len(b.QueuedQueries)-1].QueryRow(func(row pgx.Row) error { return row.Scan(&e.ID) })
	}
	return tx.SendBatch(ctx, b).Close()
}

// Events implements store.Store.
func (s *Store) Events(ctx context.Context, f store.EventFilter) ([]api.Event, error) {
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	where := []string{"id > " + arg(f.After)}
	if f.Device != "" {
		where = append(where, "device = "+arg(f.Device))
	}
	if f.Kind != "" {
		where = append(where, "kind = "+arg(f.Kind))
	}
	if !f.Since.IsZero() {
		at, ns := splitTime(f.Since)
		where = append(where, fmt.Sprintf("(time, time_ns) >= (%s, %s)", arg(at), arg(ns)))
	}
	if f.MinPriority != "" {
		rank := api.PriorityRank(f.MinPriority)
		if rank == 0 {
			return nil, fmt.Errorf("list events: priority %q: want low, medium or high", f.MinPriority)
		}
		where = append(where, "priority_rank >= "+arg(rank))
	}
	limit := f.Limit
	if limit <= 0 {
		limit = store.DefaultEventLimit
	}
	const cols = `id, time, time_ns, device, kind, level, priority, package, message, payload`
	lim := arg(limit)
	q := `SELECT ` + cols + ` FROM events WHERE ` + strings.Join(where, " AND ") + ` ORDER BY id LIMIT ` + lim
	if f.Last {
		q = `SELECT * FROM (SELECT ` + cols + ` FROM events WHERE ` + strings.Join(where, " AND ") +
			` ORDER BY id DESC LIMIT ` + lim + `) AS last ORDER BY id`
	}
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	out, err := pgx.CollectRows(rows, scanEvent)
	if err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	if out == nil {
		out = []api.Event{}
	}
	return out, nil
}

func scanEvent(row pgx.CollectableRow) (api.Event, error) {
	var e api.Event
	var ns int16
	var payload []byte
	if err := row.Scan(&e.ID, &e.Time, &ns, &e.Device, &e.Kind, &e.Level, &e.Priority, &e.Package, &e.Message, &payload); err != nil {
		return e, err
	}
	e.Time = joinTime(e.Time, ns)
	if payload != nil {
		e.Payload = payload
	}
	return e, nil
}
