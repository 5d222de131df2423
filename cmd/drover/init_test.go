package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// waitNode polls until the agent answers on its local socket.
func waitNode(t *testing.T, a *agentProc) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if a.node("config").code == 0 {
			return
		}
	}
	t.Fatalf("agent %s: local socket not up in 30s\n%s", a.id, tail(a.logs.String(), 3000))
}

// initEvents returns the device's events of kind, decoded from
// `drover events -o json`.
func initEvents(t *testing.T, f *fleet, id, kind string) []map[string]any {
	t.Helper()
	out := []map[string]any{}
	// -o json of a list is one JSON array.
	if err := json.Unmarshal([]byte(f.op("events", "--device", id, "--kind", kind, "-o", "json")), &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// marksOf returns the lines of the marks file about device id.
func marksOf(t *testing.T, path, id string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if before, ok := strings.CutSuffix(l, " on "+id); ok {
			out = append(out, before)
		}
	}
	return out
}

// TestInitEntries drives a group's init entries with the real binary: two
// agents join a group with an init entry and an app; the init program
// runs once on each, before the app is installed, its output in the log
// and in events; a restart runs nothing again; a new init build runs
// again; a failing init entry stops the convergence before the apps, and
// `drover converge` runs it again after the fix.
func TestInitEntries(t *testing.T) {
	f := newFleet(t)
	marks := filepath.Join(f.dir, "marks")
	allow := filepath.Join(f.dir, "allow-join")
	build := func(name, version string, p pkgSource) string {
		p.yaml = "group: com.example\nname: " + name + "\nversion: " + version + "\n"
		dir := writeSource(t, filepath.Join(f.dir, "src", name+"-"+version), p)
		out := filepath.Join(f.dir, name+"-"+version+".drover")
		f.mustOK(nil, "pkg", "build", dir, "-o", out)
		return out
	}
	join := func(version, extra string) string {
		return build("join", version, pkgSource{files: map[string]string{"files/bin/join": fmt.Sprintf(`#!/bin/sh
%s
echo "joining $DROVER_GROUP as $DROVER_DEVICE with $DROVER_PACKAGE"
test -f "$DROVER_PREFIX/bin/join" || exit 9
echo "init $DROVER_VERSION of $DROVER_GROUP on $DROVER_DEVICE" >> %q
`, extra, marks)}})
	}
	app := func(version string) string {
		return build("app", version, pkgSource{
			files:   map[string]string{"files/README": "app " + version + "\n"},
			scripts: map[string]string{"postinst": fmt.Sprintf(`echo "postinst app $DROVER_VERSION on $DROVER_DEVICE" >> %q`, marks)},
		})
	}
	f.op("pkg", "push", join("1.0.0", ""), app("1.0.0"), app("1.1.0"))

	// Validation: one line, exit 1, nothing stored.
	for _, c := range []struct{ what, yaml, want string }{
		{"absolute run", "init:\n  - {name: com.example:join, version: 1.0.0, run: /bin/join}\n", "run: path \"/bin/join\" is absolute"},
		{"run with ..", "init:\n  - {name: com.example:join, version: 1.0.0, run: ../bin/join}\n", `has a ".." element`},
		{"run not in the build", "init:\n  - {name: com.example:join, version: 1.0.0, run: bin/missing}\n", "bin/missing is not a file of the package"},
		{"run not executable", "init:\n  - {name: com.example:app, version: 1.0.0, run: README}\n", "README is not executable"},
		{"unknown package", "init:\n  - {name: com.example:nope, version: 1.0.0, run: bin/join}\n", "com.example:nope: unknown package"},
		{"no version", "init:\n  - {name: com.example:join, version: \"^2\", run: bin/join}\n", `no version matches "^2"`},
		{"no run", "init:\n  - {name: com.example:join, version: 1.0.0}\n", "init com.example:join: no run"},
	} {
		file := writeState(t, f, "bad", "group: edge\nselector: role=edge\napps: []\n"+c.yaml)
		r := runBin(t, f.adminEnv(), "", "state", "set", "-f", file)
		if r.code != 1 || !strings.Contains(r.stderr, c.want) || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("%s: state set: exit %d, stderr %q; want exit 1 and one line with %q", c.what, r.code, r.stderr, c.want)
		}
	}
	if r := runBin(t, f.adminEnv(), "", "state", "set", "-f", writeState(t, f, "bad", "id: x\napps: []\ninit:\n  - {name: com.example:join, run: bin/join}\n")); r.code != 1 || !strings.Contains(r.stderr, "a device document has no init entries") {
		t.Errorf("init in a device document: exit %d, stderr %q", r.code, r.stderr)
	}
	if ls := f.op("state", "ls"); strings.Contains(ls, "edge") {
		t.Fatalf("a refused state set stored a document:\n%s", ls)
	}

	agents := map[string]*agentProc{"edge-1": f.newAgent("edge-1", "--labels", "role=edge"), "edge-2": f.newAgent("edge-2", "--labels", "role=edge")}
	for id, a := range agents {
		a.start()
		f.waitFor(id, "reported", func(d deviceJSON) bool { return len(d.SystemTags) > 0 })
	}
	group := func(join, app string) string {
		return writeState(t, f, "edge", fmt.Sprintf(`group: edge
selector: role=edge
init:
  - {name: com.example:join, version: %q, run: bin/join}
apps:
  - {name: com.example:app, version: %q}
`, join, app))
	}
	edge := group("^1.0", "1.0.0")
	plan := f.op("plan", "-f", edge)
	for _, want := range []string{"init        com.example:join 1.0.0 run bin/join (group edge, not yet run here)", "install     com.example:app 1.0.0", "2 devices change"} {
		if !strings.Contains(plan, want) {
			t.Errorf("plan lacks %q:\n%s", want, plan)
		}
	}
	if out := f.op("state", "set", "-f", edge); !strings.Contains(out, `group edge set (1 apps, 1 init, selector "role=edge")`) {
		t.Errorf("state set:\n%s", out)
	}
	for id := range agents {
		f.waitConverged(id, "com.example:app=1.0.0")
		if got, want := strings.Join(marksOf(t, marks, id), "|"), "init 1.0.0 of edge|postinst app 1.0.0"; got != want {
			t.Errorf("%s: marks %q, want %q (init once, before the app)", id, got, want)
		}
		log := readFile(t, filepath.Join(agents[id].home, "logs", "init-edge-com.example:join.log"))
		if !strings.Contains(log, "joining edge as "+id+" with com.example:join:1.0.0") {
			t.Errorf("%s: init log lacks the program's output:\n%s", id, log)
		}
		done := initEvents(t, f, id, "init-done")
		if len(done) != 1 || !strings.Contains(fmt.Sprint(done[0]["payload"]), "joining edge as "+id) {
			t.Errorf("%s: init-done events %v, want one with the output", id, done)
		}
		if evs := initEvents(t, f, id, "init-start"); len(evs) != 1 {
			t.Errorf("%s: init-start events %v, want one", id, evs)
		}
		if _, err := os.Stat(filepath.Join(agents[id].home, "system", "init")); err != nil {
			t.Errorf("%s: init scratch root: %v", id, err)
		}
		if left, _ := os.ReadDir(filepath.Join(agents[id].home, "system", "init")); len(left) != 0 {
			t.Errorf("%s: scratch folders left after the run: %v", id, left)
		}
	}
	if show := f.op("device", "show", "edge-2"); !strings.Contains(show, "init:") || !strings.Contains(show, "run: bin/join") || !strings.Contains(show, "group: edge") {
		t.Errorf("device show lacks the init entry done:\n%s", show)
	}
	get := f.op("state", "get", "--group", "edge")
	for _, want := range []string{"init:", "run: bin/join", "constraint: ^1.0", "init: true"} {
		if !strings.Contains(get, want) {
			t.Errorf("state get --group edge lacks %q:\n%s", want, get)
		}
	}
	if ls := f.op("state", "ls"); !strings.Contains(ls, "com.example:join ^1.0=1.0.0 bin/join") || !strings.Contains(ls, "INIT") {
		t.Errorf("state ls lacks the init entry:\n%s", ls)
	}
	if plan := runBin(t, f.adminEnv(), "", "plan", "-f", edge); strings.Contains(plan.stdout, "init ") {
		t.Errorf("plan after the runs still shows init steps:\n%s", plan.stdout)
	}

	// A restart runs nothing again.
	a1 := agents["edge-1"]
	a1.kill()
	a1.start()
	waitNode(t, a1)
	if r := a1.node("converge"); r.code != 0 {
		t.Fatalf("converge after restart: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if got := marksOf(t, marks, "edge-1"); len(got) != 2 {
		t.Errorf("after a restart: marks %q, want the init entry not run again", got)
	}

	// A new init build, the document set to it: it runs again, once, and
	// the app is left alone.
	f.op("pkg", "push", join("1.1.0", ""))
	f.op("state", "set", "-f", edge)
	for id := range agents {
		f.waitFor(id, "ran init 1.1.0", func(deviceJSON) bool { return len(marksOf(t, marks, id)) == 3 })
		f.waitConverged(id, "com.example:app=1.0.0")
		if got, want := strings.Join(marksOf(t, marks, id), "|"), "init 1.0.0 of edge|postinst app 1.0.0|init 1.1.0 of edge"; got != want {
			t.Errorf("%s: marks %q, want %q", id, got, want)
		}
	}

	// A failing init entry: the step fails, the app is not upgraded, the
	// event says why; drover converge exits 1, then runs it after the fix.
	f.op("pkg", "push", join("1.2.0", fmt.Sprintf(`test -f %q || { echo "cannot join: no allow file" >&2; exit 3; }`, allow)))
	f.op("state", "set", "-f", group("1.2.0", "1.1.0"))
	for id := range agents {
		d := f.waitFor(id, "init failed", func(d deviceJSON) bool { return strings.Contains(d.Status.Error, "init com.example:join:1.2.0") })
		if !strings.Contains(d.Status.Error, "cannot join: no allow file") {
			t.Errorf("%s: status error %q lacks the program's last line", id, d.Status.Error)
		}
		if len(d.Apps) != 1 || d.Apps[0].Version != "1.0.0" {
			t.Errorf("%s: apps %+v after a failed init entry, want app 1.0.0 kept", id, d.Apps)
		}
		failed := initEvents(t, f, id, "init-failed")
		if len(failed) == 0 || failed[0]["priority"] != "high" || !strings.Contains(fmt.Sprint(failed[0]["message"]), "cannot join") ||
			!strings.Contains(fmt.Sprint(failed[0]["payload"]), "exit_code:3") {
			t.Errorf("%s: init-failed events %v", id, failed)
		}
	}
	if r := a1.node("converge"); r.code != 1 || !strings.Contains(r.stdout, "init-failed") || !strings.Contains(r.stderr, "cannot join") {
		t.Errorf("converge with the failing init entry: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	if err := os.WriteFile(allow, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if r := a1.node("converge"); r.code != 0 || !strings.Contains(r.stdout, "init-done") {
		t.Errorf("converge after the fix: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	f.waitConverged("edge-1", "com.example:app=1.1.0")
	if got, want := strings.Join(marksOf(t, marks, "edge-1")[3:], "|"), "init 1.2.0 of edge|postinst app 1.1.0"; got != want {
		t.Errorf("edge-1 after the fix: marks %q, want %q", got, want)
	}
}
