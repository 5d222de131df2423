package sqlite

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/store"
)

// SaveRollout implements store.Rollouts.
func (db *DB) SaveRollout(ctx context.Context, r api.Rollout, create bool, evs []api.Event) ([]api.Event, error) {
	data, out, err := store.CheckRollout(r, evs)
	if err != nil {
		return nil, err
	}
	tx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("save rollout %s: %w", r.Name, err)
	}
	defer tx.Rollback()
	if create {
		res, err := tx.ExecContext(ctx, `INSERT INTO rollouts (name, phase, created, data) VALUES (?, ?, ?, ?)
			ON CONFLICT (name) DO NOTHING`, r.Name, r.Phase, formatTime(r.Created), string(data))
		if err != nil {
			return nil, fmt.Errorf("save rollout %s: %w", r.Name, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil, fmt.Errorf("rollout %s: %w", r.Name, store.ErrConflict)
		}
	} else {
		res, err := tx.ExecContext(ctx, `UPDATE rollouts SET phase = ?, data = ? WHERE name = ?`, r.Phase, string(data), r.Name)
		if err != nil {
			return nil, fmt.Errorf("save rollout %s: %w", r.Name, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil, fmt.Errorf("rollout %s: %w", r.Name, store.ErrNotFound)
		}
	}
	if len(out) > 0 {
		if err := db.insertEvents(ctx, tx, out); err != nil {
			return nil, fmt.Errorf("save rollout %s: %w", r.Name, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("save rollout %s: %w", r.Name, err)
	}
	return out, nil
}

// Rollout implements store.Rollouts.
func (db *DB) Rollout(ctx context.Context, name string) (api.Rollout, error) {
	var r api.Rollout
	if err := db.getJSON(ctx, `SELECT data FROM rollouts WHERE name = ?`, name, &r); err != nil {
		return api.Rollout{}, fmt.Errorf("rollout %s: %w", name, err)
	}
	return r, nil
}

// Rollouts implements store.Rollouts.
func (db *DB) Rollouts(ctx context.Context, phases ...string) ([]api.Rollout, error) {
	q := `SELECT data FROM rollouts`
	args := make([]any, len(phases))
	if len(phases) > 0 {
		q += ` WHERE phase IN (?` + strings.Repeat(`, ?`, len(phases)-1) + `)`
		for i, p := range phases {
			args[i] = p
		}
	}
	rows, err := db.read.QueryContext(ctx, q+` ORDER BY created, name`, args...)
	if err != nil {
		return nil, fmt.Errorf("list rollouts: %w", err)
	}
	defer rows.Close()
	out := []api.Rollout{}
	for rows.Next() {
		var data []byte
		if err := rows.Scan(&data); err != nil {
			return nil, fmt.Errorf("list rollouts: %w", err)
		}
		var r api.Rollout
		if err := json.Unmarshal(data, &r); err != nil {
			return nil, fmt.Errorf("list rollouts: stored record: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list rollouts: %w", err)
	}
	return out, nil
}
