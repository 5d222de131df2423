package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/store"
)

// withStatus fills the fields derived from the current resolution.
func (s *Server) withStatus(ctx context.Context, d api.Device) (api.Device, error) {
	res, err := s.res.getFor(ctx, d)
	if err != nil {
		return d, err
	}
	d.Desired = res.r.Digest
	d.Converged = !res.r.Unset && d.Error == "" && d.Applied == res.r.Digest
	if res.r.Error != "" && d.Error == "" {
		d.Error = res.r.Error
	}
	return d, nil
}

func (s *Server) handleDevices(w http.ResponseWriter, r *http.Request, p peer) error {
	devs, err := s.store.Devices(r.Context())
	if err != nil {
		return err
	}
	out := make([]api.Device, 0, len(devs))
	for _, d := range devs {
		d, err = s.withStatus(r.Context(), d)
		if err != nil {
			return err
		}
		out = append(out, d)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) handleDevice(w http.ResponseWriter, r *http.Request, p peer) error {
	d, err := s.store.Device(r.Context(), r.PathValue("id"))
	if errors.Is(err, store.ErrNotFound) {
		return api.Errorf(api.ENOTFOUND, fmt.Sprintf("no device %q", r.PathValue("id")))
	}
	if err != nil {
		return err
	}
	if d, err = s.withStatus(r.Context(), d); err != nil {
		return err
	}
	res, err := s.res.get(r.Context(), d.ID)
	if err != nil {
		return err
	}
	d.Effective = res.eff.Apps
	if d.Effective == nil {
		d.Effective = []api.EffectiveApp{}
	}
	writeJSON(w, http.StatusOK, d)
	return nil
}

// handleRemoveDevice forgets a device: its record and its own document
// go, its events stay. A device that reports again comes back as new.
func (s *Server) handleRemoveDevice(w http.ResponseWriter, r *http.Request, p peer) error {
	ctx := r.Context()
	id := r.PathValue("id")
	if !api.ValidDeviceID(id) {
		return api.Errorf(api.EINVALID, fmt.Sprintf("invalid device id %q", id))
	}
	unlockDocs, err := s.lockDocuments(ctx)
	if err != nil {
		return err
	}
	defer unlockDocs()
	key := api.DocDevice + "/" + id
	if name, held := s.rolloutHolds([]string{key}); held {
		return api.Errorf(api.ECONFLICT, fmt.Sprintf("rollout %s holds %s: wait for it to end, or abort it", name, key))
	}
	unlock, err := s.lockDevice(ctx, id)
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := s.store.Device(ctx, id); errors.Is(err, store.ErrNotFound) {
		return api.Errorf(api.ENOTFOUND, fmt.Sprintf("no device %q", id))
	} else if err != nil {
		return err
	}
	w2 := store.Write{RemoveDevices: []string{id}, RemoveDocuments: []string{key},
		Events: []api.Event{{Device: id, Kind: api.KindState, Level: api.LevelInfo, Priority: api.PriorityLow,
			Message: fmt.Sprintf("device %s removed by %s", id, p.name)}}}
	if err := s.commit(ctx, w2); err != nil {
		return err
	}
	s.res.setDocuments(s.res.documents().Without([]string{key}))
	s.invalidateDevices([]string{id})
	w.WriteHeader(http.StatusNoContent)
	return nil
}
