package server

import (
	"cmp"
	"context"
	"fmt"
	"hash/fnv"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/store"
)

// Network checks (api/netcheck.go, JPackages' monitor.up.net): a running
// service's checks are probed by a few of its device's peers (devices
// sharing the value of a label, region by default). The server hands the
// probes out in the answer to a report, takes the outcomes from the next
// one, keeps each peer's latest outcome in the probed device's record,
// and marks a running service unreachable when a check fails from every
// peer that tried it lately.

// NetworkConfig configures network checks.
type NetworkConfig struct {
	// Label is the label whose value a device must share with another to
	// probe it; default "region". A device without it probes nothing
	// and is probed by nobody.
	Label string
	// Probers is how many peers probe each device; default 3.
	Probers int
	// Stale is how long a probe's outcome counts; default 3 minutes.
	Stale time.Duration
	// Refresh is how long the server reuses its plan of who probes what
	// (made from a snapshot of the fleet); default 5 seconds.
	Refresh time.Duration
}

func (c NetworkConfig) withDefaults() NetworkConfig {
	if c.Label == "" {
		c.Label = "region"
	}
	if c.Probers <= 0 {
		c.Probers = 3
	}
	if c.Stale <= 0 {
		c.Stale = 3 * time.Minute
	}
	if c.Refresh <= 0 {
		c.Refresh = 5 * time.Second
	}
	return c
}

// netState is the server's plan of who probes what, made from a
// snapshot of the fleet at most Refresh old.
type netState struct {
	mu     sync.Mutex
	probes map[string][]api.Probe // prober id -> its probes
	taken  time.Time
}

// probesFor returns the probes the device prober is to run.
func (s *Server) probesFor(ctx context.Context, prober api.Device) []api.Probe {
	cfg := s.cfg.Network.withDefaults()
	if prober.Labels[cfg.Label] == "" {
		return nil
	}
	s.net.mu.Lock()
	defer s.net.mu.Unlock()
	now := s.now()
	if s.net.probes == nil || now.Sub(s.net.taken) >= cfg.Refresh {
		devs, err := s.store.Devices(ctx)
		if err != nil {
			s.log.Warn("network checks: list devices", "err", err)
			return nil
		}
		s.net.probes, s.net.taken = planProbes(devs, cfg, now), now
	}
	return s.net.probes[prober.ID]
}

// remoteHost is the IP address a request came from.
func remoteHost(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return ""
	}
	return host
}

// ringKey orders devices on a label group's ring: stable, and unrelated
// to their names' order so that the work spreads.
func ringKey(id string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(id))
	return h.Sum64()
}

// planProbes decides who probes what: within each group of recently seen
// devices sharing the label's value, laid on a ring by ringKey, a device
// with network checks is probed by the Probers devices after it, so each
// device probes at most Probers others. It costs one sort per group.
func planProbes(devs []api.Device, cfg NetworkConfig, now time.Time) map[string][]api.Probe {
	groups := map[string][]api.Device{}
	for _, d := range devs {
		if v := d.Labels[cfg.Label]; v != "" && now.Sub(d.LastSeen) < cfg.Stale {
			groups[v] = append(groups[v], d)
		}
	}
	out := map[string][]api.Probe{}
	for _, g := range groups {
		slices.SortFunc(g, func(a, b api.Device) int {
			return cmp.Or(cmp.Compare(ringKey(a.ID), ringKey(b.ID)), cmp.Compare(a.ID, b.ID))
		})
		for i, t := range g {
			if t.Addr == "" {
				continue
			}
			probes := targetProbes(t)
			if len(probes) == 0 {
				continue
			}
			for k := 1; k <= cfg.Probers && k < len(g); k++ {
				p := g[(i+k)%len(g)].ID
				out[p] = append(out[p], probes...)
			}
		}
	}
	return out
}

// targetProbes are the probes of t's running services' checks.
func targetProbes(t api.Device) []api.Probe {
	var out []api.Probe
	for _, svc := range t.Services {
		if svc.State != api.ServiceRunning {
			continue
		}
		for _, c := range svc.NetChecks {
			if c.Validate() != nil {
				continue
			}
			out = append(out, api.Probe{Device: t.ID, Service: svc.Coordinate, Check: c,
				Addr: net.JoinHostPort(t.Addr, strconv.Itoa(c.TargetPort()))})
		}
	}
	return out
}

// netResults takes a prober's outcomes into the records of the devices
// they are about, with events where a service's reachability changed.
// Only outcomes of probes the prober was given count: a device cannot
// mark another's service down by reporting what it was never asked. It
// runs after the prober's own record is written and its lock released.
func (s *Server) netResults(ctx context.Context, proberID string, results []api.ProbeResult) {
	if len(results) == 0 {
		return
	}
	prober, err := s.store.Device(ctx, proberID)
	if err != nil {
		return
	}
	asked := map[string]bool{}
	for _, p := range s.probesFor(ctx, prober) {
		asked[p.Device+"\x00"+p.Service+"\x00"+p.Check.String()] = true
	}
	byTarget := map[string][]api.ProbeResult{}
	for _, r := range results {
		if asked[r.Device+"\x00"+r.Service+"\x00"+r.Check] {
			byTarget[r.Device] = append(byTarget[r.Device], r)
		}
	}
	for _, target := range slices.Sorted(func(yield func(string) bool) {
		for k := range byTarget {
			if !yield(k) {
				return
			}
		}
	}) {
		if err := s.observeProbes(ctx, proberID, target, byTarget[target]); err != nil {
			s.log.Warn("network checks: store outcomes", "device", target, "err", err)
		}
	}
}

