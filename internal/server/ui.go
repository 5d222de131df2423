package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/store"
	"github.com/drover-dev/drover/internal/ui"
)

// maxLoginTTL bounds how long a one-time login URL may stay valid.
const maxLoginTTL = 24 * time.Hour

// uiRoutes registers the admin call that issues a fleet page login URL.
// The page itself is served by s.page (internal/ui) beside the API.
func (s *Server) uiRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/ui/login", s.admin(s.handleUILogin))
}

func (s *Server) handleUILogin(w http.ResponseWriter, r *http.Request, p peer) error {
	var req api.UILoginRequest
	if err := readJSON(r, 4<<10, &req); err != nil {
		return err
	}
	ttl := time.Duration(req.TTL)
	if ttl == 0 {
		ttl = 10 * time.Minute
	}
	if ttl < time.Second || ttl > maxLoginTTL {
		return api.Errorf(api.EINVALID, fmt.Sprintf("login ttl %s: want between 1s and %s", ttl, maxLoginTTL))
	}
	token, exp, err := s.page.LoginToken(r.Context(), p.name, ttl)
	if err != nil {
		return fmt.Errorf("login token: %w", err)
	}
	writeJSON(w, http.StatusOK, api.UILogin{Path: ui.LoginPath(token), Expires: exp})
	return nil
}

// withPage sends the fleet page's paths to the page and everything else to
// the API, which needs a verified client certificate: the TLS listener
// lets a browser without one connect, for /ui/ only.
func (s *Server) withPage(apiHandler http.Handler) http.Handler {
	page := s.page.Handler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/" || r.URL.Path == "/ui" || strings.HasPrefix(r.URL.Path, "/ui/") {
			if r.URL.Path == "/ui" {
				http.Redirect(w, r, "/ui/", http.StatusMovedPermanently)
				return
			}
			page.ServeHTTP(w, r)
			return
		}
		if r.TLS != nil && len(r.TLS.VerifiedChains) == 0 {
			s.writeError(w, r, api.Errorf(api.EUNAUTHORIZED, "a client certificate of the fleet CA is required"))
			return
		}
		apiHandler.ServeHTTP(w, r)
	})
}

// pageBackend is what the fleet page reads and changes, over the server.
type pageBackend struct{ s *Server }

var _ ui.Backend = pageBackend{}

// Devices implements ui.Backend.
func (b pageBackend) Devices(ctx context.Context) ([]api.Device, error) {
	all, err := b.s.devices.all(ctx, b.s.store)
	if err != nil {
		return nil, err
	}
	devs := make([]api.Device, len(all))
	for i, d := range all {
		if devs[i], err = b.s.withStatus(ctx, d); err != nil {
			return nil, err
		}
	}
	return devs, nil
}

// Device implements ui.Backend.
func (b pageBackend) Device(ctx context.Context, id string) (api.Device, error) {
	d, err := b.s.store.Device(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return d, api.Errorf(api.ENOTFOUND, fmt.Sprintf("no device %q", id))
	}
	if err != nil {
		return d, err
	}
	return b.s.withStatus(ctx, d)
}

// Events implements ui.Backend: the newest f.Limit events.
func (b pageBackend) Events(ctx context.Context, f ui.EventFilter) ([]api.Event, error) {
	return b.s.store.Events(ctx, store.EventFilter{After: f.After, Device: f.Device, MinPriority: f.MinPriority,
		Limit: f.Limit, Last: true})
}

// Follow implements ui.Backend with the same stream as `drover events
// --follow`.
func (b pageBackend) Follow(w http.ResponseWriter, r *http.Request, f ui.EventFilter) error {
	return b.s.streamEvents(w, r, "fleet page", store.EventFilter{After: f.After, Device: f.Device,
		MinPriority: f.MinPriority}, false)
}

// Builds implements ui.Backend.
func (b pageBackend) Builds(ctx context.Context) ([]api.Build, error) {
	return b.s.store.Builds(ctx, "")
}

// Rollouts implements ui.Backend.
func (b pageBackend) Rollouts(ctx context.Context) ([]api.Rollout, error) {
	return b.s.pageRollouts(ctx)
}

// Rollout implements ui.Backend.
func (b pageBackend) Rollout(ctx context.Context, name string) (api.Rollout, error) {
	return b.s.pageRollout(ctx, name)
}

// RolloutAction implements ui.Backend.
func (b pageBackend) RolloutAction(ctx context.Context, name, action, by string) error {
	return b.s.rolloutAction(ctx, name, action, by)
}
