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

// TestAgentHooks: the agent runs <home>/config/hooks/<phase>-post.d/ after
// an install and an upgrade, with the event on stdin and DROVER_* in the
// environment; badly named and non-executable files are ignored with one
// warning event each; a hanging hook is killed at --hook-timeout, becomes
// a hook event, never stops the hooks after it, and never holds up
// convergence.
func TestAgentHooks(t *testing.T) {
	f := newFleet(t)
	var files []string
	for _, v := range []string{"1.0.0", "2.0.0"} {
		dir := writeSource(t, filepath.Join(f.dir, "src", "hooked-"+v), pkgSource{
			yaml:  "group: com.example\nname: hooked\nversion: " + v + "\n",
			files: map[string]string{"files/share/VERSION": v + "\n"},
		})
		out := filepath.Join(f.dir, "hooked-"+v+".drover")
		f.mustOK(nil, "pkg", "build", dir, "-o", out)
		files = append(files, out)
	}
	f.op(append([]string{"pkg", "push"}, files...)...)

	const timeout = 3 * time.Second
	a := f.newAgent("hooky", "--hook-timeout", timeout.String())
	out := filepath.Join(f.dir, "hook-out")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	// Each recording hook keeps its stdin and its DROVER_* variables.
	// The .env file appears whole (written aside, then renamed) and last,
	// so a test that sees it reads complete files.
	record := fmt.Sprintf("#!/bin/sh\nn=\"$DROVER_EVENT_KIND-$(basename \"$0\")\"\ncat > '%s'/\"$n.json\"\nenv | grep '^DROVER_' | sort > '%s'/\"$n.env.tmp\"\nmv '%s'/\"$n.env.tmp\" '%s'/\"$n.env\"\n", out, out, out, out)
	hooks := filepath.Join(a.home, "config", "hooks")
	for _, h := range []struct {
		path, body string
		mode       os.FileMode
	}{
		{"install-post.d/05-hang", fmt.Sprintf("#!/bin/sh\ntouch '%s/hang-started'\nsleep 60\ntouch '%s/hang-ended'\n", out, out), 0o755},
		{"install-post.d/10-record", record, 0o755},
		{"install-post.d/bad.sh", record, 0o755},    // a name run-parts refuses
		{"install-post.d/20-noexec", record, 0o644}, // not executable
		{"upgrade-post.d/10-record", record, 0o755},
	} {
		p := filepath.Join(hooks, filepath.FromSlash(h.path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(h.body), h.mode); err != nil {
			t.Fatal(err)
		}
	}
	a.start()
	f.waitFor("hooky", "reported", func(deviceJSON) bool { return true })

	f.op("state", "set", "-f", writeState(t, f, "hooky", "id: hooky\napps:\n  - name: com.example:hooked\n    version: 1.0.0\n"))
	f.waitConverged("hooky", "com.example:hooked=1.0.0")
	waitFile(t, filepath.Join(out, "hang-started"))
	// While the install hook hangs, the agent converges to the upgrade.
	f.op("state", "set", "-f", writeState(t, f, "hooky", "id: hooky\napps:\n  - name: com.example:hooked\n    version: 2.0.0\n"))
	f.waitConverged("hooky", "com.example:hooked=2.0.0")

	for _, c := range []struct{ phase, pkg string }{
		{"install", "com.example:hooked:1.0.0"},
		{"upgrade", "com.example:hooked:2.0.0"},
	} {
		base := filepath.Join(out, c.phase+"-10-record")
		waitFile(t, base+".env")
		var ev api.Event
		if err := json.Unmarshal([]byte(readFile(t, base+".json")), &ev); err != nil {
			t.Fatalf("%s hook stdin: %v", c.phase, err)
		}
		if ev.Kind != c.phase || ev.Package != c.pkg || ev.Device != "hooky" {
			t.Errorf("%s hook stdin: kind %q, package %q, device %q; want %q, %q, hooky", c.phase, ev.Kind, ev.Package, ev.Device, c.phase, c.pkg)
		}
		env := readFile(t, base+".env")
		for _, want := range []string{"DROVER_EVENT_KIND=" + c.phase, "DROVER_EVENT_PACKAGE=" + c.pkg,
			"DROVER_EVENT_DEVICE=hooky", "DROVER_DEVICE=hooky", "DROVER_HOME=" + a.home} {
			if !strings.Contains(env, want+"\n") {
				t.Errorf("%s hook environment lacks %s:\n%s", c.phase, want, env)
			}
		}
	}
	for _, name := range []string{"install-bad.sh.json", "install-20-noexec.json", "hang-ended"} {
		if _, err := os.Stat(filepath.Join(out, name)); err == nil {
			t.Errorf("%s exists: a hook ran that must not have, or ran to its end", name)
		}
	}

	// The hang becomes a hook event once killed; each ignored file one
	// warning, however often its directory is listed.
	var hookEvents []api.Event
	deadline := time.Now().Add(20 * time.Second)
	for {
		hookEvents = hookEvents[:0]
		for _, ev := range storedEvents(t, f) {
			if ev.Device == "hooky" && ev.Kind == "hook" {
				hookEvents = append(hookEvents, ev)
			}
		}
		if len(hookEvents) >= 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	var hang *api.Event
	warned := map[string]int{}
	for i, ev := range hookEvents {
		var p struct {
			Hook     string `json:"hook"`
			TimedOut bool   `json:"timed_out"`
		}
		if err := json.Unmarshal(ev.Payload, &p); err != nil {
			t.Fatalf("hook event payload %s: %v", ev.Payload, err)
		}
		switch {
		case ev.Level == api.LevelError && p.TimedOut && filepath.Base(p.Hook) == "05-hang":
			hang = &hookEvents[i]
		case ev.Level == api.LevelWarn:
			warned[filepath.Base(p.Hook)]++
		default:
			t.Errorf("unexpected hook event: %s %s %s", ev.Level, ev.Message, ev.Payload)
		}
	}
	if hang == nil || !strings.Contains(hang.Message, "timed out") || hang.Package != "com.example:hooked:1.0.0" {
		t.Fatalf("hook events %v: want one timing out 05-hang for com.example:hooked:1.0.0", hookEvents)
	}
	if want := map[string]int{"bad.sh": 1, "20-noexec": 1}; fmt.Sprint(warned) != fmt.Sprint(want) {
		t.Errorf("hook warnings by file = %v, want %v", warned, want)
	}
	// The upgrade converged before the hanging hook was killed.
	var converged []int64
	for _, ev := range storedEvents(t, f) {
		if ev.Device == "hooky" && ev.Kind == api.KindConverged {
			converged = append(converged, ev.ID)
		}
	}
	if len(converged) < 2 || converged[1] > hang.ID {
		t.Errorf("converged event ids %v, hang killed at event %d: the upgrade waited for the hanging hook", converged, hang.ID)
	}
}

// waitFile waits for a file to exist.
func waitFile(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not exist after 20s", path)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
