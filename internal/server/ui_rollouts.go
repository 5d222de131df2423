package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/rollout"
	"github.com/drover-dev/drover/internal/selector"
	"github.com/drover-dev/drover/internal/store"
	"github.com/drover-dev/drover/internal/ui"
)

// pageRollouts lists rollouts for the fleet page, newest first.
func (s *Server) pageRollouts(ctx context.Context) ([]api.Rollout, error) {
	list, err := s.store.Rollouts(ctx)
	if err != nil {
		return nil, err
	}
	for i := range list {
		if cur, ok := s.rolloutOf(list[i].Name); ok {
			list[i] = cur // the driver's copy is the freshest
		}
	}
	slices.SortStableFunc(list, func(a, b api.Rollout) int { return b.Created.Compare(a.Created) })
	return list, nil
}

// pageRollout returns one rollout for the fleet page.
func (s *Server) pageRollout(ctx context.Context, name string) (api.Rollout, error) {
	if cur, ok := s.rolloutOf(name); ok {
		return cur, nil
	}
	ro, err := s.store.Rollout(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return ro, api.Errorf(api.ENOTFOUND, fmt.Sprintf("no rollout %q", name))
	}
	return ro, err
}

// pageRolloutAction pauses, resumes or aborts a rollout from the fleet
// page's buttons, as `drover rollout pause|resume|abort` do.
func (s *Server) pageRolloutAction(ctx context.Context, name, action, by string) error {
	now := s.now()
	op := map[string]func(*api.Rollout) (rollout.Result, error){
		"pause":        func(r *api.Rollout) (rollout.Result, error) { return rollout.Pause(r, now, by) },
		"resume":       func(r *api.Rollout) (rollout.Result, error) { return rollout.Resume(r, now, by) },
		"abort":        func(r *api.Rollout) (rollout.Result, error) { return rollout.Abort(r, now, by, false) },
		"abort-revert": func(r *api.Rollout) (rollout.Result, error) { return rollout.Abort(r, now, by, true) },
	}[action]
	if op == nil {
		return api.Errorf(api.EINVALID, fmt.Sprintf("no rollout action %q", action))
	}
	err := s.changeRollout(ctx, name, func(r *api.Rollout) (rollout.Result, error) {
		res, err := op(r)
		if err != nil {
			return res, api.Errorf(api.ECONFLICT, err.Error())
		}
		return res, nil
	})
	if err == nil {
		s.wakeRollouts()
	}
	return err
}

// pageMatch filters the devices page: a query with selector syntax (`=`,
// `!` or a parenthesis) is a label selector, anything else plain text.
func pageMatch(q string) (func(api.Device) bool, error) {
	if !strings.ContainsAny(q, "=!(") {
		return ui.TextMatch(q)
	}
	sel, err := selector.Parse(q)
	if err != nil {
		return nil, err
	}
	return func(d api.Device) bool { return sel.Matches(d.Labels) }, nil
}
