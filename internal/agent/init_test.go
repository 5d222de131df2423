package agent

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/facts"
	"github.com/drover-dev/drover/internal/resolve"
)

// addInit puts a build of com.example:join VERSION on srv whose programs
// bin/join and bin/again append their name, $DROVER_GROUP and
// $DROVER_VERSION to marks and print a line; bin/fail exits 4. It returns
// the build's manifest digest.
func addInit(t *testing.T, srv *fakeServer, version, marks string) string {
	t.Helper()
	m := api.Manifest{Group: "com.example", Name: "join", Version: version, Tags: []string{}, Install: api.InstallPrefix}
	m.Files = []api.File{{Path: "bin", Type: api.TypeDir, Mode: 0o755}}
	for _, p := range []struct{ name, body string }{
		{"again", `echo "again $DROVER_GROUP $DROVER_VERSION" >> ` + marks},
		{"fail", "echo cannot join >&2; exit 4"},
		{"join", `echo "join $DROVER_GROUP $DROVER_VERSION" >> ` + marks + "; echo joined $DROVER_DEVICE"},
	} {
		c := "#!/bin/sh\n" + p.body + "\n"
		d := digestOf([]byte(c))
		srv.blobs[d] = []byte(c)
		m.Files = append(m.Files, api.File{Path: "bin/" + p.name, Type: api.TypeFile, Mode: 0o755, Size: int64(len(c)), Digest: d})
	}
	mj, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	md := digestOf(mj)
	srv.blobs[md] = mj
	return md
}

