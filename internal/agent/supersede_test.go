package agent

import (
	"context"
	"encoding/json"
	"io"
	"testing"

	"github.com/drover-dev/drover/internal/api"
)

// supersedingServer announces a newer desired state while the agent
// downloads, and has removed the build the agent fetches.
type supersedingServer struct {
	*fakeServer
	a    *Agent
	gone string
}

func (s *supersedingServer) BlobRange(ctx context.Context, digest string, offset int64, compressed bool) (io.ReadCloser, string, bool, error) {
	return oldBlobRange(ctx, s.Blob, digest, offset)
}

func (s *supersedingServer) Blob(ctx context.Context, digest string) (io.ReadCloser, int64, error) {
	if digest == s.gone {
		s.a.sup.announced("newer")
		return nil, 0, &api.Error{Code: api.ENOTFOUND, Message: "no blob " + digest}
	}
	return s.fakeServer.Blob(ctx, digest)
}

// TestSupersededStepIsNoFailure: a step that fails because the desired
// state changed under it is reported as step-failed at level info and
// priority low, marked superseded; the device is not in error and the
// state is not put on the failure backoff.
func TestSupersededStepIsNoFailure(t *testing.T) {
	srv, a := newFake(t, map[string]string{"bin/app": "#!/bin/sh\n", "share/data": "data"})
	ss := &supersedingServer{fakeServer: srv, a: a, gone: digestOf([]byte("data"))}
	a.srv = ss
	if err := a.Converge(context.Background()); err != nil {
		t.Fatalf("Converge = %v, want no error for a superseded run", err)
	}
	var got *api.Event
	for i, ev := range srv.events {
		if ev.Kind == api.KindStepFailed {
			got = &srv.events[i]
		}
	}
	if got == nil {
		t.Fatalf("no step-failed event: %+v", srv.events)
	}
	var p map[string]any
	_ = json.Unmarshal(got.Payload, &p)
	if got.Level != api.LevelInfo || got.Priority != api.PriorityLow || p["superseded"] != true {
		t.Errorf("superseded step event = %s/%s payload %v, want info/low, superseded", got.Level, got.Priority, p)
	}
	if _, lastErr := a.Status(); lastErr != "" {
		t.Errorf("device error after a superseded run: %q", lastErr)
	}
	if err := a.retryLater(srv.resolved.Digest); err != nil {
		t.Errorf("a superseded state is on the failure backoff: %v", err)
	}
	// A failure with no newer state is still an error.
	ss.gone = ""
	srv.tamper[digestOf([]byte("data"))] = []byte("evil")
	if err := a.Converge(context.Background()); err == nil {
		t.Fatal("Converge with a tampered blob: no error")
	}
	last := srv.events[len(srv.events)-1]
	for _, ev := range srv.events {
		if ev.Kind == api.KindStepFailed {
			last = ev
		}
	}
	if last.Level != api.LevelError || last.Priority != api.PriorityHigh {
		t.Errorf("real failure = %s/%s, want error/high", last.Level, last.Priority)
	}
}
