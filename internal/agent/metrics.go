package agent

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// agentMetrics are the agent's Prometheus metrics, served on its local
// socket at /metrics.
type agentMetrics struct {
	downloadBytes prometheus.Counter
	hookFailures  prometheus.Counter
}

func newAgentMetrics(reg *prometheus.Registry, a *Agent) agentMetrics {
	m := agentMetrics{
		downloadBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "drover_agent_download_bytes_total", Help: "Bytes of blobs received from the network (server and mirrors), compressed, as they came.",
		}),
		hookFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "drover_agent_hook_failures_total", Help: "Agent hooks that failed or timed out.",
		}),
	}
	pending := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "drover_agent_pending_events", Help: "Events waiting to be sent to the server.",
	}, func() float64 { return float64(a.q.len()) })
	installed := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "drover_agent_installed_packages", Help: "Packages installed by the agent.",
	}, func() float64 { return float64(len(a.engine.Installed())) })
	converged := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "drover_agent_converge_error", Help: "1 when the last convergence failed.",
	}, func() float64 {
		if _, e := a.Status(); e != "" {
			return 1
		}
		return 0
	})
	// Not package collectors: it links database/sql, which the agent
	// must not (deps_test.go).
	//lint:ignore SA1019 see above
	goc := prometheus.NewGoCollector()
	//lint:ignore SA1019 see above
	proc := prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{})
	reg.MustRegister(m.downloadBytes, m.hookFailures, pending, installed, converged, goc, proc)
	return m
}

// localMetricsRoutes registers /metrics on the local socket.
func (a *Agent) localMetricsRoutes(mux *http.ServeMux) {
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.events().reg, promhttp.HandlerOpts{}))
}
