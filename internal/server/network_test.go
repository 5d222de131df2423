package server

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/client"
)

func TestNetVerdict(t *testing.T) {
	tcp, http := api.NetCheck{TCP: 80}, api.NetCheck{HTTP: "/h", Port: 81}
	svc := api.ServiceState{Coordinate: "w.web", State: api.ServiceRunning, NetChecks: []api.NetCheck{tcp, http}}
	ob := func(check api.NetCheck, prober string, ok bool) api.NetObservation {
		o := api.NetObservation{Service: "w.web", Check: check.String(), Prober: prober, OK: ok}
		if !ok {
			o.Error = "refused"
		}
		return o
	}
	stopped := svc
	stopped.State = api.ServiceStopped
	for _, tc := range []struct {
		name string
		svc  api.ServiceState
		obs  []api.NetObservation
		want string
		why  string
	}{
		{"no verdict yet", svc, nil, "", ""},
		{"all pass", svc, []api.NetObservation{ob(tcp, "p1", true), ob(http, "p2", true)}, api.ServiceReachable, ""},
		{"one check unknown", svc, []api.NetObservation{ob(tcp, "p1", true)}, "", ""},
		{"one fails everywhere", svc, []api.NetObservation{ob(tcp, "p1", true), ob(http, "p1", false), ob(http, "p2", false)}, api.ServiceUnreachable, "http:81/h from p1: refused"},
		{"one peer passes: reachable", svc, []api.NetObservation{ob(tcp, "p1", false), ob(tcp, "p2", true), ob(http, "p2", true)}, api.ServiceReachable, ""},
		{"other service's results", svc, []api.NetObservation{{Service: "w.other", Check: "tcp:80", Prober: "p1"}}, "", ""},
		{"not running", stopped, []api.NetObservation{ob(tcp, "p1", false)}, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, why := netVerdict(tc.svc, tc.obs)
			if got != tc.want || why != tc.why {
				t.Errorf("netVerdict() = %q, %q; want %q, %q", got, why, tc.want, tc.why)
			}
		})
	}
}

func TestPlanProbes(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	cfg := NetworkConfig{}.withDefaults()
	svc := []api.ServiceState{{Coordinate: "w.web", State: api.ServiceRunning, NetChecks: []api.NetCheck{{TCP: 80}}}}
	dev := func(id, region string, services []api.ServiceState) api.Device {
		return api.Device{ID: id, Labels: map[string]string{"region": region}, Addr: "10.0.0.1", LastSeen: now, Services: services}
	}
	var devs []api.Device
	for _, id := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		devs = append(devs, dev(id, "eu", svc))
	}
	devs = append(devs,
		dev("us1", "us", svc), dev("us2", "us", nil), // another group
		dev("lone", "ap", svc), // nobody to probe it
		api.Device{ID: "nolabel", Addr: "10.0.0.9", LastSeen: now, Services: svc},
		func() api.Device { d := dev("old", "eu", svc); d.LastSeen = now.Add(-time.Hour); return d }())
	plan := planProbes(devs, cfg, now)
	probedBy := map[string][]string{}
	for prober, probes := range plan {
		if len(probes) > cfg.Probers {
			t.Errorf("%s probes %d services, want at most %d", prober, len(probes), cfg.Probers)
		}
		for _, p := range probes {
			if p.Device == prober {
				t.Errorf("%s probes itself", prober)
			}
			probedBy[p.Device] = append(probedBy[p.Device], prober)
		}
	}
	for _, id := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		if n := len(probedBy[id]); n != cfg.Probers {
			t.Errorf("%s is probed by %v, want %d peers", id, probedBy[id], cfg.Probers)
		}
		for _, p := range probedBy[id] {
			if !strings.ContainsAny(p, "abcdefgh") || len(p) != 1 {
				t.Errorf("%s is probed by %s, not of its region", id, p)
			}
		}
	}
	if got := probedBy["us1"]; len(got) != 1 || got[0] != "us2" {
		t.Errorf("us1 is probed by %v, want us2 (its only peer)", got)
	}
	for _, id := range []string{"lone", "nolabel", "old", "us2"} {
		if len(probedBy[id]) != 0 || (id != "us2" && len(plan[id]) != 0) {
			t.Errorf("%s: probed by %v, probes %v; want neither", id, probedBy[id], plan[id])
		}
	}
}

