package postgres

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/store"
)

// TrustFiles implements store.Exporter.
func (s *Store) TrustFiles(ctx context.Context) ([]store.TrustFile, error) {
	rows, err := s.pool.Query(ctx, `SELECT role, version, data FROM trust_files ORDER BY role, version`)
	if err != nil {
		return nil, fmt.Errorf("list trust files: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.TrustFile, error) {
		var f store.TrustFile
		return f, row.Scan(&f.Role, &f.Version, &f.Data)
	})
	if err != nil {
		return nil, fmt.Errorf("list trust files: %w", err)
	}
	return out, nil
}

// LastEventID implements store.Exporter: the sequence's last value, once
// it handed one out.
func (s *Store) LastEventID(ctx context.Context) (int64, error) {
	var last int64
	err := s.pool.QueryRow(ctx, `SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM events_id_seq`).Scan(&last)
	if err != nil {
		return 0, fmt.Errorf("last event id: %w", err)
	}
	return last, nil
}

// ImportEvents implements store.Importer, with COPY, in the event
// writers' turn.
func (s *Store) ImportEvents(ctx context.Context, evs []api.Event) error {
	rows := make([][]any, len(evs))
	var last int64
	for i, e := range evs {
		if err := store.CheckEvent(&e); err != nil {
			return fmt.Errorf("import events: event %d: %w", e.ID, err)
		}
		if e.ID <= last {
			return fmt.Errorf("import events: event %d after %d: want ascending IDs", e.ID, last)
		}
		last = e.ID
		at, ns := splitTime(e.Time)
		rows[i] = []any{e.ID, at, ns, e.Device, e.Kind, e.Level, e.Priority, int16(api.PriorityRank(e.Priority)),
			e.Package, e.Message, []byte(e.Payload)}
	}
	if len(evs) == 0 {
		return nil
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, s.eventLock); err != nil {
			return err
		}
		var stored int64
		if err := tx.QueryRow(ctx, `SELECT COALESCE(MAX(id), 0) FROM events`).Scan(&stored); err != nil {
			return err
		}
		if evs[0].ID <= stored {
			return fmt.Errorf("event %d is not above the stored %d", evs[0].ID, stored)
		}
		cols := []string{"id", "time", "time_ns", "device", "kind", "level", "priority", "priority_rank", "package", "message", "payload"}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"events"}, cols, pgx.CopyFromRows(rows)); err != nil {
			return err
		}
		return skipEventIDs(ctx, tx, last)
	})
	if err != nil {
		return fmt.Errorf("import events: %w", err)
	}
	return nil
}

// ImportOutbox implements store.Importer.
func (s *Store) ImportOutbox(ctx context.Context, evs []api.Event) error {
	rows := make([][]any, len(evs))
	for i, e := range evs {
		body, err := json.Marshal(e)
		if err != nil {
			return fmt.Errorf("import outbox: %w", err)
		}
		rows[i] = []any{e.ID, body}
	}
	if _, err := s.pool.CopyFrom(ctx, pgx.Identifier{"outbox"}, []string{"id", "body"}, pgx.CopyFromRows(rows)); err != nil {
		return fmt.Errorf("import outbox: %w", err)
	}
	return nil
}

// SkipEventIDs implements store.Importer.
func (s *Store) SkipEventIDs(ctx context.Context, last int64) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, s.eventLock); err != nil {
			return err
		}
		return skipEventIDs(ctx, tx, last)
	})
	if err != nil {
		return fmt.Errorf("skip event ids: %w", err)
	}
	return nil
}

// skipEventIDs moves the event sequence on to last, never back.
func skipEventIDs(ctx context.Context, tx pgx.Tx, last int64) error {
	_, err := tx.Exec(ctx, `
		SELECT setval('events_id_seq', $1)
		FROM events_id_seq WHERE $1 > CASE WHEN is_called THEN last_value ELSE 0 END`, last)
	return err
}
