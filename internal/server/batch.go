package server

import (
	"context"
	"fmt"
	"sync"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/store"
)

// maxGroupedPosts bounds how many event posts one transaction stores.
const maxGroupedPosts = 64

// eventGroups stores the devices' event posts that arrive while one is
// being stored together, in one transaction (a group commit): a fleet
// converging at once posts thousands, and each transaction costs the
// store far more than its few rows. A post alone is stored at once.
type eventGroups struct {
	mu      sync.Mutex
	pending []*eventPost
	busy    bool // a post is storing a group
}

type eventPost struct {
	evs  []api.Event
	done chan error    // the outcome of the group that held it
	lead chan struct{} // closed: this post stores the next group
}

// emitGrouped stores evs with whatever other posts are waiting, and
// returns when they are stored. The events are checked first, so one
// device's bad event never fails another's post.
func (s *Server) emitGrouped(ctx context.Context, evs []api.Event) error {
	if len(evs) == 0 {
		return nil
	}
	now := s.now().UTC()
	for i := range evs {
		if evs[i].Time.IsZero() {
			evs[i].Time = now
		}
		if err := evs[i].Normalize(); err != nil {
			return api.Errorf(api.EINVALID, fmt.Sprintf("event: %v", err))
		}
	}
	g := &s.evGroups
	p := &eventPost{evs: evs, done: make(chan error, 1), lead: make(chan struct{})}
	g.mu.Lock()
	g.pending = append(g.pending, p)
	lead := !g.busy
	g.busy = true
	g.mu.Unlock()
	if !lead {
		select {
		case err := <-p.done:
			return err
		case <-p.lead:
		}
	}
	g.mu.Lock()
	n := min(len(g.pending), maxGroupedPosts)
	group := g.pending[:n:n]
	g.pending = g.pending[n:]
	g.mu.Unlock()
	var all []api.Event
	for _, q := range group {
		all = append(all, q.evs...)
	}
	// The group is the other posts' too: it is stored even if this
	// post's caller has gone.
	err := s.commit(context.WithoutCancel(ctx), store.Write{Events: all})
	for _, q := range group {
		q.done <- err
	}
	g.mu.Lock()
	if len(g.pending) > 0 {
		close(g.pending[0].lead)
	} else {
		g.busy = false
	}
	g.mu.Unlock()
	return <-p.done
}
