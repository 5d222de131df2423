package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/drover-dev/drover/internal/api"
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
