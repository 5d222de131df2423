package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/drover-dev/drover/internal/api"
)

// StartRollout stores a new rollout of spec and returns it as stored; the
// server drives it from then on.
func (c *Client) StartRollout(ctx context.Context, spec api.RolloutSpec) (api.Rollout, error) {
	var out api.Rollout
	err := c.doJSON(ctx, http.MethodPost, "/v1/rollouts", nil, spec, &out)
	return out, err
}

// PlanRollout is StartRollout's dry run: the plan and the waves it would
// have. Nothing is stored.
func (c *Client) PlanRollout(ctx context.Context, spec api.RolloutSpec) (api.RolloutDryRun, error) {
	var out api.RolloutDryRun
	err := c.doJSON(ctx, http.MethodPost, "/v1/rollouts", url.Values{"dry_run": {"1"}}, spec, &out)
	return out, err
}

// Rollouts lists every rollout, oldest first.
func (c *Client) Rollouts(ctx context.Context) ([]api.Rollout, error) {
	var out []api.Rollout
	err := c.doJSON(ctx, http.MethodGet, "/v1/rollouts", nil, nil, &out)
	return out, err
}

// Rollout returns one rollout.
func (c *Client) Rollout(ctx context.Context, name string) (api.Rollout, error) {
	var out api.Rollout
	err := c.doJSON(ctx, http.MethodGet, "/v1/rollouts/"+esc(name), nil, nil, &out)
	return out, err
}

// PauseRollout pauses a running rollout.
func (c *Client) PauseRollout(ctx context.Context, name string) (api.Rollout, error) {
	return c.rolloutVerb(ctx, name, "pause", nil)
}

// ResumeRollout runs a paused rollout again.
func (c *Client) ResumeRollout(ctx context.Context, name string) (api.Rollout, error) {
	return c.rolloutVerb(ctx, name, "resume", nil)
}

// AbortRollout ends a rollout where it is; with revert its devices get
// their previous state back.
func (c *Client) AbortRollout(ctx context.Context, name string, revert bool) (api.Rollout, error) {
	var q url.Values
	if revert {
		q = url.Values{"revert": {"1"}}
	}
	return c.rolloutVerb(ctx, name, "abort", q)
}

func (c *Client) rolloutVerb(ctx context.Context, name, verb string, q url.Values) (api.Rollout, error) {
	var out api.Rollout
	err := c.doJSON(ctx, http.MethodPost, "/v1/rollouts/"+esc(name)+"/"+verb, q, nil, &out)
	return out, err
}
