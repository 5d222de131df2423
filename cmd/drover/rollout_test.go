package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/api"
)

// rolloutSource is a package with one service whose health command
// passes, or, when bad, fails from the start on: the service starts and
// runs, and is unhealthy.
func rolloutSource(version string, bad bool) pkgSource {
	health := "#!/bin/sh\necho ok\n"
	if bad {
		health = "#!/bin/sh\necho \"" + version + ": /healthz answers 500\"\nexit 1\n"
	}
	return pkgSource{
		yaml: `group: com.example
name: app
version: ` + version + `
services:
  - {name: app, start: bin/app, health: bin/health, restart: never}
`,
		files: map[string]string{
			"files/bin/app":    "#!/bin/sh\necho \"app " + version + "\"\ntrap 'exit 0' TERM\nwhile :; do sleep 0.1; done\n",
			"files/bin/health": health,
		},
	}
}

// rolloutView is `rollout status -o json`.
type rolloutView struct {
	Name    string `json:"name"`
	Phase   string `json:"phase"`
	Wave    int    `json:"wave"`
	Reason  string `json:"reason"`
	Devices []struct {
		ID      string `json:"id"`
		Wave    int    `json:"wave"`
		Outcome string `json:"outcome"`
		Reason  string `json:"reason"`
	} `json:"devices"`
	Stages []struct {
		Soaking time.Time `json:"soaking"`
	} `json:"stages"`
}

func (f *fleet) rollout(name string) rolloutView {
	f.t.Helper()
	var v rolloutView
	out := f.op("rollout", "status", name, "-o", "json")
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		f.t.Fatalf("rollout status -o json: %v\n%s", err, out)
	}
	return v
}

func (f *fleet) waitRollout(name, what string, cond func(rolloutView) bool) rolloutView {
	f.t.Helper()
	deadline := time.Now().Add(40 * time.Second)
	var last rolloutView
	for time.Now().Before(deadline) {
		if last = f.rollout(name); cond(last) {
			return last
		}
		time.Sleep(100 * time.Millisecond)
	}
	f.t.Fatalf("rollout %s: %s: not reached in 40s; last %+v\nserver log tail:\n%s", name, what, last, tail(f.logs.String(), 3000))
	return last
}

