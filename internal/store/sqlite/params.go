package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/drover-dev/drover/internal/api"
)

// checkParamKey refuses what no caller should send: a malformed package
// name.
func checkParamKey(pkg string) error {
	if _, _, err := api.ParsePackageName(pkg); err != nil {
		return err
	}
	return nil
}

// ParamValues implements store.Params.
func (db *DB) ParamValues(ctx context.Context, device, pkg string) (map[string]any, error) {
	if err := checkParamKey(pkg); err != nil {
		return nil, fmt.Errorf("param values: %w", err)
	}
	var data []byte
	err := db.read.QueryRowContext(ctx, `SELECT data FROM param_values WHERE device = ? AND package = ?`, device, pkg).Scan(&data)
	if errors.Is(err, sql.ErrNoRows) {
		return map[string]any{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("param values of %s: %w", pkg, err)
	}
	out := map[string]any{}
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("param values of %s: stored record: %w", pkg, err)
	}
	return out, nil
}

// SetParamValues implements store.Params.
func (db *DB) SetParamValues(ctx context.Context, device, pkg string, values map[string]any) error {
	if err := checkParamKey(pkg); err != nil {
		return fmt.Errorf("set param values: %w", err)
	}
	if len(values) == 0 {
		if _, err := db.write.ExecContext(ctx, `DELETE FROM param_values WHERE device = ? AND package = ?`, device, pkg); err != nil {
			return fmt.Errorf("set param values of %s: %w", pkg, err)
		}
		return nil
	}
	data, err := json.Marshal(values)
	if err != nil {
		return fmt.Errorf("set param values of %s: %w", pkg, err)
	}
	_, err = db.write.ExecContext(ctx, `
		INSERT INTO param_values (device, package, data) VALUES (?, ?, ?)
		ON CONFLICT (device, package) DO UPDATE SET data = excluded.data`, device, pkg, string(data))
	if err != nil {
		return fmt.Errorf("set param values of %s: %w", pkg, err)
	}
	return nil
}

// AllParamValues implements store.Params.
func (db *DB) AllParamValues(ctx context.Context, device string) (map[string]map[string]any, error) {
	rows, err := db.read.QueryContext(ctx, `SELECT package, data FROM param_values WHERE device = ? ORDER BY package`, device)
	if err != nil {
		return nil, fmt.Errorf("list param values: %w", err)
	}
	defer rows.Close()
	out := map[string]map[string]any{}
	for rows.Next() {
		var pkg string
		var data []byte
		if err := rows.Scan(&pkg, &data); err != nil {
			return nil, fmt.Errorf("list param values: %w", err)
		}
		v := map[string]any{}
		if err := json.Unmarshal(data, &v); err != nil {
			return nil, fmt.Errorf("list param values of %s: stored record: %w", pkg, err)
		}
		out[pkg] = v
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list param values: %w", err)
	}
	return out, nil
}

// ParamDevices implements store.Params.
func (db *DB) ParamDevices(ctx context.Context) ([]string, error) {
	rows, err := db.read.QueryContext(ctx, `SELECT DISTINCT device FROM param_values WHERE device != '' ORDER BY device`)
	if err != nil {
		return nil, fmt.Errorf("list devices with param values: %w", err)
	}
	defer rows.Close()
	out := []string{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("list devices with param values: %w", err)
		}
		out = append(out, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list devices with param values: %w", err)
	}
	return out, nil
}
