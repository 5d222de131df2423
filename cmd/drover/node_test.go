package main

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/agentfile"
)

// nodeDevice is the part of `device show -o json` the node tests read.
type nodeDevice struct {
	Status struct {
		Health    string            `json:"health"`
		Facts     map[string]string `json:"facts"`
		Keepalive *struct {
			Until   time.Time `json:"until"`
			Forever bool      `json:"forever"`
		} `json:"keepalive"`
		Termination *struct {
			State   string `json:"state"`
			Delayed bool   `json:"delayed"`
		} `json:"termination"`
	} `json:"status"`
}

func (f *fleet) nodeDevice(id string) (nodeDevice, bool) {
	r := runBin(f.t, f.adminEnv(), "", "device", "show", id, "-o", "json")
	var d nodeDevice
	if r.code != 0 {
		return d, false
	}
	if err := json.Unmarshal([]byte(r.stdout), &d); err != nil {
		f.t.Fatalf("device show %s: %v\n%s", id, err, r.stdout)
	}
	return d, true
}

func (f *fleet) waitNode(id, what string, cond func(nodeDevice) bool) nodeDevice {
	f.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var last nodeDevice
	for time.Now().Before(deadline) {
		if d, ok := f.nodeDevice(id); ok {
			last = d
			if cond(d) {
				return d
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	f.t.Fatalf("device %s: %s: not reached in 20s; last: %+v", id, what, last)
	return last
}

type eventJSON struct {
	Kind     string          `json:"kind"`
	Level    string          `json:"level"`
	Priority string          `json:"priority"`
	Message  string          `json:"message"`
	Device   string          `json:"device"`
	Payload  json.RawMessage `json:"payload"`
}

func (f *fleet) events(args ...string) []eventJSON {
	f.t.Helper()
	out := f.op(append([]string{"events", "-o", "json"}, args...)...)
	var evs []eventJSON
	dec := jsonArray(f.t, out)
	for dec.More() {
		var ev eventJSON
		if err := dec.Decode(&ev); err != nil {
			f.t.Fatalf("events: %v\n%s", err, out)
		}
		evs = append(evs, ev)
	}
	return evs
}

func kinds(evs []eventJSON) []string {
	var out []string
	for _, ev := range evs {
		out = append(out, ev.Kind)
	}
	return out
}

// waitEvent waits for an event of kind from the device and returns it.
func (f *fleet) waitEvent(id, kind string) eventJSON {
	f.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		for _, ev := range f.events("--device", id, "--kind", kind) {
			return ev
		}
		time.Sleep(100 * time.Millisecond)
	}
	f.t.Fatalf("no %s event from %s in 20s; events: %v", kind, id, kinds(f.events("--device", id)))
	return eventJSON{}
}

func (a *agentProc) node(args ...string) result {
	a.f.t.Helper()
	return runBin(a.f.t, []string{"DROVER_HOME=" + a.home}, "", args...)
}

func TestNodeVerbs(t *testing.T) {
	f := newFleet(t)
	a := f.newAgent("node-1", "--labels", "role=web,rack=a1")
	a.start()
	f.waitFor("node-1", "reported", func(deviceJSON) bool { return true })

	// config: values match the facts the server has.
	d, _ := f.nodeDevice("node-1")
	for _, key := range []string{"arch", "os", "hostname", "cpus"} {
		r := a.node("config", "facts."+key)
		if r.code != 0 || strings.TrimSpace(r.stdout) != d.Status.Facts[key] {
			t.Errorf("config facts.%s = %q (exit %d, %s), want %q", key, r.stdout, r.code, r.stderr, d.Status.Facts[key])
		}
	}
	for key, want := range map[string]string{"device.id": "node-1", "device.labels.role": "web", "server.addr": f.addr} {
		if r := a.node("config", key); strings.TrimSpace(r.stdout) != want {
			t.Errorf("config %s = %q (exit %d, %s), want %q", key, r.stdout, r.code, r.stderr, want)
		}
	}
	r := a.node("config", "-o", "json")
	var all map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &all); err != nil || all["facts"] == nil || all["device"] == nil {
		t.Errorf("config -o json = %q, %v; want facts and device", r.stdout, err)
	}
	if r := a.node("config"); !strings.Contains(r.stdout, "facts:") || !strings.Contains(r.stdout, "role: web") {
		t.Errorf("config (YAML) = %q", r.stdout)
	}
	if r := a.node("config", "facts.nope"); r.code != 1 || !strings.Contains(r.stderr, `no key "facts.nope"`) || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("config facts.nope: exit %d, stderr %q; want 1 and one line", r.code, r.stderr)
	}

	// log and send, good and bad.
	for _, args := range [][]string{
		{"log", "system is now ready"},
		{"log", "disk almost full", "--level", "warn", "--priority", "low"},
		{"log", "disk full", "--level", "error"},
		{"send", "--routing-key", "app.ready", `{"ready":true}`},
	} {
		if r := a.node(args...); r.code != 0 {
			t.Fatalf("drover %v: exit %d: %s", args, r.code, r.stderr)
		}
	}
	big := filepath.Join(f.dir, "big")
	if err := os.WriteFile(big, make([]byte, 1<<20+1), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"log", "x", "--level", "fatal"}, 2, "want info, warn or error"},
		{[]string{"log", "x", "--priority", "urgent"}, 2, "want low, medium or high"},
		{[]string{"send", "--file", filepath.Join(f.dir, "missing")}, 1, "no such file"},
		{[]string{"send", "--file", big}, 1, "over the limit"},
		{[]string{"send"}, 2, "MESSAGE or --file"},
		{[]string{"keepalive", "soon"}, 2, "malformed duration"},
		{[]string{"keepalive", "1h", "--cancel"}, 2, "not both"},
	} {
		r := a.node(tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.want) || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("drover %v: exit %d, stderr %q; want exit %d and one line with %q", tc.args, r.code, r.stderr, tc.code, tc.want)
		}
	}
	var logs, sends []eventJSON
	for _, ev := range f.events("--device", "node-1") {
		switch ev.Kind {
		case "log":
			logs = append(logs, ev)
		case "send":
			sends = append(sends, ev)
		}
	}
	var got []string
	for _, ev := range logs {
		got = append(got, ev.Level+"/"+ev.Priority+" "+ev.Message)
	}
	want := []string{"info/medium system is now ready", "warn/low disk almost full", "error/high disk full"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("log events = %q, want %q", got, want)
	}
	if len(sends) != 1 {
		t.Fatalf("send events = %v, want 1", sends)
	}
	var payload struct {
		RoutingKey string `json:"routing_key"`
		Body       string `json:"body"`
	}
	if err := json.Unmarshal(sends[0].Payload, &payload); err != nil || payload.RoutingKey != "app.ready" || payload.Body != `{"ready":true}` {
		t.Errorf("send payload = %s, want routing key app.ready and the body", sends[0].Payload)
	}
	// --min-priority medium hides the low ones, as Jetpack's cluster page.
	for _, ev := range f.events("--device", "node-1", "--min-priority", "medium") {
		if ev.Priority == "low" {
			t.Errorf("events --min-priority medium shows %+v", ev)
		}
		if ev.Message == "disk almost full" {
			t.Errorf("events --min-priority medium shows the low log")
		}
	}

	// converge: nothing to do, then a failing step.
	stateFile := writeState(t, f, "node-1", "id: node-1\napps: []\n")
	f.op("state", "set", "-f", stateFile)
	if r := a.node("converge"); r.code != 0 || !strings.Contains(r.stdout, "converged") {
		t.Errorf("converge (empty state): exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	src := writeSource(t, filepath.Join(f.dir, "src", "bad"), pkgSource{
		yaml:    "group: com.example\nname: bad\nversion: 1.0.0\n",
		files:   map[string]string{"files/README": "bad\n"},
		scripts: map[string]string{"postinst": "echo cannot start >&2; exit 3"},
	})
	pkg := filepath.Join(f.dir, "bad.drover")
	f.mustOK(nil, "pkg", "build", src, "-o", pkg)
	f.op("pkg", "push", pkg)
	f.op("state", "set", "-f", writeState(t, f, "node-1", "id: node-1\napps:\n  - {name: com.example:bad, version: 1.0.0}\n"))
	r = a.node("converge")
	if r.code != 1 || !strings.Contains(r.stderr, "postinst") || !strings.Contains(r.stdout, "step-start") {
		t.Errorf("converge (failing postinst): exit %d\nstdout: %s\nstderr: %s\nwant exit 1, the steps, and the failing step", r.code, r.stdout, r.stderr)
	}

	// The agent gone: one line, exit 1.
	a.kill()
	if r := a.node("config"); r.code != 1 || !strings.Contains(r.stderr, "not running") || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("config without agent: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestHealthTermination(t *testing.T) {
	f := &fleet{t: t, dir: t.TempDir()}
	f.pki = filepath.Join(f.dir, "pki")
	f.mustOK(nil, "pki", "init", "--dir", f.pki)
	f.mustOK(nil, "pki", "issue", "--dir", f.pki, "--server", "localhost")
	f.mustOK(nil, "pki", "issue", "--dir", f.pki, "--admin", "ops")
	hookOut := filepath.Join(f.dir, "hook.json")
	hook := filepath.Join(f.dir, "terminate.sh")
	if err := os.WriteFile(hook, []byte("#!/bin/sh\ncat > "+hookOut+".tmp && mv "+hookOut+".tmp "+hookOut+"\necho terminated $1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	f.serverArgs = []string{"--termination-hook", hook}
	f.startServer()

	a := f.newAgent("sick-1", "--labels", "pool=batch", "--health-interval", "150ms", "--health-consecutive", "2")
	flag := filepath.Join(f.dir, "terminate-me")
	checks := filepath.Join(a.home, "config", "healthcheck.d")
	if err := os.MkdirAll(checks, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(checks, "10-flag"), []byte("#!/bin/sh\n[ -e "+flag+" ] && { echo asked to go; exit 254; }\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	// A check that is not executable is ignored with a warning event.
	if err := os.WriteFile(filepath.Join(checks, "20-noexec"), []byte("#!/bin/sh\nexit 254\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	a.start()
	f.waitNode("sick-1", "healthy", func(d nodeDevice) bool { return d.Status.Health == "healthy" })
	if ev := f.waitEvent("sick-1", "health-check"); !strings.Contains(ev.Message, "20-noexec") || ev.Level != "warn" {
		t.Errorf("warning for the check that is not executable = %+v", ev)
	}
	if out := f.op("device", "ls"); !strings.Contains(out, "healthy") {
		t.Errorf("device ls has no health:\n%s", out)
	}

	// A keepalive of an hour holds the termination back.
	if r := a.node("keepalive"); r.code != 0 || !strings.Contains(r.stdout, "keepalive until") {
		t.Fatalf("keepalive: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	d := f.waitNode("sick-1", "keepalive stored", func(d nodeDevice) bool { return d.Status.Keepalive != nil })
	if left := time.Until(d.Status.Keepalive.Until); left < 59*time.Minute || left > 61*time.Minute {
		t.Errorf("keepalive until %v, want about an hour from now", d.Status.Keepalive.Until)
	}
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	f.waitNode("sick-1", "termination requested and delayed", func(d nodeDevice) bool {
		return d.Status.Health == "terminate" && d.Status.Termination != nil && d.Status.Termination.State == "requested" && d.Status.Termination.Delayed
	})
	f.waitEvent("sick-1", "terminate-delayed")
	if out := f.op("device", "ls"); !strings.Contains(out, "terminate (requested)") {
		t.Errorf("device ls does not show the termination:\n%s", out)
	}

	// forever holds it too; the machine recovers and the request is cleared.
	if r := a.node("keepalive", "forever"); r.code != 0 || !strings.Contains(r.stdout, "forever") {
		t.Fatalf("keepalive forever: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if err := os.Remove(flag); err != nil {
		t.Fatal(err)
	}
	f.waitNode("sick-1", "cleared", func(d nodeDevice) bool { return d.Status.Health == "healthy" && d.Status.Termination == nil })
	f.waitEvent("sick-1", "terminate-cleared")

	// Sick again under `forever`: requested, held, no hook.
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	f.waitNode("sick-1", "held forever", func(d nodeDevice) bool {
		return d.Status.Termination != nil && d.Status.Termination.Delayed && d.Status.Keepalive != nil && d.Status.Keepalive.Forever
	})
	time.Sleep(500 * time.Millisecond) // several health runs and reports
	if _, err := os.Stat(hookOut); err == nil {
		t.Fatalf("the termination hook ran under keepalive forever")
	}

	// Cancelled: the hook runs with the device on stdin.
	if r := a.node("keepalive", "--cancel"); r.code != 0 || !strings.Contains(r.stdout, "cancelled") {
		t.Fatalf("keepalive --cancel: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	f.waitNode("sick-1", "terminated", func(d nodeDevice) bool {
		return d.Status.Termination != nil && d.Status.Termination.State == "terminated"
	})
	var in struct {
		ID     string            `json:"id"`
		Facts  map[string]string `json:"facts"`
		Labels map[string]string `json:"labels"`
	}
	if err := json.Unmarshal([]byte(readFile(t, hookOut)), &in); err != nil {
		t.Fatalf("hook input: %v", err)
	}
	if in.ID != "sick-1" || in.Labels["pool"] != "batch" || in.Facts["os"] == "" {
		t.Errorf("hook input = %+v, want the device's id, labels and facts", in)
	}
	var order []string
	for _, ev := range f.events("--device", "sick-1") {
		if strings.HasPrefix(ev.Kind, "termin") || ev.Kind == "keepalive" {
			order = append(order, ev.Kind)
		}
	}
	if got := strings.Join(order, " "); !strings.HasSuffix(got, "keepalive terminating terminated") || !strings.Contains(got, "terminate-requested terminate-delayed") {
		t.Errorf("termination events = %s", got)
	}
}

var updateGolden = flag.Bool("update-golden", false, "rewrite cmd/drover/testdata/*.golden")

func TestAgentInstallDryRun(t *testing.T) {
	dest := t.TempDir()
	args := []string{"agent", "install", "--home", "/opt/drover", "--addr", "https://fleet.example:8443",
		"--ca-cert", "/etc/drover/ca.crt", "--client-cert", "/etc/drover/node-1.crt", "--client-key", "/etc/drover/node-1.key",
		"--labels", "rack=a1", "--tags", "edge,lab", "--health-interval", "30s", "--health-consecutive", "3",
		"--user", "drover", "--create-user", "--bin", "/usr/local/bin/drover"}
	r := runBin(t, nil, "", append(args, "--dry-run")...)
	if r.code != 0 {
		t.Fatalf("agent install --dry-run: exit %d: %s", r.code, r.stderr)
	}
	path := filepath.Join("testdata", "agent-install.golden")
	if *updateGolden {
		if err := os.WriteFile(path, []byte(r.stdout), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if want := readFile(t, path); r.stdout != want {
		t.Errorf("agent install --dry-run printed:\n%s\nwant (%s):\n%s", r.stdout, path, want)
	}

	// The same into an image folder writes the files it printed.
	r = runBin(t, nil, "", "agent", "install", "--home", "/opt/drover", "--addr", "https://h:1", "--ca-cert", "ca.crt",
		"--client-cert", "n.crt", "--client-key", "n.key", "--bin", "/usr/bin/drover", "--dest-dir", dest)
	if r.code != 0 {
		t.Fatalf("agent install --dest-dir: exit %d: %s", r.code, r.stderr)
	}
	unit := readFile(t, filepath.Join(dest, "etc/systemd/system/drover-agent.service"))
	if !strings.Contains(unit, "ExecStart=/usr/bin/drover agent --home /opt/drover\n") || !strings.Contains(unit, "Restart=always") {
		t.Errorf("unit written:\n%s\nwant just --home and a restart", unit)
	}
	// The flags are in agent.yaml, paths made absolute, and the agent takes it.
	cwd, _ := os.Getwd()
	agentYAML := readFile(t, filepath.Join(dest, "opt/drover/config/agent.yaml"))
	if !strings.Contains(agentYAML, "client_cert: "+filepath.Join(cwd, "n.crt")+"\n") || !strings.Contains(agentYAML, "addr: https://h:1\n") {
		t.Errorf("agent.yaml written:\n%s\nwant the flags with absolute certificate paths", agentYAML)
	}
	if _, err := agentfile.Parse("agent.yaml", []byte(agentYAML), "/opt/drover"); err != nil {
		t.Errorf("agent.yaml written is refused: %v", err)
	}
	if env := readFile(t, filepath.Join(dest, "etc/default/drover-agent")); !strings.Contains(env, "DROVER_HOME=/opt/drover") {
		t.Errorf("environment file = %q", env)
	}
	if r := runBin(t, nil, "", "agent", "uninstall", "--home", "/opt/drover", "--dest-dir", dest); r.code != 0 {
		t.Fatalf("agent uninstall: exit %d: %s", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dest, "etc/systemd/system/drover-agent.service")); !os.IsNotExist(err) {
		t.Errorf("unit after uninstall: %v, want it gone", err)
	}
	// Bad usage: no server flags.
	if r := runBin(t, nil, "", "agent", "install", "--home", "/opt/drover", "--dry-run"); r.code != 2 {
		t.Errorf("agent install without --addr: exit %d, want 2", r.code)
	}
}
