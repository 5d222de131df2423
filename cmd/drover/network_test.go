package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// freePort returns a loopback port nobody listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// serviceNet is a service's network verdict in `device show -o json`.
type serviceNet struct {
	Service      string `json:"service"`
	State        string `json:"state"`
	Network      string `json:"network"`
	NetworkError string `json:"network_error"`
}

func (f *fleet) serviceNets(id string) map[string]serviceNet {
	f.t.Helper()
	r := runBin(f.t, f.adminEnv(), "", "device", "show", id, "-o", "json")
	var d struct {
		Status struct {
			Services []serviceNet `json:"services"`
		} `json:"status"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &d) != nil {
		return nil
	}
	out := map[string]serviceNet{}
	for _, s := range d.Status.Services {
		out[s.Service] = s
	}
	return out
}

// TestNetworkChecks: a package's service declares network checks; its
// device's peer (same region) probes them: a real HTTP server passes its
// tcp and http checks, a service that listens nowhere fails its tcp
// check and shows as unreachable, with an event.
func TestNetworkChecks(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 not in PATH: the test's TCP service is python3 -m http.server")
	}
	up, down := freePort(t), freePort(t)
	f := newFleet(t)
	src := writeSource(t, filepath.Join(f.dir, "src", "web"), pkgSource{
		yaml: fmt.Sprintf(`group: com.example
name: web
version: 1.0.0
services:
  - name: web
    start: bin/web
    net-checks:
      - {tcp: %[1]d}
      - {http: /, port: %[1]d}
  - name: dark
    start: bin/dark
    net-checks:
      - {tcp: %[2]d}
`, up, down),
		files: map[string]string{
			"files/bin/web":  fmt.Sprintf("#!/bin/sh\ncd \"$(mktemp -d)\" && exec python3 -m http.server %d --bind 127.0.0.1\n", up),
			"files/bin/dark": "#!/bin/sh\nexec sleep 3600\n",
		},
	})
	pkgFile := filepath.Join(f.dir, "web.drover")
	f.mustOK(nil, "pkg", "build", src, "-o", pkgFile)
	f.op("pkg", "push", pkgFile)

	a := f.newAgent("net-a", "--labels", "region=eu")
	b := f.newAgent("net-b", "--labels", "region=eu")
	a.start()
	b.start()
	f.op("state", "set", "-f", writeState(t, f, "net-a", "id: net-a\napps:\n  - name: com.example:web\n    version: 1.0.0\n"))
	f.waitConverged("net-a", "com.example:web=1.0.0")

	deadline := time.Now().Add(60 * time.Second)
	var last map[string]serviceNet
	for time.Now().Before(deadline) {
		last = f.serviceNets("net-a")
		if last["web"].Network == "reachable" && last["dark"].Network == "unreachable" {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if last["web"].Network != "reachable" || last["web"].State != "running" {
		t.Errorf("web: %+v, want running and reachable", last["web"])
	}
	if s := last["dark"]; s.Network != "unreachable" || s.State != "running" || !strings.Contains(s.NetworkError, fmt.Sprintf("tcp:%d from net-b", down)) || !strings.Contains(s.NetworkError, "refused") {
		t.Errorf("dark: %+v, want running, unreachable, the check and the prober named", s)
	}
	out := f.op("events", "--device", "net-a", "--kind", "service-unreachable", "-o", "json")
	type event struct {
		Priority string `json:"priority"`
		Message  string `json:"message"`
	}
	var evs []event // -o json of a list is one JSON array
	if err := json.Unmarshal([]byte(out), &evs); err != nil {
		t.Fatalf("events -o json: %v\n%s", err, out)
	}
	if len(evs) != 1 || !strings.Contains(evs[0].Message, "web.dark") || evs[0].Priority != "high" {
		t.Errorf("service-unreachable events: want one for web.dark at high priority:\n%s", out)
	}
	// The prober's own services were never checked: it has none.
	if got := f.serviceNets("net-b"); len(got) != 0 {
		t.Errorf("net-b services = %+v, want none", got)
	}
	yaml := f.op("device", "show", "net-a")
	if !strings.Contains(yaml, "network: unreachable") {
		t.Errorf("device show net-a does not say unreachable:\n%s", yaml)
	}
}
