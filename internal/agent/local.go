package agent

import (
	"net/http"

	"github.com/drover-dev/drover/internal/api"
)

// localHandler is the agent's node-local API on <home>/system/agent.sock
// (DESIGN §4: node-local verbs). Each feature registers its own calls.
func (a *Agent) localHandler() http.Handler {
	mux := http.NewServeMux()
	a.localNodeRoutes(mux)
	a.localServiceRoutes(mux)
	a.localMetricsRoutes(mux)
	return mux
}

// Local API bodies of the node-local verbs.
type (
	// LogRequest is the body of POST /v1/log.
	LogRequest struct {
		Message  string `json:"message"`
		Level    string `json:"level,omitempty"`
		Priority string `json:"priority,omitempty"`
	}
	// SendRequest is the body of POST /v1/send. Body is text, or base64
	// when Encoding is "base64".
	SendRequest struct {
		RoutingKey string `json:"routing_key,omitempty"`
		Body       string `json:"body"`
		Encoding   string `json:"encoding,omitempty"`
	}
	// Delivery answers log and send: whether the server has the event
	// yet, or it waits in the agent's queue for the server to come back.
	Delivery struct {
		Sent  bool   `json:"sent"`
		Error string `json:"error,omitempty"`
	}
	// KeepaliveAnswer answers PUT /v1/keepalive.
	KeepaliveAnswer struct {
		Sent        bool             `json:"sent"`
		Error       string           `json:"error,omitempty"`
		Keepalive   *api.Keepalive   `json:"keepalive,omitempty"`
		Termination *api.Termination `json:"termination,omitempty"`
	}
	// ConvergeLine is one line of POST /v1/converge: a step event, or the
	// last line with Done set.
	ConvergeLine struct {
		Kind    string `json:"kind,omitempty"`
		Level   string `json:"level,omitempty"`
		Package string `json:"package,omitempty"`
		Message string `json:"message,omitempty"`
		// Progress is set on the lines of step-progress events.
		Progress  *Progress `json:"progress,omitempty"`
		Done      bool      `json:"done,omitempty"`
		Converged bool      `json:"converged,omitempty"`
		Error     string    `json:"error,omitempty"`
	}
)
