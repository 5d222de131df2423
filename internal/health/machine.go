package health

import (
	"time"

	"github.com/drover-dev/drover/internal/api"
)

// MachineConfig tunes the state machine.
type MachineConfig struct {
	// StartDelay: results are ignored for this long after the agent
	// starts and after each install, while services come up (Habitat's
	// missing "initial delay").
	StartDelay time.Duration
	// Consecutive is how many equal results in a row change the state;
	// default 1. More keeps one odd result from flapping the state (and
	// from terminating a machine).
	Consecutive int
}

// Machine turns a stream of results into a health state. It is not safe
// for concurrent use; the agent's health loop owns it.
type Machine struct {
	cfg       MachineConfig
	state     string
	since     time.Time
	hold      time.Time // results before this are ignored
	candidate string
	count     int
}

// NewMachine returns a machine in the starting state that ignores results
// until start plus the start delay.
func NewMachine(cfg MachineConfig, start time.Time) *Machine {
	if cfg.Consecutive < 1 {
		cfg.Consecutive = 1
	}
	return &Machine{cfg: cfg, state: api.HealthStarting, since: start, hold: start.Add(cfg.StartDelay)}
}

// Hold ignores results for the start delay from at (after an install).
// The state is kept; the count towards a new state starts again.
func (m *Machine) Hold(at time.Time) {
	if h := at.Add(m.cfg.StartDelay); h.After(m.hold) {
		m.hold = h
	}
	m.candidate, m.count = "", 0
}

// Waiting reports whether results at at are ignored (start delay).
func (m *Machine) Waiting(at time.Time) bool { return at.Before(m.hold) }

// State returns the current state and since when it holds.
func (m *Machine) State() (string, time.Time) { return m.state, m.since }

// Observe feeds the overall result of one run at time at and reports
// whether the state changed. An empty result (no checks) counts like any
// other, so removing every check ends a terminate request.
func (m *Machine) Observe(at time.Time, result string) (string, bool) {
	if m.Waiting(at) {
		return m.state, false
	}
	if result == m.state {
		m.candidate, m.count = "", 0
		return m.state, false
	}
	if result == m.candidate {
		m.count++
	} else {
		m.candidate, m.count = result, 1
	}
	if m.count < m.cfg.Consecutive {
		return m.state, false
	}
	m.state, m.since = result, at
	m.candidate, m.count = "", 0
	return m.state, true
}