// maxErrorText bounds a probe's error kept in a record.
const maxErrorText = 256

// observeProbes stores one prober's outcomes of target's checks.
func (s *Server) observeProbes(ctx context.Context, prober, target string, results []api.ProbeResult) error {
	unlock, err := s.lockDevice(ctx, target)
	if err != nil {
		return err
	}
	defer unlock()
	d, err := s.store.Device(ctx, target)
	if err != nil {
		return err
	}
	old := slices.Clone(d.Services)
	now := s.now().UTC()
	for _, r := range results {
		errText := r.Error
		if len(errText) > maxErrorText {
			errText = errText[:maxErrorText]
		}
		// The server's clock, not the prober's, dates an outcome.
		ob := api.NetObservation{Service: r.Service, Check: r.Check, Prober: prober, OK: r.OK, Error: errText, At: now}
		i := slices.IndexFunc(d.NetObservations, func(o api.NetObservation) bool {
			return o.Service == ob.Service && o.Check == ob.Check && o.Prober == ob.Prober
		})
		if i >= 0 {
			d.NetObservations[i] = ob
		} else {
			d.NetObservations = append(d.NetObservations, ob)
		}
	}
	evs := s.applyNetwork(&d, old)
	return s.commit(ctx, store.Write{Device: &d, Events: evs})
}

// applyNetwork drops stale and orphaned observations of d, sets each
// service's Network from the rest, and returns the events of services
// whose reachability changed from what old said.
func (s *Server) applyNetwork(d *api.Device, old []api.ServiceState) []api.Event {
	cfg := s.cfg.Network.withDefaults()
	now := s.now()
	live := map[string]bool{}
	for _, svc := range d.Services {
		for _, c := range svc.NetChecks {
			live[svc.Coordinate+"\x00"+c.String()] = true
		}
	}
	d.NetObservations = slices.DeleteFunc(d.NetObservations, func(o api.NetObservation) bool {
		return now.Sub(o.At) >= cfg.Stale || !live[o.Service+"\x00"+o.Check]
	})
	slices.SortFunc(d.NetObservations, func(a, b api.NetObservation) int {
		return cmp.Or(cmp.Compare(a.Service, b.Service), cmp.Compare(a.Check, b.Check), cmp.Compare(a.Prober, b.Prober))
	})
	var evs []api.Event
	for i := range d.Services {
		svc := &d.Services[i]
		svc.Network, svc.NetworkError = netVerdict(*svc, d.NetObservations)
		was := ""
		if j := slices.IndexFunc(old, func(o api.ServiceState) bool { return o.Coordinate == svc.Coordinate }); j >= 0 {
			was = old[j].Network
		}
		switch {
		case svc.Network == api.ServiceUnreachable && was != api.ServiceUnreachable:
			evs = append(evs, api.Event{Device: d.ID, Kind: api.KindServiceUnreachable, Level: api.LevelWarn, Priority: api.PriorityHigh, Package: svc.Package,
				Message: fmt.Sprintf("service %s is running but unreachable from its peers: %s", svc.Coordinate, svc.NetworkError)})
		case svc.Network == api.ServiceReachable && was == api.ServiceUnreachable:
			evs = append(evs, api.Event{Device: d.ID, Kind: api.KindServiceReachable, Level: api.LevelInfo, Priority: api.PriorityMedium, Package: svc.Package,
				Message: fmt.Sprintf("service %s is reachable from its peers again", svc.Coordinate)})
		}
	}
	return evs
}

// netVerdict decides a service's reachability from fresh observations: a
// check fails when every peer that tried it failed; unreachable when one
// check fails, reachable when every check passed from some peer, else
// no verdict.
func netVerdict(svc api.ServiceState, obs []api.NetObservation) (state, why string) {
	if svc.State != api.ServiceRunning || len(svc.NetChecks) == 0 {
		return "", ""
	}
	passed := 0
	for _, c := range svc.NetChecks {
		var ok bool
		var fail *api.NetObservation
		for i, o := range obs {
			if o.Service != svc.Coordinate || o.Check != c.String() {
				continue
			}
			if o.OK {
				ok = true
			} else if fail == nil {
				fail = &obs[i]
			}
		}
		switch {
		case ok:
			passed++
		case fail != nil:
			return api.ServiceUnreachable, fmt.Sprintf("%s from %s: %s", fail.Check, fail.Prober, fail.Error)
		}
	}
	if passed == len(svc.NetChecks) {
		return api.ServiceReachable, ""
	}
	return "", ""
}
