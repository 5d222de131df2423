package api

import (
	"encoding/json"
	"fmt"
	"regexp"
	"time"
)

// Event levels.
const (
	LevelInfo  = "info"
	LevelWarn  = "warn"
	LevelError = "error"
)

// Event priorities, ordered low < medium < high.
const (
	PriorityLow    = "low"
	PriorityMedium = "medium"
	PriorityHigh   = "high"
)

// Event kinds emitted by the core. Later features add kinds; a consumer
// ignores kinds it does not know.
const (
	KindDeviceSeen = "device-seen"
	KindState      = "state"      // desired state set
	KindPackage    = "package"    // package pushed or removed
	KindPlan       = "plan"       // agent planned steps
	KindStepStart  = "step-start" // one step of a plan begins
	KindStepDone   = "step-done"
	KindStepFailed = "step-failed"
	KindConverged  = "converged"
	KindLog        = "log"
	KindSend       = "send"
)

// Event kinds of rollouts, emitted by the server only.
const (
	KindRolloutStarted = "rollout-started"
	KindRolloutWave    = "rollout-wave" // a wave began or passed
	KindRolloutPaused  = "rollout-paused"
	KindRolloutResumed = "rollout-resumed"
	KindRolloutFailed  = "rollout-failed"
	KindRolloutDone    = "rollout-done"
	KindRolloutAborted = "rollout-aborted"
)

// Event is anything that happened, stored with a monotonically increasing ID.
type Event struct {
	ID       int64           `json:"id" yaml:"id"`
	Time     time.Time       `json:"time" yaml:"time"`
	Device   string          `json:"device,omitempty" yaml:"device,omitempty"`
	Kind     string          `json:"kind" yaml:"kind"`
	Level    string          `json:"level" yaml:"level"`
	Priority string          `json:"priority" yaml:"priority"`
	Package  string          `json:"package,omitempty" yaml:"package,omitempty"`
	Message  string          `json:"message" yaml:"message"`
	Payload  json.RawMessage `json:"payload,omitempty" yaml:"-"`
}

// PriorityRank orders priorities; an unknown one ranks 0.
func PriorityRank(p string) int {
	switch p {
	case PriorityLow:
		return 1
	case PriorityMedium:
		return 2
	case PriorityHigh:
		return 3
	}
	return 0
}

// ValidLevel reports whether l is a known level.
func ValidLevel(l string) bool { return l == LevelInfo || l == LevelWarn || l == LevelError }

// Normalize fills a missing level (info) and priority (high for error,
// medium otherwise) and checks both.
func (e *Event) Normalize() error {
	if e.Level == "" {
		e.Level = LevelInfo
	}
	if !ValidLevel(e.Level) {
		return fmt.Errorf("level %q: want info, warn or error", e.Level)
	}
	if e.Priority == "" {
		if e.Level == LevelError {
			e.Priority = PriorityHigh
		} else {
			e.Priority = PriorityMedium
		}
	}
	if PriorityRank(e.Priority) == 0 {
		return fmt.Errorf("priority %q: want low, medium or high", e.Priority)
	}
	if e.Kind == "" {
		return fmt.Errorf("event has no kind")
	}
	if !kindRe.MatchString(e.Kind) {
		// Kinds name hook directories and routing keys: never a path.
		return fmt.Errorf("event kind %q: want letters, digits, '-', '_' and '.', at most 64", e.Kind)
	}
	return nil
}

var kindRe = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$`)
