package agent

import (
	"context"
	"net/http"
)

// localServiceRoutes registers the service process actions (issue 3).
func (a *Agent) localServiceRoutes(mux *http.ServeMux) {}

// runServices supervises the packages' services until ctx is done
// (issue 3).
func (a *Agent) runServices(ctx context.Context) {}
