package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/resolve"
	"github.com/drover-dev/drover/internal/store"
)

func (s *Server) handleGetState(w http.ResponseWriter, r *http.Request, p peer) error {
	st, err := s.store.Desired(r.Context(), r.PathValue("id"))
	if errors.Is(err, store.ErrNotFound) {
		return api.Errorf(api.ENOTFOUND, fmt.Sprintf("no desired state for device %q", r.PathValue("id")))
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

func (s *Server) handleSetState(w http.ResponseWriter, r *http.Request, p peer) error {
	ctx := r.Context()
	id := r.PathValue("id")
	var st api.DesiredState
	if err := readJSON(r, maxStateBody, &st); err != nil {
		return err
	}
	if st.ID == "" {
		st.ID = id
	}
	if st.ID != id {
		return api.Errorf(api.EINVALID, fmt.Sprintf("state for %q sent to device %q", st.ID, id))
	}
	resolved, err := s.checkState(ctx, &st)
	if err != nil {
		return err
	}
	if err := s.commit(ctx, store.Write{Desired: []api.DesiredState{st}, Events: []api.Event{stateEvent(st, p.name)}}); err != nil {
		return err
	}
	s.res.invalidate(id)
	s.hub.notify(id)
	writeJSON(w, http.StatusOK, resolved)
	return nil
}

// maxStates bounds one bulk state set.
const (
	maxStates     = 20000
	maxStatesBody = 64 << 20
)

// handleSetStates sets the desired states of many devices at once: all
// are checked first, then stored in one transaction with their events,
// so either every device gets its state or none does.
func (s *Server) handleSetStates(w http.ResponseWriter, r *http.Request, p peer) error {
	ctx := r.Context()
	var sts []api.DesiredState
	if err := readJSON(r, maxStatesBody, &sts); err != nil {
		return err
	}
	if len(sts) == 0 || len(sts) > maxStates {
		return api.Errorf(api.EINVALID, fmt.Sprintf("want 1 to %d desired states, got %d", maxStates, len(sts)))
	}
	seen := make(map[string]bool, len(sts))
	out := make([]*api.Resolved, len(sts))
	evs := make([]api.Event, len(sts))
	for i := range sts {
		id := sts[i].ID
		if !api.ValidDeviceID(id) {
			return api.Errorf(api.EINVALID, fmt.Sprintf("state %d: invalid device id %q", i, id))
		}
		if seen[id] {
			return api.Errorf(api.EINVALID, fmt.Sprintf("device %s has two desired states", id))
		}
		seen[id] = true
		res, err := s.checkState(ctx, &sts[i])
		if err != nil {
			var e *api.Error
			if errors.As(err, &e) {
				return &api.Error{Code: e.Code, Message: id + ": " + e.Message}
			}
			return err
		}
		out[i] = res
		evs[i] = stateEvent(sts[i], p.name)
	}
	if err := s.commit(ctx, store.Write{Desired: sts, Events: evs}); err != nil {
		return err
	}
	for _, st := range sts {
		s.res.invalidate(st.ID)
		s.hub.notify(st.ID)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// checkState normalizes st and refuses what cannot be resolved for its
// device, before anything is stored. A device that has not reported yet
// gets the looser check that needs no tags.
func (s *Server) checkState(ctx context.Context, st *api.DesiredState) (*api.Resolved, error) {
	id := st.ID
	st.SystemTags = nil // the device reports its tags; the operator does not set them
	if st.Apps == nil {
		st.Apps = []api.DesiredApp{}
	}
	for i := range st.Apps {
		if st.Apps[i].Tags == nil {
			st.Apps[i].Tags = []string{}
		}
		for _, t := range st.Apps[i].Tags {
			if !api.ValidTag(t) {
				return nil, api.Errorf(api.EINVALID, fmt.Sprintf("%s: invalid tag %q", st.Apps[i].Name, t))
			}
		}
	}
	dev, err := s.store.Device(ctx, id)
	switch {
	case err == nil:
		resolved, err := resolve.Resolve(id, dev.Tags, st.Apps, s.res.candidates())
		if err != nil {
			return nil, api.Errorf(api.EINVALID, err.Error())
		}
		if err := s.res.applyParams(ctx, id, resolved); err != nil {
			return nil, paramError(err)
		}
		return resolved, nil
	case errors.Is(err, store.ErrNotFound):
		if err := resolve.Validate(st.Apps, s.res.candidates()); err != nil {
			return nil, api.Errorf(api.EINVALID, err.Error())
		}
		for _, a := range st.Apps {
			if err := s.checkParamValues(ctx, a.Name, a.Params); err != nil {
				return nil, err
			}
		}
		return &api.Resolved{Device: id, Apps: []api.ResolvedApp{}}, nil
	default:
		return nil, err
	}
}

// stateEvent is the event of a desired state set by an operator.
func stateEvent(st api.DesiredState, by string) api.Event {
	var names []string
	for _, a := range st.Apps {
		names = append(names, a.Name+" "+a.Version)
	}
	return api.Event{Device: st.ID, Kind: api.KindState, Level: api.LevelInfo, Priority: api.PriorityLow,
		Message: fmt.Sprintf("desired state of %s set by %s: %s", st.ID, by, strings.Join(names, ", "))}
}
