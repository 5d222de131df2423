package store

import (
	"context"

	"github.com/drover-dev/drover/internal/api"
)

// Rollouts holds rollouts: their spec (with the pinned documents they
// apply), phase, waves and per-device outcome, so a rollout survives a
// server restart and goes on from its wave.
type Rollouts interface {
	// SaveRollout stores r together with the events that describe its
	// change, in one transaction, and returns the events as AppendEvents
	// does. With create, no rollout named r.Name may exist (ErrConflict,
	// and nothing is stored); without, one must (ErrNotFound). An empty
	// name is an error.
	SaveRollout(ctx context.Context, r api.Rollout, create bool, evs []api.Event) ([]api.Event, error)

	// Rollout returns the rollout of this name. ErrNotFound if none.
	Rollout(ctx context.Context, name string) (api.Rollout, error)

	// Rollouts returns the rollouts whose phase is one of phases (every
	// rollout when none is given), oldest first (Created, then name).
	Rollouts(ctx context.Context, phases ...string) ([]api.Rollout, error)
}
