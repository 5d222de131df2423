package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/blob"
	"github.com/drover-dev/drover/internal/install"
)

// crashPackages builds two versions each of a prefix-mode and a root-mode
// package with many files, so an install takes long enough to be cut.
func crashPackages(t *testing.T, f *fleet, files int) []string {
	t.Helper()
	var out []string
	for _, mode := range []string{"prefix", "root"} {
		for _, v := range []string{"1.0.0", "2.0.0"} {
			p := pkgSource{
				yaml:  fmt.Sprintf("group: com.example\nname: big%s\nversion: %s\ninstall: %s\n", mode, v, mode),
				files: map[string]string{},
			}
			for i := range files {
				// Half the files change between versions, half stay.
				content := strings.Repeat(fmt.Sprintf("%s file %d ", mode, i), 200)
				if i%2 == 0 {
					content = v + " " + content
				}
				p.files[fmt.Sprintf("files/%s/d%02d/f%04d.txt", mode, i%16, i)] = content
			}
			if v == "2.0.0" {
				p.files["files/"+mode+"/only-in-2.txt"] = "new in 2\n"
			} else {
				p.files["files/"+mode+"/only-in-1.txt"] = "gone in 2\n"
			}
			dir := writeSource(t, filepath.Join(f.dir, "crash-src", mode+"-"+v), p)
			file := filepath.Join(f.dir, "big"+mode+"-"+v+".drover")
			f.mustOK(nil, "pkg", "build", dir, "-o", file)
			out = append(out, file)
		}
	}
	return out
}

func bigState(id, version string) string {
	if version == "" {
		return "id: " + id + "\napps: []\n"
	}
	return fmt.Sprintf("id: %s\napps:\n  - name: com.example:bigprefix\n    version: %s\n  - name: com.example:bigroot\n    version: %s\n", id, version, version)
}

// checkWhole asserts the invariant after recovery: every package is wholly
// one of the allowed versions and its files match that version's manifest,
// and a package that was installed before is still installed.
func checkWhole(t *testing.T, a *agentProc, from, to string) {
	t.Helper()
	cache, err := blob.NewFileStore(blob.FileConfig{Dir: filepath.Join(a.home, "system", "blobs")})
	if err != nil {
		t.Fatal(err)
	}
	eng, err := install.New(install.Config{SoftwareRoot: a.software, Root: a.root, StateDir: filepath.Join(a.home, "system", "install"),
		LogDir: filepath.Join(a.home, "logs"), Device: a.id, Blobs: cache})
	if err != nil {
		t.Fatalf("open install state: %v", err)
	}
	installed := map[string]api.InstalledApp{}
	for _, app := range eng.Installed() {
		installed[app.Name] = app
		if app.Version != from && app.Version != to {
			t.Errorf("%s is at %s, neither %q nor %q", app.Name, app.Version, from, to)
		}
		m, err := eng.Manifest(app.Digest)
		if err != nil {
			t.Fatalf("%s: manifest: %v", app.Name, err)
		}
		if err := install.CheckInstalled(a.root, a.software, app, m, nil); err != nil {
			t.Errorf("%s %s is not whole after recovery: %v", app.Name, app.Version, err)
		}
	}
	if from != "" {
		for _, name := range []string{"com.example:bigprefix", "com.example:bigroot"} {
			if _, ok := installed[name]; !ok {
				t.Errorf("%s was at %s before the crash and is gone after recovery", name, from)
			}
		}
	}
}

