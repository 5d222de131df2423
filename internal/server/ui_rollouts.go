package server

import (
	"context"
	"fmt"

	"github.com/drover-dev/drover/internal/api"
)

// pageRollouts, pageRollout and pageRolloutAction give the fleet page the
// rollouts; until the server drives rollouts there are none.
func (s *Server) pageRollouts(ctx context.Context) ([]api.Rollout, error) {
	return []api.Rollout{}, nil
}

func (s *Server) pageRollout(ctx context.Context, name string) (api.Rollout, error) {
	return api.Rollout{}, api.Errorf(api.ENOTFOUND, fmt.Sprintf("no rollout %q", name))
}

func (s *Server) pageRolloutAction(ctx context.Context, name, action, by string) error {
	return api.Errorf(api.ENOTFOUND, fmt.Sprintf("no rollout %q", name))
}
