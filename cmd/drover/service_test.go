package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/api"
)

// webSource is a package with two parameters, a template and one
// service: a shell program that records its version and port in data/
// (what it "serves") and sleeps.
func webSource(version string) pkgSource {
	return pkgSource{
		yaml: `group: com.example
name: web
version: ` + version + `
params:
  port: {type: int, default: 8080, min: 1, max: 65535, description: "listen port"}
  colour: {type: string, default: red, allowed: [red, blue]}
templates:
  - {src: templates/app.conf.tmpl, dest: etc/app.conf}
services:
  - {name: web, start: bin/web, restart: always}
`,
		files: map[string]string{
			"templates/app.conf.tmpl": "port={{.Params.port}} colour={{.Params.colour}} instance={{.Instance}} version={{.Package.Version}} env={{.Device.Labels.env}}\n",
			"files/bin/web": `#!/bin/sh
for a in "$@"; do case "$a" in --port=*) port="${a#--port=}";; esac; done
echo "` + version + ` $port" > data/served
echo "web ` + version + ` listening on $port"
trap 'exit 0' TERM
while :; do sleep 0.1; done
`,
		},
	}
}

// svcView is the services part of `device show -o json`.
type svcView struct {
	Status struct {
		Converged bool               `json:"converged"`
		Error     string             `json:"error"`
		Services  []api.ServiceState `json:"services"`
	} `json:"status"`
	Apps []struct {
		Name, Version, Instance string
	} `json:"apps"`
}

func (f *fleet) services(id string) svcView {
	r := runBin(f.t, f.adminEnv(), "", "device", "show", id, "-o", "json")
	var v svcView
	if r.code == 0 {
		_ = json.Unmarshal([]byte(r.stdout), &v)
	}
	return v
}

func (f *fleet) waitServices(id, what string, cond func(svcView) bool) svcView {
	f.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var last svcView
	for time.Now().Before(deadline) {
		last = f.services(id)
		if cond(last) {
			return last
		}
		time.Sleep(50 * time.Millisecond)
	}
	f.t.Fatalf("device %s: %s: not within 20s; last: %+v", id, what, last)
	return last
}

func svcOf(v svcView, coord string) api.ServiceState {
	for _, s := range v.Status.Services {
		if s.Coordinate == coord {
			return s
		}
	}
	return api.ServiceState{}
}

