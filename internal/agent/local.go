package agent

import (
	"net/http"
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
