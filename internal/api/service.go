package api

import "time"

// Service states an agent reports.
const (
	ServiceRunning = "running"
	ServiceStopped = "stopped"
	ServiceFailed  = "failed"
)

// Health of a running service instance, from its health command.
const (
	ServiceHealthy       = "healthy"
	ServiceUnhealthy     = "unhealthy"
	ServiceHealthUnknown = "unknown" // no health command, or no verdict yet
)

// ServiceState is one service instance as its supervisor sees it.
type ServiceState struct {
	// Coordinate is INSTANCE.SERVICE[.ENV.REGION] (copkg), the name of
	// its runtime directory.
	Coordinate string `json:"coordinate" yaml:"coordinate"`
	Package    string `json:"package" yaml:"package"` // group:name
	Version    string `json:"version,omitempty" yaml:"version,omitempty"`
	Instance   string `json:"instance,omitempty" yaml:"instance,omitempty"`
	Service    string `json:"service" yaml:"service"`
	State      string `json:"state" yaml:"state"` // running, stopped or failed
	PID        int    `json:"pid,omitempty" yaml:"pid,omitempty"`
	Restarts   int    `json:"restarts" yaml:"restarts"`
	// Since is when the service entered its state.
	Since time.Time `json:"since,omitzero" yaml:"since,omitempty"`
	// Error says why a failed service failed: exit status and the tail
	// of its console.
	Error string `json:"error,omitempty" yaml:"error,omitempty"`
	// LastError is the service's last failure (exit status, signal or
	// why a start failed), kept after a restart; LastErrorTime is when.
	LastError     string    `json:"last_error,omitempty" yaml:"last_error,omitempty"`
	LastErrorTime time.Time `json:"last_error_time,omitzero" yaml:"last_error_time,omitempty"`
	// Health is the verdict of the service's health command while the
	// service runs (healthy, unhealthy or unknown); empty when it does
	// not run.
	Health string `json:"health,omitempty" yaml:"health,omitempty"`
	// HealthOutput is how the last health check failed (exit status and
	// the tail of its output) while Health is unhealthy.
	HealthOutput string `json:"health_output,omitempty" yaml:"health_output,omitempty"`
	// NetChecks are the service's network checks, from its manifest
	// (filled in by the agent, api/netcheck.go).
	NetChecks []NetCheck `json:"net_checks,omitempty" yaml:"net_checks,omitempty"`
	// Network is how the service's peers reach it over its NetChecks:
	// reachable, unreachable (running, but a check fails from every peer
	// that tried it lately), or empty (no checks, not running, or no
	// recent verdict). Set by the server; a running service that is
	// unreachable counts as unhealthy.
	Network string `json:"network,omitempty" yaml:"network,omitempty"`
	// NetworkError says which check failed, from where, and how.
	NetworkError string `json:"network_error,omitempty" yaml:"network_error,omitempty"`
}