// TestInitPendingRule converges one agent through a series of resolved
// states and checks which init programs run: once per identity (group,
// name, build, run), in order, before the apps, recorded with the
// agent's clock, kept over a restart and over leaving and rejoining the
// group; a failure stops the convergence before the apps.
func TestInitPendingRule(t *testing.T) {
	srv, a := newFake(t, map[string]string{"bin/app": "#!/bin/sh\n", "share/data": "data"})
	now := time.Date(2026, 12, 2, 1, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	a.now = clock
	marks := filepath.Join(t.TempDir(), "marks")
	v1 := addInit(t, srv, "1.0.0", marks)
	v2 := addInit(t, srv, "1.1.0", marks)
	apps := srv.resolved.Apps
	join := func(group, digest, version, run string) api.ResolvedInit {
		return api.ResolvedInit{Group: group, Name: "com.example:join", Version: version, Digest: digest, Run: run}
	}
	appInstalled := func() bool {
		_, err := os.Stat(filepath.Join(a.cfg.SoftwareRoot, "com", "example", "app", "current"))
		return err == nil
	}
	restart := func() {
		b, err := New(Config{Home: a.cfg.Home, Device: "d1", Root: a.cfg.Root, Facts: facts.Facts{"os": "linux", "arch": "amd64"}, Now: clock}, srv)
		if err != nil {
			t.Fatal(err)
		}
		a = b
	}
	steps := []struct {
		name    string
		init    []api.ResolvedInit
		restart bool
		runs    string // marks appended by this convergence
		err     string
	}{
		{"a failing entry stops before the apps", []api.ResolvedInit{join("edge", v1, "1.0.0", "bin/fail")}, false, "", "cannot join"},
		{"first join, in order", []api.ResolvedInit{join("edge", v1, "1.0.0", "bin/join"), join("core", v1, "1.0.0", "bin/again")}, false, "join edge 1.0.0|again core 1.0.0", ""},
		{"unchanged: nothing", []api.ResolvedInit{join("edge", v1, "1.0.0", "bin/join"), join("core", v1, "1.0.0", "bin/again")}, false, "", ""},
		{"after a restart: nothing", []api.ResolvedInit{join("edge", v1, "1.0.0", "bin/join"), join("core", v1, "1.0.0", "bin/again")}, true, "", ""},
		{"left the groups", nil, false, "", ""},
		{"rejoined unchanged: nothing", []api.ResolvedInit{join("edge", v1, "1.0.0", "bin/join")}, false, "", ""},
		{"new build", []api.ResolvedInit{join("edge", v2, "1.1.0", "bin/join")}, false, "join edge 1.1.0", ""},
		{"new run", []api.ResolvedInit{join("edge", v2, "1.1.0", "bin/again")}, false, "again edge 1.1.0", ""},
		{"back to the first build: runs again", []api.ResolvedInit{join("edge", v1, "1.0.0", "bin/join")}, false, "join edge 1.0.0", ""},
	}
	seen := 0
	for i, s := range steps {
		now = now.Add(time.Minute)
		if s.restart {
			restart()
		}
		srv.resolved = &api.Resolved{Device: "d1", Apps: apps, Init: s.init, Digest: resolve.StateDigest(apps, s.init)}
		err := a.Converge(context.Background())
		switch {
		case s.err == "" && err != nil:
			t.Fatalf("%s: Converge: %v", s.name, err)
		case s.err != "" && (err == nil || !strings.Contains(err.Error(), s.err)):
			t.Fatalf("%s: Converge = %v, want an error with %q", s.name, err, s.err)
		}
		data, _ := os.ReadFile(marks)
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		if len(data) == 0 {
			lines = nil
		}
		if got := strings.Join(lines[seen:], "|"); got != s.runs {
			t.Errorf("%s: ran %q, want %q", s.name, got, s.runs)
		}
		seen = len(lines)
		if got := appInstalled(); got != (s.err == "") {
			t.Errorf("%s: app installed = %v, want %v", s.name, got, s.err == "")
		}
		if i == 1 {
			recs, err := a.initRecords()
			if err != nil || len(recs) != 2 || !recs[0].Done.Equal(now) || recs[0].Group != "edge" || recs[1].Group != "core" {
				t.Errorf("%s: records %+v, %v; want edge then core, done at %v", s.name, recs, err, now)
			}
			log, _ := os.ReadFile(filepath.Join(a.cfg.Home, "logs", "init-edge-com.example:join.log"))
			if !strings.Contains(string(log), "joined d1") {
				t.Errorf("%s: init log %q lacks the program's output", s.name, log)
			}
			if rep := srv.reports[len(srv.reports)-1]; len(rep.Init) != 2 {
				t.Errorf("%s: report carries init records %+v, want 2", s.name, rep.Init)
			}
		}
	}
	var kinds []string
	for _, ev := range srv.events {
		if strings.HasPrefix(ev.Kind, "init-") {
			kinds = append(kinds, ev.Kind)
		}
	}
	if kinds[0] != api.KindInitStart || kinds[1] != api.KindInitFailed {
		t.Errorf("first events %v, want init-start, init-failed", kinds)
	}
}

func TestInitRecordsUnreadable(t *testing.T) {
	srv, a := newFake(t, map[string]string{"bin/app": "#!/bin/sh\n"})
	marks := filepath.Join(t.TempDir(), "marks")
	entries := []api.ResolvedInit{{Group: "edge", Name: "com.example:join", Version: "1.0.0", Digest: addInit(t, srv, "1.0.0", marks), Run: "bin/join"}}
	srv.resolved = &api.Resolved{Device: "d1", Apps: srv.resolved.Apps, Init: entries, Digest: resolve.StateDigest(srv.resolved.Apps, entries)}
	if err := os.WriteFile(a.initFile(), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := a.Converge(context.Background()); err == nil || !strings.Contains(err.Error(), "init records") {
		t.Errorf("Converge with a corrupt record file = %v, want an error naming it", err)
	}
	if _, err := os.Stat(marks); err == nil {
		t.Errorf("an init program ran although its records could not be read")
	}
}

func TestInitRefusesHostileEntries(t *testing.T) {
	srv, a := newFake(t, map[string]string{"bin/app": "#!/bin/sh\n"})
	marks := filepath.Join(t.TempDir(), "marks")
	digest := addInit(t, srv, "1.0.0", marks)
	good := api.ResolvedInit{Group: "edge", Name: "com.example:join", Version: "1.0.0", Digest: digest, Run: "bin/join"}
	for _, c := range []struct {
		name string
		edit func(*api.ResolvedInit)
		want string
	}{
		{"group with a slash", func(e *api.ResolvedInit) { e.Group = "../../etc" }, "bad group"},
		{"name with a slash", func(e *api.ResolvedInit) { e.Name = "com.example:../x" }, "package name"},
		{"digest not hex", func(e *api.ResolvedInit) { e.Digest = "../" + digest[3:] }, "bad digest"},
		{"absolute run", func(e *api.ResolvedInit) { e.Run = "/bin/sh" }, "is absolute"},
		{"run going up", func(e *api.ResolvedInit) { e.Run = "../../bin/sh" }, `".." element`},
		{"run not in the build", func(e *api.ResolvedInit) { e.Run = "bin/sh" }, "not a file of the package"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := good
			c.edit(&e)
			entries := []api.ResolvedInit{e}
			srv.resolved = &api.Resolved{Device: "d1", Apps: srv.resolved.Apps, Init: entries, Digest: resolve.StateDigest(srv.resolved.Apps, entries)}
			if err := a.Converge(context.Background()); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Converge = %v, want an error with %q", err, c.want)
			}
			if _, err := os.Stat(marks); err == nil {
				t.Errorf("a program ran")
			}
			if logs, _ := os.ReadDir(filepath.Join(a.cfg.Home, "logs")); len(logs) != 0 {
				t.Errorf("files written in logs/: %v", logs)
			}
		})
	}
}
