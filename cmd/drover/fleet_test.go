package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/drover-dev/drover/internal/api"
)

// TestFleetGroups drives groups, pinning, plan and the fleet verbs with
// the real binary: agents with different labels, groups plus a device
// override, a push that moves nothing, plan output and exit codes, bad
// input, a device that joins later, pkg rm of a build in use, state rm
// and device rm.
func TestFleetGroups(t *testing.T) {
	f := newFleet(t)
	src := filepath.Join(f.dir, "src")
	build := func(name, version string) string {
		dir := writeSource(t, filepath.Join(src, name+"-"+version), pkgSource{
			yaml:  "group: com.example\nname: " + name + "\nversion: " + version + "\n",
			files: map[string]string{"files/share/" + name: name + " " + version + "\n"},
		})
		out := filepath.Join(f.dir, name+"-"+version+".drover")
		f.mustOK(nil, "pkg", "build", dir, "-o", out)
		return out
	}
	f.op("pkg", "push", build("web", "1.0.0"), build("web", "1.1.0"), build("tool", "1.0.0"))
	web120 := build("web", "1.2.0")

	agents := map[string]*agentProc{
		"web-1": f.newAgent("web-1", "--labels", "env=prod,role=web"),
		"db-1":  f.newAgent("db-1", "--labels", "env=prod,role=db"),
		"dev-1": f.newAgent("dev-1", "--labels", "env=dev"),
	}
	for id, a := range agents {
		a.start()
		f.waitFor(id, "reported", func(d deviceJSON) bool { return len(d.SystemTags) > 0 })
	}

	fleetFile := writeState(t, f, "fleet", `group: all
selector: ""
apps:
  - {name: com.example:tool, version: 1.0.0}
---
group: prod
selector: "env=prod"
apps:
  - {name: com.example:web, version: "^1.0"}
---
id: db-1
apps:
  - {name: com.example:web, version: 1.0.0}
`)
	out := f.op("state", "set", "-f", fleetFile)
	for _, want := range []string{`group all set (1 apps, selector "")`, `group prod set (1 apps, selector "env=prod")`, "desired state of db-1 set (1 apps)"} {
		if !strings.Contains(out, want) {
			t.Errorf("state set lacks %q:\n%s", want, out)
		}
	}
	f.waitConverged("web-1", "com.example:tool=1.0.0", "com.example:web=1.1.0")
	f.waitConverged("db-1", "com.example:tool=1.0.0", "com.example:web=1.0.0")
	f.waitConverged("dev-1", "com.example:tool=1.0.0")

	show := f.op("device", "show", "db-1")
	for _, want := range []string{"effective:", "source: device/db-1", "source: group/all"} {
		if !strings.Contains(show, want) {
			t.Errorf("device show db-1 lacks %q:\n%s", want, show)
		}
	}
	if got := f.op("state", "get", "--group", "prod"); !strings.Contains(got, "group: prod") || !strings.Contains(got, "selector: env=prod") ||
		!strings.Contains(got, "pinned:") || !strings.Contains(got, "version: 1.1.0") {
		t.Errorf("state get --group prod:\n%s", got)
	}

	// A push moves nothing; state ls says what would fit.
	f.op("pkg", "push", web120)
	ls := f.op("state", "ls")
	if !strings.Contains(ls, "com.example:web ^1.0=1.1.0") || !strings.Contains(ls, "com.example:web 1.2.0") {
		t.Errorf("state ls after a push lacks the pin and the newer version:\n%s", ls)
	}
	var sums []api.DocumentSummary
	if err := json.Unmarshal([]byte(f.op("state", "ls", "-o", "json")), &sums); err != nil || len(sums) != 3 {
		t.Fatalf("state ls -o json = %v, %d documents", err, len(sums))
	}
	devices := map[string]int{}
	for _, s := range sums {
		devices[s.Key()] = s.Devices
	}
	if devices["group/all"] != 3 || devices["group/prod"] != 1 || devices["device/db-1"] != 1 {
		t.Errorf("state ls devices = %v, want all 3, prod 1 (db-1 overrides web), db-1 1", devices)
	}

	// Plan of moving prod to the new version: web-1 only.
	upgrade := writeState(t, f, "upgrade", "group: prod\nselector: \"env=prod\"\napps:\n  - {name: com.example:web, version: \"^1.0\"}\n")
	out = f.op("plan", "-f", upgrade)
	for _, want := range []string{"web-1: download ", "upgrade     com.example:web 1.1.0 -> 1.2.0  build ", "1 devices change, 2 unchanged, 0 errors"} {
		if !strings.Contains(out, want) {
			t.Errorf("plan lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "db-1") || strings.Contains(out, "dev-1") {
		t.Errorf("plan lists devices that do not change:\n%s", out)
	}
	var p api.Plan
	if err := json.Unmarshal([]byte(f.op("state", "set", "--dry-run", "-f", upgrade, "-o", "json")), &p); err != nil || p.Changed != 1 || len(p.Devices) != 1 || p.Devices[0].Download == 0 {
		t.Errorf("state set --dry-run -o json = %+v, %v", p, err)
	}

	// Bad input: one line, exit 1, nothing changed.
	tie := writeState(t, f, "tie", "group: web\nselector: role\napps:\n  - {name: com.example:web, version: 1.0.0}\n")
	r := runBin(t, f.adminEnv(), "", "plan", "-f", tie)
	if r.code != 1 || !strings.Contains(r.stdout, "error       com.example:web: groups prod and web (1 selector terms each) disagree") || !strings.Contains(r.stdout, "0 devices change, 2 unchanged, 1 errors") {
		t.Errorf("plan of a tie: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for _, c := range []struct{ what, yaml, want string }{
		{"tie", "group: web\nselector: role\napps:\n  - {name: com.example:web, version: 1.0.0}\n", "web-1: com.example:web: groups prod and web"},
		{"bad selector", "group: web\nselector: \"role in web\"\napps: []\n", `selector "role in web": want '(' after "in" at column 9`},
		{"bad group name", "group: Web_Servers\nselector: \"\"\napps: []\n", `group "Web_Servers"`},
	} {
		oneLine(t, "state set of a "+c.what, runBin(t, f.adminEnv(), "", "state", "set", "-f", writeState(t, f, "bad", c.yaml)), 1, c.want)
	}
	if ls2 := f.op("state", "ls"); ls2 != ls {
		t.Errorf("refused state sets changed the documents:\n%s\nwas\n%s", ls2, ls)
	}

	// Seconds and several reports after the push, web-1 still has what
	// its documents were pinned to.
	f.waitConverged("web-1", "com.example:tool=1.0.0", "com.example:web=1.1.0")
	if evs := f.op("events", "--device", "web-1", "--kind", "plan"); strings.Contains(evs, "1.2.0") {
		t.Errorf("web-1 planned the pushed version without a state set:\n%s", evs)
	}
	f.op("state", "set", "-f", upgrade)
	f.waitConverged("web-1", "com.example:tool=1.0.0", "com.example:web=1.2.0")

	// A device that joins later gets its groups' state at once.
	late := f.newAgent("web-2", "--labels", "env=prod,role=web")
	late.start()
	f.waitConverged("web-2", "com.example:tool=1.0.0", "com.example:web=1.2.0")

	// pkg rm of a build in use is refused; --force removes it anyway.
	oneLine(t, "pkg rm of a build in use", runBin(t, f.adminEnv(), "", "pkg", "rm", "com.example:web:1.0.0"), 1, "device db-1 has it from device/db-1")
	f.op("pkg", "rm", "com.example:web:1.1.0") // nobody uses it any more

	// state rm of a group: its apps go from the devices it gave them to;
	// a device no document applies to any more keeps what it has.
	f.op("state", "rm", "--group", "all")
	f.waitConverged("db-1", "com.example:web=1.0.0")
	if show := f.op("device", "show", "dev-1"); strings.Contains(show, "effective:") || !strings.Contains(show, "com.example:tool") {
		t.Errorf("dev-1 after state rm --group all:\n%s", show)
	}

	// device rm: the record and own document go, events stay.
	agents["db-1"].kill()
	if out := f.op("device", "rm", "db-1"); !strings.Contains(out, "device db-1 removed") {
		t.Errorf("device rm said %q", out)
	}
	oneLine(t, "device show of a removed device", runBin(t, f.adminEnv(), "", "device", "show", "db-1"), 1, "db-1")
	oneLine(t, "state get of a removed device", runBin(t, f.adminEnv(), "", "state", "get", "db-1"), 1, "db-1")
	if evs := f.op("events", "--device", "db-1"); !strings.Contains(evs, "device db-1 removed") || !strings.Contains(evs, "converged") {
		t.Errorf("events of a removed device:\n%s", evs)
	}
	f.op("pkg", "rm", "com.example:web:1.0.0", "--force")
}
