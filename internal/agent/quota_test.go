package agent

import (
	"context"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/api"
)

// quotaServer refuses events past a quota of limit, as the server does.
type quotaServer struct {
	*fakeServer
	limit int
	posts int
}

func (s *quotaServer) PostEvents(ctx context.Context, id string, evs []api.Event) error {
	s.posts++
	s.mu.Lock()
	room := s.limit - len(s.events)
	s.mu.Unlock()
	if room >= len(evs) {
		return s.fakeServer.PostEvents(ctx, id, evs)
	}
	_ = s.fakeServer.PostEvents(ctx, id, evs[:max(room, 0)])
	return &api.Error{Code: api.ETOOMANY, RetryAfter: 30, Accepted: max(room, 0), Message: "over quota"}
}

// Events the server refuses past a quota stay in the agent's spool and go
// once Retry-After has passed; the ones it accepted are not sent twice.
func TestEventsHonourRetryAfter(t *testing.T) {
	fake, a := newFake(t, map[string]string{"share/data": "data"})
	srv := &quotaServer{fakeServer: fake, limit: 3}
	a.srv = srv
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a.now = func() time.Time { return now }
	a.q.now = a.now
	for i := range 5 {
		a.event(api.Event{Kind: api.KindLog, Level: api.LevelInfo, Message: string(rune('a' + i))})
	}
	ctx := context.Background()
	a.flushEvents(ctx)
	if len(fake.events) != 3 || a.q.len() != 2 {
		t.Fatalf("after a refusal: server has %d events, agent keeps %d; want 3 and 2", len(fake.events), a.q.len())
	}
	posts := srv.posts
	now = now.Add(10 * time.Second)
	a.flushEvents(ctx)
	if srv.posts != posts {
		t.Errorf("the agent posted again %v before Retry-After", 10*time.Second)
	}
	// The spool holds what was refused, across a restart.
	a2, err := New(a.cfg, srv)
	if err != nil {
		t.Fatal(err)
	}
	if a2.q.len() != 2 {
		t.Errorf("spool after restart holds %d events, want the 2 refused", a2.q.len())
	}
	srv.limit = 100
	now = now.Add(21 * time.Second)
	a.flushEvents(ctx)
	if a.q.len() != 0 {
		t.Errorf("after Retry-After the agent still keeps %d events", a.q.len())
	}
	var msgs string
	for _, ev := range fake.events {
		msgs += ev.Message
	}
	if msgs != "abcde" {
		t.Errorf("server got %q, want every event once, in order", msgs)
	}
}