// TestRolloutFleet: five agents with different labels. A good rollout
// goes to done; a bad build (its service's health check fails once it
// runs) pauses after the first wave, reached only that wave's device,
// and abort --revert brings it back; a state set of its documents is
// refused meanwhile; a gate hook pauses a rollout with its reason, and
// a rollout goes on after a server restart in its middle. The device
// outside the rollouts is never touched.
func TestRolloutFleet(t *testing.T) {
	f := newFleet(t)
	f.pushSources(map[string]pkgSource{
		"app-1.0.0": rolloutSource("1.0.0", false), "app-1.1.0": rolloutSource("1.1.0", false),
		"app-1.2.0": rolloutSource("1.2.0", true), "app-1.3.0": rolloutSource("1.3.0", false),
	})
	labels := map[string]string{
		"r1": "env=prod,role=web,region=eu", "r2": "env=prod,role=web,region=us", "r3": "env=prod,role=edge,region=eu",
		"r4": "env=prod,role=edge,region=us", "r5": "env=dev,role=web,region=eu",
	}
	ids := []string{"r1", "r2", "r3", "r4", "r5"}
	prod := ids[:4]
	agents := map[string]*agentProc{}
	for _, id := range ids {
		a := f.newAgent(id, "--labels", labels[id], "--health-interval", "200ms")
		killServices(t, filepath.Join(f.dir, "agents", id, "runtime"))
		a.start()
		agents[id] = a
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent r1 log tail:\n%s", tail(agents["r1"].logs.String(), 4000))
		}
	})
	docs := func(version string, ids ...string) string {
		var b strings.Builder
		for _, id := range ids {
			fmt.Fprintf(&b, "---\nid: %s\napps:\n  - {name: com.example:app, version: %s}\n", id, version)
		}
		path := filepath.Join(f.dir, "docs-"+version+".yaml")
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	for _, id := range ids {
		f.waitFor(id, "reported", func(d deviceJSON) bool { return d.ID == id })
	}
	f.op("state", "set", "-f", docs("1.0.0", ids...))
	for _, id := range ids {
		f.waitConverged(id, "com.example:app=1.0.0")
	}

	// A dry run shows the waves and changes nothing.
	dry := f.op("rollout", "start", "-f", docs("1.1.0", prod...), "--waves", "1,50%,100%", "--dry-run")
	for _, want := range []string{"wave 1/3 (1): 1 devices", "r1: upgrade com.example:app 1.0.0 -> 1.1.0", "wave 3/3 (100%): 2 devices", "4 devices change"} {
		if !strings.Contains(dry, want) {
			t.Errorf("dry run lacks %q:\n%s", want, dry)
		}
	}
	if ls := f.op("rollout", "ls", "-o", "json"); strings.TrimSpace(ls) != "[]" {
		t.Errorf("a dry run stored a rollout: %s", ls)
	}

	// 1. A good rollout, waited for.
	r := runBin(t, f.adminEnv(), "", "rollout", "start", "-f", docs("1.1.0", prod...), "--name", "good",
		"--waves", "1,50%,100%", "--soak", "1s", "--wave-timeout", "30s", "--wait")
	if r.code != 0 || strings.TrimSpace(r.stdout) != "good" {
		t.Fatalf("rollout start --wait: exit %d\n%s\n%s\nserver log:\n%s", r.code, r.stdout, r.stderr, tail(f.logs.String(), 3000))
	}
	for _, id := range prod {
		f.waitConverged(id, "com.example:app=1.1.0")
	}
	if v := f.rollout("good"); v.Phase != api.RolloutDone {
		t.Fatalf("good: %+v", v)
	}

	// 2. A bad build: its first wave fails, the rollout pauses there.
	f.op("rollout", "start", "-f", docs("1.2.0", prod...), "--name", "bad", "--waves", "1,100%", "--soak", "5s", "--wave-timeout", "30s")
	v := f.waitRollout("bad", "paused", func(v rolloutView) bool { return v.Phase != api.RolloutRunning })
	if v.Phase != api.RolloutPaused || v.Devices[0].ID != "r1" || v.Devices[0].Outcome != api.OutcomeFailed ||
		!strings.Contains(v.Devices[0].Reason, "unhealthy") || !strings.Contains(v.Reason, "r1") {
		t.Fatalf("bad rollout: %+v", v)
	}
	for _, d := range v.Devices[1:] {
		if d.Outcome != api.OutcomePending {
			t.Errorf("%s: %s, want pending", d.ID, d.Outcome)
		}
	}
	status := f.op("rollout", "status", "bad")
	for _, want := range []string{"phase:    paused", "r1 ", "failed", "unhealthy", "pending"} {
		if !strings.Contains(status, want) {
			t.Errorf("rollout status lacks %q:\n%s", want, status)
		}
	}
	// While it holds the documents, state set of them is refused.
	rs := runBin(t, f.adminEnv(), "", "state", "set", "-f", docs("1.3.0", "r2"))
	if rs.code != 1 || !strings.Contains(rs.stderr, "rollout bad") {
		t.Errorf("state set during the rollout: exit %d %s", rs.code, rs.stderr)
	}
	// abort --revert brings r1 back.
	f.op("rollout", "abort", "bad", "--revert")
	f.waitConverged("r1", "com.example:app=1.1.0")
	if v := f.rollout("bad"); v.Phase != api.RolloutAborted || v.Devices[0].Outcome != api.OutcomeReverted {
		t.Errorf("after abort --revert: %+v", v)
	}
	// Only r1 ever ran 1.2.0.
	for _, id := range ids[1:] {
		if out := f.op("events", "--device", id, "-o", "json"); strings.Contains(out, "1.2.0") {
			t.Errorf("%s has events of 1.2.0:\n%s", id, out)
		}
	}
	if out := f.op("events", "--device", "r1", "--kind", "step-done", "-o", "json"); !strings.Contains(out, "1.2.0") {
		t.Errorf("r1 never installed 1.2.0? its step-done events:\n%s", out)
	}
	if out := f.op("events", "--kind", "rollout-paused", "-o", "json"); !strings.Contains(out, `"priority": "high"`) && !strings.Contains(out, `"priority":"high"`) {
		t.Errorf("rollout-paused events:\n%s", out)
	}

	// 3. A gate hook that refuses, then a restart in the middle.
	gate := filepath.Join(f.dir, "data", "hooks", "rollout-gate.d")
	if err := os.MkdirAll(gate, 0o755); err != nil {
		t.Fatal(err)
	}
	freeze := filepath.Join(gate, "freeze")
	if err := os.WriteFile(freeze, []byte("#!/bin/sh\necho 'change freeze until Monday' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	f.op("rollout", "start", "-f", docs("1.3.0", prod...), "--name", "gated", "--waves", "1,100%", "--soak", "4s", "--wave-timeout", "30s")
	v = f.waitRollout("gated", "paused by its gate", func(v rolloutView) bool { return v.Phase == api.RolloutPaused })
	if !strings.Contains(v.Reason, "change freeze until Monday") || v.Devices[0].Outcome != api.OutcomePending {
		t.Errorf("gated: %+v", v)
	}
	if st := f.op("rollout", "status", "gated"); !strings.Contains(st, "change freeze until Monday") {
		t.Errorf("status lacks the gate's reason:\n%s", st)
	}
	if out := f.op("events", "--kind", "rollout-paused", "-o", "json"); !strings.Contains(out, "change freeze until Monday") {
		t.Errorf("rollout-paused event lacks the gate's reason:\n%s", out)
	}
	if err := os.Remove(freeze); err != nil {
		t.Fatal(err)
	}
	f.op("rollout", "resume", "gated")
	f.waitRollout("gated", "first wave soaking", func(v rolloutView) bool { return v.Wave == 0 && !v.Stages[0].Soaking.IsZero() })
	f.restartServer()
	v = f.waitRollout("gated", "done after the restart", func(v rolloutView) bool { return v.Phase != api.RolloutRunning })
	if v.Phase != api.RolloutDone {
		t.Fatalf("gated after the restart: %+v", v)
	}
	for _, id := range prod {
		f.waitConverged(id, "com.example:app=1.3.0")
	}
	// The device outside every rollout was never touched.
	if d, _ := f.device("r5"); len(d.Apps) != 1 || d.Apps[0].Version != "1.0.0" {
		t.Errorf("r5: %+v", d.Apps)
	}
	if out := f.op("events", "--device", "r5", "-o", "json"); strings.Contains(out, "1.1.0") || strings.Contains(out, "1.3.0") {
		t.Errorf("r5 saw a rollout's version:\n%s", out)
	}
	ls := f.op("rollout", "ls")
	for _, want := range []string{"NAME", "good", "done", "bad", "aborted", "gated"} {
		if !strings.Contains(ls, want) {
			t.Errorf("rollout ls lacks %q:\n%s", want, ls)
		}
	}
}
