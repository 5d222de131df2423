package server

import (
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/api"
)

func TestTerminationStep(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	s := &Server{now: func() time.Time { return t0 }}
	hour := &api.Keepalive{Until: t0.Add(time.Hour), Set: t0}
	expired := &api.Keepalive{Until: t0.Add(-time.Second), Set: t0.Add(-time.Hour)}
	forever := &api.Keepalive{Forever: true, Set: t0}
	term := func(state string, delayed bool) *api.Termination {
		return &api.Termination{State: state, Requested: t0, Updated: t0, Delayed: delayed}
	}
	tests := []struct {
		name      string
		health    string
		keepalive *api.Keepalive
		before    *api.Termination
		wantState string // "" = no termination
		wantHook  bool
		wantKinds string
	}{
		{"healthy stays", api.HealthHealthy, nil, nil, "", false, ""},
		{"254 without keepalive terminates", api.HealthTerminate, nil, nil, api.TerminationTerminating, true, "terminate-requested"},
		{"254 under keepalive waits", api.HealthTerminate, hour, nil, api.TerminationRequested, false, "terminate-requested terminate-delayed"},
		{"forever waits", api.HealthTerminate, forever, term(api.TerminationRequested, false), api.TerminationRequested, false, "terminate-delayed"},
		{"delayed is said once", api.HealthTerminate, forever, term(api.TerminationRequested, true), api.TerminationRequested, false, ""},
		{"lapsed keepalive terminates", api.HealthTerminate, expired, term(api.TerminationRequested, true), api.TerminationTerminating, true, ""},
		{"recovery clears", api.HealthHealthy, hour, term(api.TerminationRequested, true), "", false, "terminate-cleared"},
		{"unknown does not clear", api.HealthUnknown, hour, term(api.TerminationRequested, true), api.TerminationRequested, false, ""},
		{"recovery after a failed hook clears", api.HealthHealthy, nil, term(api.TerminationHookFailed, false), "", false, "terminate-cleared"},
		{"terminating is final", api.HealthHealthy, nil, term(api.TerminationTerminating, false), api.TerminationTerminating, false, ""},
		{"terminated does not run twice", api.HealthTerminate, nil, term(api.TerminationTerminated, false), api.TerminationTerminated, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := api.Device{ID: "d1", Health: tt.health, Keepalive: tt.keepalive, Termination: tt.before}
			evs, hook := s.terminationStep(&d)
			state := ""
			if d.Termination != nil {
				state = d.Termination.State
			}
			var kinds []string
			for _, ev := range evs {
				kinds = append(kinds, ev.Kind)
			}
			if state != tt.wantState || hook != tt.wantHook || strings.Join(kinds, " ") != tt.wantKinds {
				t.Errorf("terminationStep = state %q, hook %v, events %q; want %q, %v, %q", state, hook, kinds, tt.wantState, tt.wantHook, tt.wantKinds)
			}
		})
	}
	s.node.mu.Lock()
	for _, tm := range s.node.timers {
		tm.Stop()
	}
	s.node.mu.Unlock()
}
