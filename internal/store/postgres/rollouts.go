package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/store"
)

// SaveRollout implements store.Rollouts.
func (s *Store) SaveRollout(ctx context.Context, r api.Rollout, create bool, evs []api.Event) ([]api.Event, error) {
	data, out, err := store.CheckRollout(r, evs)
	if err != nil {
		return nil, err
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("save rollout %s: %w", r.Name, err)
	}
	defer tx.Rollback(ctx)
	if create {
		created, ns := splitTime(r.Created)
		tag, err := tx.Exec(ctx, `INSERT INTO rollouts (name, phase, created, created_ns, data) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (name) DO NOTHING`, r.Name, r.Phase, created, ns, string(data))
		if err != nil {
			return nil, fmt.Errorf("save rollout %s: %w", r.Name, err)
		}
		if tag.RowsAffected() == 0 {
			return nil, fmt.Errorf("rollout %s: %w", r.Name, store.ErrConflict)
		}
	} else {
		tag, err := tx.Exec(ctx, `UPDATE rollouts SET phase = $1, data = $2 WHERE name = $3`, r.Phase, string(data), r.Name)
		if err != nil {
			return nil, fmt.Errorf("save rollout %s: %w", r.Name, err)
		}
		if tag.RowsAffected() == 0 {
			return nil, fmt.Errorf("rollout %s: %w", r.Name, store.ErrNotFound)
		}
	}
	if len(out) > 0 {
		if err := s.insertEvents(ctx, tx, &pgx.Batch{}, out); err != nil {
			return nil, fmt.Errorf("save rollout %s: %w", r.Name, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("save rollout %s: %w", r.Name, err)
	}
	return out, nil
}

// Rollout implements store.Rollouts.
func (s *Store) Rollout(ctx context.Context, name string) (api.Rollout, error) {
	var r api.Rollout
	if err := s.getJSON(ctx, `SELECT data FROM rollouts WHERE name = $1`, name, &r); err != nil {
		return api.Rollout{}, fmt.Errorf("rollout %s: %w", name, err)
	}
	return r, nil
}

// Rollouts implements store.Rollouts.
func (s *Store) Rollouts(ctx context.Context, phases ...string) ([]api.Rollout, error) {
	q := `SELECT data FROM rollouts`
	var args []any
	if len(phases) > 0 {
		q += ` WHERE phase = ANY($1)`
		args = append(args, phases)
	}
	out, err := listJSON[api.Rollout](ctx, s, q+` ORDER BY created, created_ns, name`, args...)
	if err != nil {
		return nil, fmt.Errorf("list rollouts: %w", err)
	}
	return out, nil
}
