package agent

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/drover-dev/drover/internal/api"
)

// heldServer is a fakeServer whose first report waits in the server
// until hold is closed, and which stores reports as the server does: the
// last one to finish is the device's record.
type heldServer struct {
	*fakeServer
	hold chan struct{}

	mu          sync.Mutex
	calls       int
	inFlight    int
	maxInFlight int
	stored      string // Applied of the report stored last
}

func (s *heldServer) Report(ctx context.Context, id string, r api.Report) (api.ReportResponse, error) {
	s.mu.Lock()
	s.calls++
	first := s.calls == 1
	s.inFlight++
	s.maxInFlight = max(s.maxInFlight, s.inFlight)
	s.mu.Unlock()
	if first {
		<-s.hold
	}
	s.mu.Lock()
	s.stored = r.Applied
	s.inFlight--
	s.mu.Unlock()
	return s.fakeServer.Report(ctx, id, r)
}

// A report begun before a convergence finished (the service watcher's,
// on the new service starting) must not reach the server after the
// convergence's own report: the server would keep the device at the old
// state until its next periodic report, and a rollout's wave would wait
// for it.
func TestReportsDoNotOvertakeEachOther(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake, a := newFake(t, map[string]string{"bin/app": "#!/bin/sh\n", "share/data": "data"})
		defer a.ev.stopHooks()
		srv := &heldServer{fakeServer: fake, hold: make(chan struct{})}
		a.srv = srv
		ctx := context.Background()

		early := make(chan error, 1)
		go func() { early <- a.report(ctx) }()
		synctest.Wait() // the early report, Applied still "", is in the server

		converged := make(chan error, 1)
		go func() { converged <- a.Converge(ctx) }()
		synctest.Wait() // the convergence ran and reported, or waits its turn

		close(srv.hold)
		if err := <-early; err != nil {
			t.Fatalf("early report: %v", err)
		}
		if err := <-converged; err != nil {
			t.Fatalf("Converge: %v", err)
		}
		srv.mu.Lock()
		defer srv.mu.Unlock()
		if srv.stored != fake.resolved.Digest {
			t.Errorf("the server's record has applied %q, want %s: an earlier report overtook the convergence's", srv.stored, fake.resolved.Digest)
		}
		if srv.maxInFlight != 1 {
			t.Errorf("%d reports in flight at once, want 1", srv.maxInFlight)
		}
	})
}
