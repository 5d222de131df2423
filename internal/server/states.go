package server

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"

	"github.com/drover-dev/drover/internal/api"
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

// handleSetState sets one device's document: the bulk set of one.
func (s *Server) handleSetState(w http.ResponseWriter, r *http.Request, p peer) error {
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
	out, err := s.setAndAnswer(r, []api.Document{{Kind: api.DocDevice, ID: st.ID, Apps: st.Apps}}, p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out[0])
	return nil
}

// maxStatesBody bounds one bulk state set.
const maxStatesBody = 64 << 20

// handleSetStates sets device and group documents at once: all are
// checked first, then stored in one transaction with their events, so
// either every document is set or none is. The answer holds, per
// document, the device's resolved state (for a group, an empty one).
// The body is a list of documents; the older list of device desired
// states ({id, apps}) is the same JSON.
func (s *Server) handleSetStates(w http.ResponseWriter, r *http.Request, p peer) error {
	var docs []api.Document
	if err := readJSON(r, maxStatesBody, &docs); err != nil {
		return err
	}
	out, err := s.setAndAnswer(r, docs, p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) setAndAnswer(r *http.Request, docs []api.Document, p peer) ([]*api.Resolved, error) {
	ctx := r.Context()
	if err := s.setDocuments(ctx, docs, p.name); err != nil {
		return nil, err
	}
	out := make([]*api.Resolved, len(docs))
	for i, d := range docs {
		if d.Group != "" {
			out[i] = &api.Resolved{Apps: []api.ResolvedApp{}}
			continue
		}
		res, err := s.res.get(ctx, d.ID)
		if err != nil {
			return nil, err
		}
		out[i] = res.r
	}
	return out, nil
}

// maxPlanBody bounds a plan request.
const maxPlanBody = 64 << 20

func (s *Server) handlePlan(w http.ResponseWriter, r *http.Request, p peer) error {
	var docs []api.Document
	if err := readJSON(r, maxPlanBody, &docs); err != nil {
		return err
	}
	plan, err := s.planDocuments(r.Context(), docs)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, plan)
	return nil
}

// documentKey reads {kind}/{name} of a document route.
func documentKey(r *http.Request) (string, error) {
	kind, name := r.PathValue("kind"), r.PathValue("name")
	d := api.Document{Kind: kind}
	switch kind {
	case api.DocDevice:
		d.ID = name
	case api.DocGroup:
		d.Group = name
	default:
		return "", api.Errorf(api.EINVALID, fmt.Sprintf("document kind %q: want device or group", kind))
	}
	if err := normalizeDocument(&d); err != nil {
		return "", err
	}
	return d.Key(), nil
}

func (s *Server) handleDocument(w http.ResponseWriter, r *http.Request, p peer) error {
	key, err := documentKey(r)
	if err != nil {
		return err
	}
	d, err := s.store.Document(r.Context(), key)
	if errors.Is(err, store.ErrNotFound) {
		if r.PathValue("kind") == api.DocDevice {
			return api.Errorf(api.ENOTFOUND, fmt.Sprintf("device %s has no document of its own (device show lists where its apps come from)", r.PathValue("name")))
		}
		return api.Errorf(api.ENOTFOUND, fmt.Sprintf("no group %s", r.PathValue("name")))
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, d)
	return nil
}

func (s *Server) handleDocuments(w http.ResponseWriter, r *http.Request, p peer) error {
	out, err := s.summaries(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) handleRemoveDocument(w http.ResponseWriter, r *http.Request, p peer) error {
	key, err := documentKey(r)
	if err != nil {
		return err
	}
	if err := s.removeDocuments(r.Context(), []string{key}, p.name); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return api.Errorf(api.ENOTFOUND, fmt.Sprintf("no document %s", key))
		}
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func sortedUnique(in []string) []string {
	out := slices.Clone(in)
	sort.Strings(out)
	out = slices.Compact(out)
	if out == nil {
		out = []string{}
	}
	return out
}
