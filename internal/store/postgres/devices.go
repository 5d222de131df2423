package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/store"
)

// putDevice replaces one device record: the write of every report of
// every device, one statement (pgx prepares it once per connection).
const putDevice = `
	INSERT INTO devices (id, last_seen, data) VALUES ($1, $2, $3)
	ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen, data = excluded.data`

// upsertDocument stores one document (key, kind, name, data).
const upsertDocument = `
	INSERT INTO documents (key, kind, name, data) VALUES ($1, $2, $3, $4)
	ON CONFLICT (key) DO UPDATE SET kind = excluded.kind, name = excluded.name, data = excluded.data`

// Device implements store.Store.
func (s *Store) Device(ctx context.Context, id string) (api.Device, error) {
	var d api.Device
	if err := s.getJSON(ctx, `SELECT data FROM devices WHERE id = $1`, id, &d); err != nil {
		return api.Device{}, fmt.Errorf("device %s: %w", id, err)
	}
	return d, nil
}

// Devices implements store.Store.
func (s *Store) Devices(ctx context.Context) ([]api.Device, error) {
	out, err := listJSON[api.Device](ctx, s, `SELECT data FROM devices ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	return out, nil
}

// Desired implements store.Store.
func (s *Store) Desired(ctx context.Context, id string) (api.DesiredState, error) {
	d, err := s.Document(ctx, api.DocDevice+"/"+id)
	if err != nil {
		return api.DesiredState{}, fmt.Errorf("desired state %s: %w", id, err)
	}
	return api.DesiredState{ID: d.ID, Apps: d.Apps}, nil
}

// Document implements store.Store.
func (s *Store) Document(ctx context.Context, key string) (api.Document, error) {
	var d api.Document
	if err := s.getJSON(ctx, `SELECT data FROM documents WHERE key = $1`, key, &d); err != nil {
		return api.Document{}, fmt.Errorf("document %s: %w", key, err)
	}
	return d, nil
}

// Documents implements store.Store.
func (s *Store) Documents(ctx context.Context) ([]api.Document, error) {
	out, err := listJSON[api.Document](ctx, s, `SELECT data FROM documents ORDER BY kind = 'group', name`)
	if err != nil {
		return nil, fmt.Errorf("list documents: %w", err)
	}
	return out, nil
}

// getJSON decodes the one JSON column that query selects for id into v.
func (s *Store) getJSON(ctx context.Context, query, id string, v any) error {
	var data string
	err := s.pool.QueryRow(ctx, query, id).Scan(&data)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.ErrNotFound
	}
	if err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(data), v); err != nil {
		return fmt.Errorf("stored record: %w", err)
	}
	return nil
}

// listJSON decodes the one JSON column of every row query selects; none
// is an empty, non-nil list.
func listJSON[T any](ctx context.Context, s *Store, query string, args ...any) ([]T, error) {
	rows, err := s.pool.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (T, error) {
		var v T
		var data string
		if err := row.Scan(&data); err != nil {
			return v, err
		}
		if err := json.Unmarshal([]byte(data), &v); err != nil {
			return v, fmt.Errorf("stored record: %w", err)
		}
		return v, nil
	})
	if err != nil {
		return nil, err
	}
	if out == nil {
		out = []T{}
	}
	return out, nil
}
