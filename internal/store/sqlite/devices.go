package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/store"
)

// Device implements store.Store.
func (db *DB) Device(ctx context.Context, id string) (api.Device, error) {
	var d api.Device
	if err := db.getJSON(ctx, `SELECT data FROM devices WHERE id = ?`, id, &d); err != nil {
		return api.Device{}, fmt.Errorf("device %s: %w", id, err)
	}
	return d, nil
}

// Devices implements store.Store.
func (db *DB) Devices(ctx context.Context) ([]api.Device, error) {
	rows, err := db.read.QueryContext(ctx, `SELECT data FROM devices ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	defer rows.Close()
	out := []api.Device{}
	for rows.Next() {
		var data []byte
		if err := rows.Scan(&data); err != nil {
			return nil, fmt.Errorf("list devices: %w", err)
		}
		var d api.Device
		if err := json.Unmarshal(data, &d); err != nil {
			return nil, fmt.Errorf("list devices: stored record: %w", err)
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	return out, nil
}

// upsertDocument stores one document (key, kind, name, data).
const upsertDocument = `
		INSERT INTO documents (key, kind, name, data) VALUES (?, ?, ?, ?)
		ON CONFLICT (key) DO UPDATE SET kind = excluded.kind, name = excluded.name, data = excluded.data`

// Desired implements store.Store.
func (db *DB) Desired(ctx context.Context, id string) (api.DesiredState, error) {
	d, err := db.Document(ctx, api.DocDevice+"/"+id)
	if err != nil {
		return api.DesiredState{}, fmt.Errorf("desired state %s: %w", id, err)
	}
	return api.DesiredState{ID: d.ID, Apps: d.Apps}, nil
}

// Document implements store.Store.
func (db *DB) Document(ctx context.Context, key string) (api.Document, error) {
	var d api.Document
	if err := db.getJSON(ctx, `SELECT data FROM documents WHERE key = ?`, key, &d); err != nil {
		return api.Document{}, fmt.Errorf("document %s: %w", key, err)
	}
	return d, nil
}

// Documents implements store.Store.
func (db *DB) Documents(ctx context.Context) ([]api.Document, error) {
	rows, err := db.read.QueryContext(ctx, `SELECT data FROM documents ORDER BY kind = 'group', name`)
	if err != nil {
		return nil, fmt.Errorf("list documents: %w", err)
	}
	defer rows.Close()
	out := []api.Document{}
	for rows.Next() {
		var data []byte
		if err := rows.Scan(&data); err != nil {
			return nil, fmt.Errorf("list documents: %w", err)
		}
		var d api.Document
		if err := json.Unmarshal(data, &d); err != nil {
			return nil, fmt.Errorf("list documents: stored record: %w", err)
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list documents: %w", err)
	}
	return out, nil
}

// getJSON decodes the one JSON column that query selects for id into v.
func (db *DB) getJSON(ctx context.Context, query, id string, v any) error {
	var data []byte
	err := db.read.QueryRowContext(ctx, query, id).Scan(&data)
	if errors.Is(err, sql.ErrNoRows) {
		return store.ErrNotFound
	}
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("stored record: %w", err)
	}
	return nil
}