// TestNetworkChecksThroughReports: d1's running service with a check is
// handed to d2 (same region) as a probe; d2's outcomes make it
// unreachable, then reachable again, with events; outcomes d2 was never
// asked for are ignored; another region probes nothing.
func TestNetworkChecksThroughReports(t *testing.T) {
	ts := newTestServer(t, time.Second)
	ts.srv.cfg.Network.Refresh = time.Nanosecond
	ctx := context.Background()
	check := api.NetCheck{TCP: 8080}
	svc := api.ServiceState{Coordinate: "web.web", Package: "com.example:web", Service: "web", State: api.ServiceRunning, NetChecks: []api.NetCheck{check}}
	report := func(id, region string, services []api.ServiceState, results ...api.ProbeResult) api.ReportResponse {
		t.Helper()
		resp, err := ts.dev[id].Report(ctx, id, api.Report{Installed: []api.InstalledApp{}, Labels: map[string]string{"region": region}, Services: services, ProbeResults: results})
		if err != nil {
			t.Fatalf("report %s: %v", id, err)
		}
		return resp
	}
	network := func() api.ServiceState {
		t.Helper()
		d, err := ts.admin.Device(ctx, "d1")
		if err != nil || len(d.Services) != 1 {
			t.Fatalf("device d1: %+v, %v", d, err)
		}
		return d.Services[0]
	}
	report("d1", "eu", []api.ServiceState{svc})
	resp := report("d2", "eu", nil)
	if len(resp.Probes) != 1 || resp.Probes[0].Device != "d1" || resp.Probes[0].Service != "web.web" || resp.Probes[0].Addr != "127.0.0.1:8080" {
		t.Fatalf("probes for d2 = %+v, want d1's web.web tcp:8080 at 127.0.0.1:8080", resp.Probes)
	}
	if resp := report("d1", "eu", []api.ServiceState{svc}); len(resp.Probes) != 0 {
		t.Errorf("probes for d1 = %+v, want none: d2 has no checks", resp.Probes)
	}

	// Outcomes d2 was not asked for count for nothing.
	report("d2", "eu", nil,
		api.ProbeResult{Device: "d1", Service: "web.web", Check: "tcp:9999", Error: "refused"},
		api.ProbeResult{Device: "d1", Service: "web.other", Check: "tcp:8080", Error: "refused"},
		api.ProbeResult{Device: "nobody", Service: "x.y", Check: "tcp:8080", Error: "refused"})
	if s := network(); s.Network != "" {
		t.Errorf("after unasked outcomes d1's service is %q (%s), want no verdict", s.Network, s.NetworkError)
	}

	report("d2", "eu", nil, api.ProbeResult{Device: "d1", Service: "web.web", Check: "tcp:8080", Error: "dial: connection refused"})
	if s := network(); s.Network != api.ServiceUnreachable || !strings.Contains(s.NetworkError, "tcp:8080 from d2: dial: connection refused") {
		t.Errorf("after a failed probe: %q %q, want unreachable naming the check and the prober", s.Network, s.NetworkError)
	}
	// d1's own report keeps its peers' verdict.
	report("d1", "eu", []api.ServiceState{svc})
	if s := network(); s.Network != api.ServiceUnreachable {
		t.Errorf("after d1's own report: %q, want unreachable still", s.Network)
	}
	report("d2", "eu", nil, api.ProbeResult{Device: "d1", Service: "web.web", Check: "tcp:8080", OK: true})
	if s := network(); s.Network != api.ServiceReachable {
		t.Errorf("after a passing probe: %q, want reachable", s.Network)
	}
	for kind, want := range map[string]int{api.KindServiceUnreachable: 1, api.KindServiceReachable: 1} {
		evs, err := ts.admin.Events(ctx, client.EventQuery{Device: "d1", Kind: kind})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != want {
			t.Errorf("%d %s events, want %d: %+v", len(evs), kind, want, evs)
		}
	}

	// Another region: no probes.
	if resp := report("d2", "us", nil); len(resp.Probes) != 0 {
		t.Errorf("probes for d2 in another region = %+v, want none", resp.Probes)
	}
}
