package api

import "time"

// Health states of a device (Jetpack's health checks, DESIGN §4). The
// device's state is the worst of its checks' results: terminate, then
// unknown, then healthy.
const (
	HealthStarting  = "starting"  // no result yet, or within the start delay
	HealthHealthy   = "healthy"   // every check exited 0
	HealthUnknown   = "unknown"   // a check failed otherwise or timed out
	HealthTerminate = "terminate" // a check exited 254: the machine asks to be terminated
)

// Event kinds of health checks, termination and keepalive.
const (
	KindHealth             = "health"              // the device's health state changed
	KindHealthCheck        = "health-check"        // one check's result is unknown, with its output
	KindKeepalive          = "keepalive"           // a keepalive was set or cancelled
	KindTerminateRequested = "terminate-requested" // a check asked for termination
	KindTerminateDelayed   = "terminate-delayed"   // a keepalive holds the termination
	KindTerminating        = "terminating"         // the termination hook runs
	KindTerminated         = "terminated"          // the hook succeeded
	KindHookFailed         = "hook-failed"         // the hook failed or timed out
	KindTerminateCleared   = "terminate-cleared"   // the device recovered before termination
)

// HealthCheck is the last result of one check script.
type HealthCheck struct {
	Name     string    `json:"name" yaml:"name"`
	Status   string    `json:"status" yaml:"status"` // healthy, unknown or terminate
	ExitCode int       `json:"exit_code" yaml:"exit_code"`
	Output   string    `json:"output,omitempty" yaml:"output,omitempty"`
	Time     time.Time `json:"time" yaml:"time"`
}

// HealthReport is the health part of an agent's report.
type HealthReport struct {
	// Status is one of the Health constants, after start delay and
	// anti-flapping; empty when no check is installed.
	Status string        `json:"status" yaml:"status"`
	Since  time.Time     `json:"since,omitzero" yaml:"since,omitempty"`
	Checks []HealthCheck `json:"checks,omitempty" yaml:"checks,omitempty"`
}

// Keepalive holds off a health-check termination (Jetpack's `keepalive`).
type Keepalive struct {
	Until   time.Time `json:"until,omitzero" yaml:"until,omitempty"`
	Forever bool      `json:"forever,omitempty" yaml:"forever,omitempty"`
	Set     time.Time `json:"set" yaml:"set"`
}

// Holds reports whether k (which may be nil) delays termination at now.
func (k *Keepalive) Holds(now time.Time) bool {
	return k != nil && (k.Forever || now.Before(k.Until))
}

// KeepaliveRequest is what an agent sends for `drover keepalive`: a
// duration in seconds, forever, or cancel.
type KeepaliveRequest struct {
	Seconds int64 `json:"seconds,omitempty"`
	Forever bool  `json:"forever,omitempty"`
	Cancel  bool  `json:"cancel,omitempty"`
}

// Termination states of a device.
const (
	TerminationRequested   = "requested"   // a check asked; waiting for keepalives to lapse
	TerminationTerminating = "terminating" // the hook is running
	TerminationTerminated  = "terminated"  // the hook succeeded
	TerminationHookFailed  = "hook-failed" // the hook failed; the device is left as it is
)

// Termination is the server's record of a device's termination request.
type Termination struct {
	State     string    `json:"state" yaml:"state"`
	Requested time.Time `json:"requested" yaml:"requested"`
	Updated   time.Time `json:"updated" yaml:"updated"`
	Error     string    `json:"error,omitempty" yaml:"error,omitempty"`
	// Delayed is true while a keepalive holds a requested termination.
	Delayed bool `json:"delayed,omitempty" yaml:"delayed,omitempty"`
}

// KeepaliveResponse answers a keepalive: what the server now holds.
type KeepaliveResponse struct {
	Keepalive   *Keepalive   `json:"keepalive,omitempty"`
	Termination *Termination `json:"termination,omitempty"`
}
