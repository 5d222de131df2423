package main

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/drover-dev/drover/internal/api"
)

// TestOutputRules: every verb that prints a result has -o; a list is one
// JSON array or one YAML list; text tables have headers and human sizes;
// pushing the same build again says so and stores nothing new; version
// and completion.
func TestOutputRules(t *testing.T) {
	f := newFleet(t)
	files := buildFleetPackages(t, f)
	out := f.op(append([]string{"pkg", "push", "-o", "json"}, files...)...)
	var pushed []api.Build
	if err := json.Unmarshal([]byte(out), &pushed); err != nil || len(pushed) != len(files) {
		t.Fatalf("pkg push -o json: %v\n%s", err, out)
	}
	if pushed[0].AlreadyPushed {
		t.Errorf("first push says already pushed: %+v", pushed[0])
	}
	// Again: nothing changes, and no second "package" event.
	again := f.op("pkg", "push", files[0])
	if !strings.HasPrefix(again, "already pushed ") {
		t.Errorf("pkg push of the same build again = %q, want 'already pushed ...'", again)
	}
	var pkgEvents []api.Event
	if err := json.Unmarshal([]byte(f.op("events", "--kind", "package", "-o", "json")), &pkgEvents); err != nil {
		t.Fatal(err)
	}
	if len(pkgEvents) != len(files) {
		t.Errorf("package events = %d after pushing %d files and one again, want %d", len(pkgEvents), len(files), len(files))
	}

	// pkg ls: sizes in human units as text, exact bytes as JSON.
	ls := f.op("pkg", "ls")
	if !strings.HasPrefix(ls, "COORDINATE ") || !regexp.MustCompile(`\d+ B\s`).MatchString(ls) {
		t.Errorf("pkg ls:\n%s", ls)
	}
	var builds []api.Build
	if err := json.Unmarshal([]byte(f.op("pkg", "ls", "-o", "json")), &builds); err != nil || len(builds) == 0 || builds[0].Size <= 0 {
		t.Errorf("pkg ls -o json: %v %+v", err, builds)
	}

	// device ls shows labels.
	dev := f.newAgent("lab1", "--labels", "env=prod,region=eu")
	dev.start()
	f.waitFor("lab1", "reported", func(d deviceJSON) bool { return len(d.SystemTags) > 0 })
	dls := f.op("device", "ls")
	if !regexp.MustCompile(`(?m)^ID\s+TAGS\s+LABELS\s+LAST SEEN`).MatchString(dls) || !strings.Contains(dls, "env=prod,region=eu") {
		t.Errorf("device ls:\n%s", dls)
	}

	// state set -o json: one array of what each state resolved to.
	set := f.op("state", "set", "-o", "json", "-f", writeState(t, f, "lab1", "id: lab1\napps: []\n"))
	var res []api.Resolved
	if err := json.Unmarshal([]byte(set), &res); err != nil || len(res) != 1 || res[0].Device != "lab1" {
		t.Errorf("state set -o json: %v\n%s", err, set)
	}

	// converge -o json: JSON Lines, the last one says it is done.
	conv := f.mustOK(nil, "converge", "--home", dev.home, "-o", "json")
	clines := strings.Split(strings.TrimSuffix(conv, "\n"), "\n")
	var lastLine struct {
		Done      bool `json:"done"`
		Converged bool `json:"converged"`
	}
	for _, l := range clines {
		if err := json.Unmarshal([]byte(l), &lastLine); err != nil {
			t.Errorf("converge -o json line %q: %v", l, err)
		}
	}
	if !lastLine.Done || !lastLine.Converged {
		t.Errorf("converge -o json ends with %+v:\n%s", lastLine, conv)
	}

	// pkg rm -o json: one object.
	var rm struct {
		Coordinate string `json:"coordinate"`
		Removed    int    `json:"removed"`
	}
	if err := json.Unmarshal([]byte(f.op("pkg", "rm", "com.example:lib:1.0.0", "-o", "json")), &rm); err != nil || rm.Removed != 1 {
		t.Errorf("pkg rm -o json: %v %+v", err, rm)
	}

	// events: a header and aligned columns; one JSON array; one YAML list.
	text := f.op("events")
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if len(lines) < 2 || !regexp.MustCompile(`^ID\s+TIME\s+LEVEL\s+PRIORITY\s+KIND\s+DEVICE\s+MESSAGE$`).MatchString(lines[0]) {
		t.Fatalf("events text:\n%s", text)
	}
	col := strings.Index(lines[0], "KIND")
	for _, l := range lines[1:] {
		if len(l) <= col || l[col-1] != ' ' || l[col] == ' ' {
			t.Errorf("events: column KIND not aligned at %d in %q", col, l)
		}
	}
	var evs []api.Event
	if err := json.Unmarshal([]byte(f.op("events", "-o", "json")), &evs); err != nil || len(evs) != len(lines)-1 {
		t.Errorf("events -o json: %v (%d events, text has %d)", err, len(evs), len(lines)-1)
	}
	var ylist []map[string]any
	if err := yaml.Unmarshal([]byte(f.op("events", "-o", "yaml")), &ylist); err != nil || len(ylist) != len(evs) {
		t.Errorf("events -o yaml: %v (%d items, want %d)", err, len(ylist), len(evs))
	}

	// events --follow -o json: JSON Lines, one event per line.
	fol := exec.Command(droverBin, "events", "--follow", "-o", "json")
	fol.Env = append(os.Environ(), f.adminEnv()...)
	stdout, err := fol.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := fol.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = fol.Process.Kill(); _ = fol.Wait() }()
	sc := bufio.NewScanner(stdout)
	for i := range evs {
		if !sc.Scan() {
			t.Fatalf("events --follow -o json ended after %d lines: %v", i, sc.Err())
		}
		var ev api.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil || ev.ID != evs[i].ID {
			t.Fatalf("events --follow -o json line %d = %q (%v), want event %d on one line", i, sc.Text(), err, evs[i].ID)
		}
	}

	if v := f.mustOK(nil, "version"); !regexp.MustCompile(`^drover \d+\.\d+\.\d+\n$`).MatchString(v) {
		t.Errorf("drover version = %q", v)
	}
	var ver struct{ Version string }
	if err := json.Unmarshal([]byte(f.mustOK(nil, "version", "-o", "json")), &ver); err != nil || ver.Version == "" {
		t.Errorf("version -o json: %v %+v", err, ver)
	}
	if v := f.mustOK(nil, "--version"); !strings.HasPrefix(v, "drover ") {
		t.Errorf("drover --version = %q", v)
	}
	if c := f.mustOK(nil, "__complete", "events", "-o", ""); !strings.HasPrefix(c, "text\nyaml\njson\n") {
		t.Errorf("completion of -o = %q", c)
	}
	for _, sh := range []string{"bash", "zsh", "fish"} {
		if s := f.mustOK(nil, "completion", sh); !strings.Contains(s, "drover") || len(s) < 500 {
			t.Errorf("completion %s: %d bytes", sh, len(s))
		}
	}
}
