package agent

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/drover-dev/drover/internal/api"
)

// Network checks (api/netcheck.go): the agent reports the checks of its
// own services, and runs the probes of other devices' services that the
// server hands it in a report's answer, reporting their outcomes with the
// next report.

const (
	// probeTimeout bounds one probe; probeBudget all of one round.
	probeTimeout = 2 * time.Second
	probeBudget  = 3 * time.Second
	// maxProbes bounds the probes of one round; more are ignored.
	maxProbes = 64
	// probeParallel is how many probes run at once.
	probeParallel = 8
)

// netProbes holds the outcomes not yet reported.
type netProbes struct {
	mu      sync.Mutex
	results []api.ProbeResult
	last    time.Time // when the last round ran
}

// take returns and forgets the outcomes not yet reported.
func (n *netProbes) take() []api.ProbeResult {
	n.mu.Lock()
	defer n.mu.Unlock()
	r := n.results
	n.results = nil
	return r
}

// withNetChecks fills in each running service's network checks from its
// installed build's manifest.
func (a *Agent) withNetChecks(states []api.ServiceState) []api.ServiceState {
	if len(states) == 0 {
		return states
	}
	digests := map[string]string{} // package[@instance] -> digest
	for _, app := range a.engine.Installed() {
		digests[app.Name+"@"+app.Instance] = app.Digest
	}
	for i, st := range states {
		d, ok := digests[st.Package+"@"+st.Instance]
		if !ok {
			continue
		}
		m, err := a.engine.Manifest(d)
		if err != nil {
			continue
		}
		for _, svc := range m.Services {
			if svc.Name == st.Service && len(svc.NetChecks) > 0 {
				states[i].NetChecks = svc.NetChecks
			}
		}
	}
	return states
}

// runProbes runs the server's probes, at most once per report interval,
// within probeBudget, and keeps their outcomes for the next report. A
// probe that is not well formed (its address not IP:PORT of its check's
// port) is skipped: only what a check names is ever connected to.
func (a *Agent) runProbes(ctx context.Context, probes []api.Probe) {
	if len(probes) == 0 {
		return
	}
	a.net.mu.Lock()
	if !a.net.last.IsZero() && a.now().Sub(a.net.last) < a.cfg.ReportInterval/2 {
		a.net.mu.Unlock()
		return
	}
	a.net.last = a.now()
	a.net.mu.Unlock()
	if len(probes) > maxProbes {
		probes = probes[:maxProbes]
	}
	ctx, cancel := context.WithTimeout(ctx, probeBudget)
	defer cancel()
	results := make([]api.ProbeResult, len(probes))
	ok := make([]bool, len(probes))
	sem := make(chan struct{}, probeParallel)
	var wg sync.WaitGroup
	for i, p := range probes {
		if err := validProbe(p); err != nil {
			a.log.Warn("probe refused", "probe", p.Device+" "+p.Service+" "+p.Check.String(), "err", err)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			err := probe(ctx, p)
			r := api.ProbeResult{Device: p.Device, Service: p.Service, Check: p.Check.String(), OK: err == nil, At: a.now().UTC()}
			if err != nil {
				r.Error = err.Error()
			}
			results[i], ok[i] = r, true
		}()
	}
	wg.Wait()
	a.net.mu.Lock()
	defer a.net.mu.Unlock()
	for i, r := range results {
		if ok[i] {
			a.net.results = append(a.net.results, r)
		}
	}
	if len(a.net.results) > maxProbes {
		a.net.results = a.net.results[len(a.net.results)-maxProbes:]
	}
}

// validProbe checks that p connects where its check says: an IP address
// and the check's port.
func validProbe(p api.Probe) error {
	if err := p.Check.Validate(); err != nil {
		return err
	}
	ap, err := netip.ParseAddrPort(p.Addr)
	if err != nil {
		return fmt.Errorf("address %q: want IP:PORT", p.Addr)
	}
	if int(ap.Port()) != p.Check.TargetPort() {
		return fmt.Errorf("address %q: port is not the check's %d", p.Addr, p.Check.TargetPort())
	}
	return nil
}

// probe runs one check: a TCP connection, or an HTTP GET answered below
// 400.
func probe(ctx context.Context, p api.Probe) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	if p.Check.TCP != 0 {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", p.Addr)
		if err != nil {
			return dialError(err)
		}
		return c.Close()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.Addr+p.Check.HTTP, nil)
	if err != nil {
		return err
	}
	client := &http.Client{
		Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
		// A redirect is an answer: the service is reachable.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Do(req)
	if err != nil {
		return dialError(err)
	}
	resp.Body.Close()
	if resp.StatusCode >= 400 {
		return fmt.Errorf("GET %s: %s", p.Check.HTTP, resp.Status)
	}
	return nil
}

// dialError shortens a net error to what happened ("connect: connection
// refused", "i/o timeout").
func dialError(err error) error {
	if oe, ok := err.(*net.OpError); ok && oe.Err != nil {
		return fmt.Errorf("%s %s: %w", oe.Op, oe.Addr, oe.Err)
	}
	return err
}
