package agent

import (
	"errors"
	"sync"
)

// errSuperseded ends a converge run whose desired state was replaced by
// a newer one while it ran: the run stops and the newer state is
// converged to next. It is not a failure of the device.
var errSuperseded = errors.New("superseded by a newer desired state")

// supersede knows the newest desired state the server announced and the
// one a converge run is working towards, so a run can tell that its
// target is stale.
type supersede struct {
	mu         sync.Mutex
	newest     string // digest of the newest desired state announced
	converging string // digest the running converge works towards
}

// announced records the digest of a desired state the server just sent.
func (s *supersede) announced(digest string) {
	s.mu.Lock()
	s.newest = digest
	s.mu.Unlock()
}

// latest returns the digest of the newest desired state announced.
func (s *supersede) latest() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.newest
}

// start records the digest a converge run works towards; it counts as
// announced too.
func (s *supersede) start(digest string) {
	s.mu.Lock()
	s.converging, s.newest = digest, digest
	s.mu.Unlock()
}

// stale reports whether a newer desired state than the running one has
// been announced.
func (s *supersede) stale() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.converging != "" && s.newest != s.converging
}

// done records that the converge run ended.
func (s *supersede) done() {
	s.mu.Lock()
	s.converging = ""
	s.mu.Unlock()
}
