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

// upsertDesired stores one desired state (id, data).
const upsertDesired = `
		INSERT INTO desired (id, data) VALUES (?, ?)
		ON CONFLICT (id) DO UPDATE SET data = excluded.data`

// Desired implements store.Store.
func (db *DB) Desired(ctx context.Context, id string) (api.DesiredState, error) {
	var s api.DesiredState
	if err := db.getJSON(ctx, `SELECT data FROM desired WHERE id = ?`, id, &s); err != nil {
		return api.DesiredState{}, fmt.Errorf("desired state %s: %w", id, err)
	}
	return s, nil
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