// TestCrashRecovery kills the agent with SIGKILL at random moments of
// installs, upgrades and downgrades, then recovers and checks that every
// package is wholly the old or wholly the new version.
func TestCrashRecovery(t *testing.T) {
	f := newFleet(t)
	f.op(append([]string{"pkg", "push"}, crashPackages(t, f, 400)...)...)
	a := f.newAgent("crashy")
	a.start()
	f.waitFor("crashy", "reported", func(d deviceJSON) bool { return len(d.SystemTags) > 0 })

	// Measure one clean install, from its events, to aim the kills at the
	// time the agent is inside its steps.
	f.op("state", "set", "-f", writeState(t, f, "crashy", bigState("crashy", "1.0.0")))
	f.waitConverged("crashy", "com.example:bigprefix=1.0.0", "com.example:bigroot=1.0.0")
	lead, window := stepWindow(t, f, "crashy")
	t.Logf("a clean install: first step starts %v after the state is set and the steps take %v", lead, window)

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	current := "1.0.0"
	const runs = 32
	interrupted := 0 // kills that left a step half done
	for i := range runs {
		from := current
		to := map[string]string{"1.0.0": "2.0.0", "2.0.0": "1.0.0"}[current]
		if i%4 == 3 {
			// A fresh install: remove everything first (cleanly).
			f.op("state", "set", "-f", writeState(t, f, "crashy", bigState("crashy", "")))
			f.waitConverged("crashy")
			from = ""
		}
		f.op("state", "set", "-f", writeState(t, f, "crashy", bigState("crashy", to)))
		var delay time.Duration
		if i%3 == 0 {
			// Any moment: before, inside or after the steps.
			delay = lead + time.Duration(rng.Int64N(int64(window)*5/4+1))
			time.Sleep(delay)
		} else {
			// Inside a step: wait until the agent is writing files (after
			// its downloads), then a random moment of the next 30 ms.
			// Timing alone misses that phase on a loaded machine.
			start := time.Now()
			for !inStep(a) && time.Since(start) < 10*time.Second {
				time.Sleep(time.Millisecond)
			}
			time.Sleep(time.Duration(rng.Int64N(int64(30 * time.Millisecond))))
			delay = time.Since(start)
		}
		a.kill()
		if inStep(a) {
			interrupted++
		}

		r := runBin(t, nil, "", append(a.args, "--recover-only")...)
		if r.code != 0 {
			t.Fatalf("run %d: recover-only: exit %d: %s", i, r.code, r.stderr)
		}
		checkWhole(t, a, from, to)
		if t.Failed() {
			t.Fatalf("run %d (%s -> %s, killed after %v): invariant broken; agent log:\n%s", i, from, to, delay, tail(a.logs.String(), 4000))
		}

		a.start()
		f.waitConverged("crashy", "com.example:bigprefix="+to, "com.example:bigroot="+to)
		current = to
	}
	t.Logf("%d of %d kills interrupted a step in the middle", interrupted, runs)
	if interrupted < runs/4 {
		t.Errorf("only %d of %d kills landed inside a step: the test did not exercise recovery", interrupted, runs)
	}
	// After all of it, the files on disk are exactly the final version's.
	checkWhole(t, a, current, current)
	if _, err := os.Stat(filepath.Join(a.root, "root", "only-in-"+map[string]string{"1.0.0": "2", "2.0.0": "1"}[current]+".txt")); !os.IsNotExist(err) {
		t.Errorf("a file of the other version is left in the root: %v", err)
	}
}

// stepWindow returns how long after the last `state` event the device's
// first step started, and how long its steps took.
func stepWindow(t *testing.T, f *fleet, id string) (lead, window time.Duration) {
	t.Helper()
	out := f.op("events", "--device", id, "-o", "json")
	dec := jsonArray(t, out)
	var set, first, last time.Time
	for dec.More() {
		var ev struct {
			Kind string    `json:"kind"`
			Time time.Time `json:"time"`
		}
		if err := dec.Decode(&ev); err != nil {
			t.Fatal(err)
		}
		switch ev.Kind {
		case "state":
			set = ev.Time
		case "step-start":
			if first.IsZero() {
				first = ev.Time
			}
		case "step-done":
			last = ev.Time
		}
	}
	if set.IsZero() || first.IsZero() || last.IsZero() {
		t.Fatalf("no state, step-start and step-done events:\n%s", out)
	}
	return max(first.Sub(set), 0), max(last.Sub(first), time.Millisecond)
}

// inStep reports whether the agent is in the middle of a step on disk: a
// journal, or a prefix-mode version being unpacked.
func inStep(a *agentProc) bool {
	partial, _ := filepath.Glob(filepath.Join(a.software, "com", "example", "bigprefix", ".*.partial-*"))
	_, err := os.Stat(filepath.Join(a.home, "system", "install", "journal.json"))
	return err == nil || len(partial) > 0
}
