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
	// Refresh is how long the server reuses its snapshot of the fleet to
	// hand out probes; default 5 seconds.
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

// netState is the server's snapshot of the fleet for handing out probes.
type netState struct {
	mu    sync.Mutex
	devs  []api.Device
	taken time.Time
}

// fleet returns the devices, from a snapshot at most Refresh old.
func (s *Server) fleet(ctx context.Context) ([]api.Device, error) {
	cfg := s.cfg.Network.withDefaults()
	s.net.mu.Lock()
	defer s.net.mu.Unlock()
	now := s.now()
	if s.net.devs != nil && now.Sub(s.net.taken) < cfg.Refresh {
		return s.net.devs, nil
	}
	devs, err := s.store.Devices(ctx)
	if err != nil {
		return nil, err
	}
	s.net.devs, s.net.taken = devs, now
	return devs, nil
}

// remoteHost is the IP address a request came from.
func remoteHost(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return ""
	}
	return host
}

// probeRank orders a target's candidate probers: stable, and different
// for each target so that the work spreads.
func probeRank(target, prober string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(target + "\x00" + prober))
	return h.Sum64()
}

// probesFor returns the probes the device prober is to run: the checks
// of the running services of each peer that chose it as one of its
// Probers. Only recently seen peers probe or are probed.
func (s *Server) probesFor(ctx context.Context, prober api.Device) []api.Probe {
	cfg := s.cfg.Network.withDefaults()
	value := prober.Labels[cfg.Label]
	if value == "" {
		return nil
	}
	devs, err := s.fleet(ctx)
	if err != nil {
		s.log.Warn("network checks: list devices", "err", err)
		return nil
	}
	now := s.now()
	var group []api.Device
	for _, d := range devs {
		if d.ID != prober.ID && d.Labels[cfg.Label] == value && now.Sub(d.LastSeen) < cfg.Stale {
			group = append(group, d)
		}
	}
	var out []api.Probe
	for _, t := range group {
		if t.Addr == "" || !hasNetChecks(t) || !chosen(t.ID, prober.ID, group, cfg.Probers) {
			continue
		}
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
	}
	return out
}

func hasNetChecks(d api.Device) bool {
	return slices.ContainsFunc(d.Services, func(s api.ServiceState) bool { return len(s.NetChecks) > 0 })
}

// chosen reports whether prober is one of the n probers of target among
// group (prober's peers; prober is not in it, target is).
func chosen(target, prober string, group []api.Device, n int) bool {
	mine := probeRank(target, prober)
	better := 0
	for _, d := range group {
		if d.ID != target && probeRank(target, d.ID) < mine {
			better++
		}
	}
	return better < n
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
		if err := s.observe(ctx, proberID, target, byTarget[target]); err != nil {
			s.log.Warn("network checks: store outcomes", "device", target, "err", err)
		}
	}
}

// maxErrorText bounds a probe's error kept in a record.
const maxErrorText = 256

// observe stores one prober's outcomes of target's checks.
func (s *Server) observe(ctx context.Context, prober, target string, results []api.ProbeResult) error {
	defer s.lockDevice(target)()
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