func pidIn(t *testing.T, runtime, coord string) int {
	b, err := os.ReadFile(filepath.Join(runtime, coord, "run", "start.pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// killServices kills what the test's agents left running: services
// outlive their agent on purpose.
func killServices(t *testing.T, runtime string) {
	t.Cleanup(func() {
		pids, _ := filepath.Glob(filepath.Join(runtime, "*", "run", "start.pid"))
		for _, p := range pids {
			b, _ := os.ReadFile(p)
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
				_ = syscall.Kill(-pid, syscall.SIGKILL)
			}
		}
	})
}

func TestServicesInstancesParams(t *testing.T) {
	f := newFleet(t)
	var files []string
	for _, v := range []string{"1.0.0", "1.1.0"} {
		dir := writeSource(t, filepath.Join(f.dir, "web-"+v), webSource(v))
		out := filepath.Join(f.dir, "web-"+v+".drover")
		f.mustOK(nil, "pkg", "build", dir, "-o", out)
		files = append(files, out)
	}
	f.op(append([]string{"pkg", "push"}, files...)...)

	a := f.newAgent("n1", "--labels", "env=prod,region=trd")
	runtime := filepath.Join(f.dir, "agents", "n1", "runtime")
	killServices(t, runtime)
	a.start()

	// A bad value is refused at state set, naming the parameter. The
	// device must have reported first for the server to know its build.
	f.waitFor("n1", "reported", func(d deviceJSON) bool { return d.ID == "n1" })
	bad := runBin(t, f.adminEnv(), "", "state", "set", "-f", writeState(t, f, "n1", "id: n1\napps:\n  - {name: com.example:web, version: 1.0.0, instance: blue, params: {port: 70000}}\n"))
	if bad.code != 1 || !strings.Contains(bad.stderr, "parameter port") || !strings.Contains(bad.stderr, "above max 65535") {
		t.Fatalf("state set with port 70000: exit %d, stderr %q; want 1 naming the parameter", bad.code, bad.stderr)
	}
	bad = runBin(t, f.adminEnv(), "", "param", "set", "com.example:web", "port=eighty")
	if bad.code != 1 || !strings.Contains(bad.stderr, "parameter port") {
		t.Fatalf("param set port=eighty: exit %d, stderr %q", bad.code, bad.stderr)
	}
	bad = runBin(t, f.adminEnv(), "", "param", "set", "com.example:web", "colour=green")
	if bad.code != 1 || !strings.Contains(bad.stderr, "colour") {
		t.Fatalf("param set colour=green: exit %d, stderr %q", bad.code, bad.stderr)
	}

	// Two instances of one package, each with its values.
	two := func(bluePort int, greenVersion, extra string) string {
		return fmt.Sprintf("id: n1\napps:\n  - {name: com.example:web, version: 1.0.0, instance: blue, params: {port: %d}%s}\n  - {name: com.example:web, version: %s, instance: green, params: {port: 8082}}\n", bluePort, extra, greenVersion)
	}
	f.op("state", "set", "-f", writeState(t, f, "n1", two(8081, "1.0.0", "")))
	const blue, green = "blue.web.prod.trd", "green.web.prod.trd"
	running := func(v svcView) bool {
		return v.Status.Converged && svcOf(v, blue).State == api.ServiceRunning && svcOf(v, green).State == api.ServiceRunning
	}
	f.waitServices("n1", "both instances running", running)
	served := func(coord string) string {
		b, _ := os.ReadFile(filepath.Join(runtime, coord, "data", "served"))
		return strings.TrimSpace(string(b))
	}
	waitServed := func(coord, want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for served(coord) != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s serves %q, want %q", coord, served(coord), want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitServed(blue, "1.0.0 8081")
	waitServed(green, "1.0.0 8082")
	conf := filepath.Join(a.software, "com", "example", "web@blue", "1.0.0", "etc", "app.conf")
	if got := readFile(t, conf); got != "port=8081 colour=red instance=blue version=1.0.0 env=prod\n" {
		t.Errorf("rendered app.conf = %q", got)
	}
	for _, sub := range []string{"log", "etc", "console", "data", "run"} {
		if _, err := os.Stat(filepath.Join(runtime, blue, sub)); err != nil {
			t.Errorf("runtime dir: %v", err)
		}
	}
	if c := readFile(t, filepath.Join(runtime, blue, "console", "stdout.log")); !strings.Contains(c, "listening on 8081") {
		t.Errorf("console/stdout.log = %q", c)
	}
	bluePID, greenPID := pidIn(t, runtime, blue), pidIn(t, runtime, green)

	// The node-local verb lists them too.
	ls := f.mustOK(nil, "service", "ls", "--home", a.home)
	if !strings.Contains(ls, blue) || !strings.Contains(ls, green) || !strings.Contains(ls, "running") {
		t.Errorf("service ls:\n%s", ls)
	}

	// A change of blue's values alone: reconfigured and restarted, not
	// reinstalled; green is left alone.
	f.op("state", "set", "-f", writeState(t, f, "n1", two(8091, "1.0.0", "")))
	waitServed(blue, "1.0.0 8091")
	f.waitServices("n1", "converged after reconfigure", running)
	if got := readFile(t, conf); !strings.Contains(got, "port=8091") {
		t.Errorf("app.conf after reconfigure = %q", got)
	}
	if p := pidIn(t, runtime, blue); p == bluePID || p == 0 {
		t.Errorf("blue pid %d after reconfigure, want a new one (was %d)", p, bluePID)
	}
	if p := pidIn(t, runtime, green); p != greenPID {
		t.Errorf("green pid %d after blue's reconfigure, want unchanged %d", p, greenPID)
	}
	if logs := a.logs.String(); strings.Contains(logs, "action=reinstall") {
		t.Errorf("a reconfigure reinstalled")
	}

	// A fleet-wide value reaches both instances.
	f.op("param", "set", "com.example:web", "colour=blue")
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(readFile(t, conf), "colour=blue") {
		if time.Now().After(deadline) {
			t.Fatalf("fleet value not rendered: %q", readFile(t, conf))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := f.op("param", "get", "com.example:web", "-o", "json"); !strings.Contains(got, `"colour": "blue"`) {
		t.Errorf("param get = %s", got)
	}

	// Upgrade green: its service restarts on the new version.
	greenPID = pidIn(t, runtime, green)
	f.op("state", "set", "-f", writeState(t, f, "n1", two(8091, "1.1.0", "")))
	waitServed(green, "1.1.0 8082")
	v := f.waitServices("n1", "green on 1.1.0", func(v svcView) bool { return running(v) && svcOf(v, green).Version == "1.1.0" })
	if p := svcOf(v, green).PID; p == greenPID {
		t.Errorf("green kept pid %d across the upgrade", p)
	}

	// kill -9 of the service: the agent restarts it.
	bluePID = pidIn(t, runtime, blue)
	if err := syscall.Kill(bluePID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	f.waitServices("n1", "blue restarted after kill -9", func(v svcView) bool {
		s := svcOf(v, blue)
		return s.State == api.ServiceRunning && s.PID != bluePID && s.PID != 0 && s.Restarts >= 1
	})

	// Removal keeps data/; with purge: true it goes too.
	f.op("state", "set", "-f", writeState(t, f, "n1", two(8091, "1.1.0", ", purge: true")))
	f.waitServices("n1", "converged with purge flag", func(v svcView) bool { return v.Status.Converged })
	f.op("state", "set", "-f", writeState(t, f, "n1", "id: n1\napps: []\n"))
	f.waitServices("n1", "both removed", func(v svcView) bool { return v.Status.Converged && len(v.Status.Services) == 0 && len(v.Apps) == 0 })
	ents, _ := os.ReadDir(filepath.Join(runtime, green))
	if len(ents) != 1 || ents[0].Name() != "data" || served(green) != "1.1.0 8082" {
		t.Errorf("green's runtime dir after removal holds %v, want data/ only, with its data", ents)
	}
	if _, err := os.Stat(filepath.Join(runtime, blue)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("blue's runtime dir after a purge: %v, want gone", err)
	}
	for _, pid := range []int{pidIn(t, runtime, blue), bluePID} {
		if pid > 0 && syscall.Kill(pid, 0) == nil {
			t.Errorf("pid %d still alive after removal", pid)
		}
	}
}
