package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/drover-dev/drover/internal/api"
)

// checkParamKey refuses what no caller should send: a malformed package
// name.
func checkParamKey(pkg string) error {
	_, _, err := api.ParsePackageName(pkg)
	return err
}

// ParamValues implements store.Params.
func (s *Store) ParamValues(ctx context.Context, device, pkg string) (map[string]any, error) {
	if err := checkParamKey(pkg); err != nil {
		return nil, fmt.Errorf("param values: %w", err)
	}
	var data string
	err := s.pool.QueryRow(ctx, `SELECT data FROM param_values WHERE device = $1 AND package = $2`, device, pkg).Scan(&data)
	if errors.Is(err, pgx.ErrNoRows) {
		return map[string]any{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("param values of %s: %w", pkg, err)
	}
	out := map[string]any{}
	if err := json.Unmarshal([]byte(data), &out); err != nil {
		return nil, fmt.Errorf("param values of %s: stored record: %w", pkg, err)
	}
	return out, nil
}

// SetParamValues implements store.Params.
func (s *Store) SetParamValues(ctx context.Context, device, pkg string, values map[string]any) error {
	if err := checkParamKey(pkg); err != nil {
		return fmt.Errorf("set param values: %w", err)
	}
	if len(values) == 0 {
		if _, err := s.pool.Exec(ctx, `DELETE FROM param_values WHERE device = $1 AND package = $2`, device, pkg); err != nil {
			return fmt.Errorf("set param values of %s: %w", pkg, err)
		}
		return nil
	}
	data, err := json.Marshal(values)
	if err != nil {
		return fmt.Errorf("set param values of %s: %w", pkg, err)
	}
	_, err = s.pool.Exec(ctx, `
		INSERT INTO param_values (device, package, data) VALUES ($1, $2, $3)
		ON CONFLICT (device, package) DO UPDATE SET data = excluded.data`, device, pkg, string(data))
	if err != nil {
		return fmt.Errorf("set param values of %s: %w", pkg, err)
	}
	return nil
}

// AllParamValues implements store.Params.
func (s *Store) AllParamValues(ctx context.Context, device string) (map[string]map[string]any, error) {
	rows, err := s.pool.Query(ctx, `SELECT package, data FROM param_values WHERE device = $1`, device)
	if err != nil {
		return nil, fmt.Errorf("list param values: %w", err)
	}
	defer rows.Close()
	out := map[string]map[string]any{}
	for rows.Next() {
		var pkg, data string
		if err := rows.Scan(&pkg, &data); err != nil {
			return nil, fmt.Errorf("list param values: %w", err)
		}
		v := map[string]any{}
		if err := json.Unmarshal([]byte(data), &v); err != nil {
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
func (s *Store) ParamDevices(ctx context.Context) ([]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT DISTINCT device FROM param_values WHERE device <> '' ORDER BY device`)
	if err != nil {
		return nil, fmt.Errorf("list devices with param values: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list devices with param values: %w", err)
	}
	if out == nil {
		out = []string{}
	}
	return out, nil
}
