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
	res, err := s.res.get(ctx, d.ID)
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
	writeJSON(w, http.StatusOK, d)
	return nil
}
