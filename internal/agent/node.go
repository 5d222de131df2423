package agent

import (
	"context"
	"net/http"
)

// localNodeRoutes registers config, converge, keepalive, log and send
// (issue 4).
func (a *Agent) localNodeRoutes(mux *http.ServeMux) {}

// runHealth runs the health checks until ctx is done (issue 4).
func (a *Agent) runHealth(ctx context.Context) {}
