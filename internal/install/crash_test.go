package install

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/drover-dev/drover/internal/api"
)

// crashHook arms a crash at one named point (op) or at the n-th point of
// a Recover run.
type crashHook struct {
	active   bool
	record   bool
	points   []string
	armed    string
	recoverN int // crash at this recover point call; -1: none
	calls    int
	fired    bool
}

func (h *crashHook) hook(p string) error {
	if !h.active {
		return nil
	}
	if h.record {
		h.points = append(h.points, p)
		return nil
	}
	if strings.HasPrefix(p, "recover/") {
		if h.recoverN >= 0 && h.calls == h.recoverN {
			h.calls++
			return ErrCrash
		}
		h.calls++
		return nil
	}
	if !h.fired && p == h.armed {
		h.fired = true
		return ErrCrash
	}
	return nil
}

type crashScenario struct {
	name  string
	setup func(v *env, e *Engine)
	op    func(v *env, e *Engine) error
	// old and new are the acceptable outcomes (digest, "" = not
	// installed); from newFrom on (a point name) the outcome must be
	// new, before it old. newFrom "" means always old.
	old, new func(v *env) string
	newFrom  string
	// recoverCrashes: crash Recover too, at each of its points in turn.
	recoverCrashes bool
}

func crashScenarios(mode string) []crashScenario {
	t1 := func(v *env) Target {
		return v.target(pkg{name: "app", version: "1.0.0", install: mode, files: v1Files()})
	}
	t2 := func(v *env) Target {
		return v.target(pkg{name: "app", version: "2.0.0", install: mode, files: v2Files()})
	}
	t2fail := func(v *env) Target {
		return v.target(pkg{name: "app", version: "2.0.0", install: mode, files: v2Files(), scripts: []string{"postinst"}, params: map[string]string{"fail": "postinst"}})
	}
	t1p := func(v *env) Target {
		return v.target(pkg{name: "app", version: "1.0.0", install: mode, files: v1Files(), scripts: []string{"prerm"}})
	}
	t2prerm := func(v *env) Target {
		return v.target(pkg{name: "app", version: "2.0.0", install: mode, files: v2Files(), params: map[string]string{"fail": "prerm"}})
	}
	apply := func(tg func(*env) Target) func(v *env, e *Engine) error {
		return func(v *env, e *Engine) error { _, err := e.Apply(context.Background(), tg(v)); return err }
	}
	install := func(tgs ...func(*env) Target) func(v *env, e *Engine) {
		return func(v *env, e *Engine) {
			for _, tg := range tgs {
				v.apply(e, tg(v))
			}
		}
	}
	t1t := func(v *env) Target {
		return v.target(pkg{name: "app", version: "1.0.0", install: mode, files: v1Files(), templates: map[string]string{"etc/rendered.conf": "port 1\n"}})
	}
	t2t := func(v *env) Target {
		return v.target(pkg{name: "app", version: "2.0.0", install: mode, files: v2Files(), templates: map[string]string{"etc/rendered.conf": "port 2\n", "etc/new.conf": "new\n"}})
	}
	d := func(tg func(*env) Target) func(*env) string { return func(v *env) string { return tg(v).Digest } }
	none := func(*env) string { return "" }
	return []crashScenario{
		// Rendered templates are files of the app: the journal covers them.
		{name: "upgrade with templates", setup: install(t1t), op: apply(t2t), old: d(t1t), new: d(t2t), newFrom: "journal-configured", recoverCrashes: true},
		{name: "install", setup: install(), op: apply(t1), old: none, new: d(t1), newFrom: "journal-configured"},
		{name: "install, postinst fails", setup: install(), op: apply(t2fail), old: none},
		{name: "upgrade", setup: install(t1), op: apply(t2), old: d(t1), new: d(t2), newFrom: "journal-configured", recoverCrashes: true},
		{name: "upgrade, postinst fails", setup: install(t1), op: apply(t2fail), old: d(t1), recoverCrashes: true},
		{name: "upgrade, old prerm fails", setup: install(t1p), op: apply(t2prerm), old: d(t1p)},
		{name: "downgrade to previous", setup: install(t1, t2), op: apply(t1), old: d(t2), new: d(t1), newFrom: "journal-configured"},
		{
			name: "remove", setup: install(t1, t2), old: d(t2), new: none, newFrom: "journal-committed", recoverCrashes: true,
			op: func(_ *env, e *Engine) error { return e.Remove(context.Background(), "com.example:app", "") },
		},
	}
}

// TestCrash crashes every step at every point it offers, in both
// modes, then recovers (crashing Recover too, at each of its points in
// turn) and checks the invariant: the package is wholly the old or
// wholly the new build, as the journal phase dictates, its files match
// the manifest, and state.json agrees.
func TestCrash(t *testing.T) {
	for _, mode := range modes {
		for _, sc := range crashScenarios(mode) {
			t.Run(mode+"/"+sc.name, func(t *testing.T) {
				// Dry run: which points does this step pass?
				v := newEnv(t)
				h := &crashHook{recoverN: -1}
				e := v.engine(h.hook)
				sc.setup(v, e)
				h.active, h.record = true, true
				sc.op(v, e)
				points := h.points
				for _, must := range []string{"journal-committed", "done"} {
					if sc.name == "remove" || !strings.Contains(sc.name, "fails") {
						if !slices.Contains(points, must) {
							t.Fatalf("dry run passed %q, want %q among them", points, must)
						}
					}
				}
				if sc.newFrom != "" && !slices.Contains(points, sc.newFrom) {
					t.Fatalf("dry run passed %q, want %q among them", points, sc.newFrom)
				}
				newFrom := len(points)
				if sc.newFrom != "" {
					newFrom = slices.Index(points, sc.newFrom)
				}
				for i, p := range points {
					t.Run(p, func(t *testing.T) {
						// Each point has its own folders; overlapping their
						// fsync waits keeps the test fast.
						t.Parallel()
						v := newEnv(t)
						h := &crashHook{recoverN: -1, armed: p}
						e := v.engine(h.hook)
						sc.setup(v, e)
						h.active = true
						err := sc.op(v, e)
						if !errors.Is(err, ErrCrash) {
							t.Fatalf("op with a crash at %s = %v, want ErrCrash", p, err)
						}
						if _, err := e.Apply(context.Background(), v.target(pkg{name: "other", version: "1.0.0"})); !errors.Is(err, ErrCrash) {
							t.Errorf("Apply() on a crashed engine = %v, want ErrCrash", err)
						}
						// Recover, crashing it at its first, second, ... point
						// until a run completes.
						for n := 0; ; n++ {
							if n > 200 {
								t.Fatalf("recovery does not converge")
							}
							rh := &crashHook{active: sc.recoverCrashes, recoverN: n}
							e2, err := New(v.config(rh.hook))
							if err != nil {
								t.Fatal(err)
							}
							err = e2.Recover(context.Background())
							if errors.Is(err, ErrCrash) {
								continue
							}
							if err != nil {
								t.Fatalf("Recover() after a crash at %s (recover crash %d) = %v", p, n, err)
							}
							break
						}
						e3 := v.engine(nil)
						v.assertConsistent(e3)
						want := sc.old(v)
						if i >= newFrom {
							want = sc.new(v)
						}
						if got := installedDigest(e3, "app"); got != want {
							t.Errorf("after a crash at %s and recovery, app is %q, want %q", p, got, want)
						}
					})
				}
			})
		}
	}
}

func TestCrashPointsAreNamed(t *testing.T) {
	// A guard for the docs: the points a root upgrade passes, in order.
	v := newEnv(t)
	h := &crashHook{recoverN: -1}
	e := v.engine(h.hook)
	v.apply(e, v.target(pkg{name: "app", version: "1.0.0", install: api.InstallRoot, files: v1Files()}))
	h.active, h.record = true, true
	v.apply(e, v.target(pkg{name: "app", version: "2.0.0", install: api.InstallRoot, files: v2Files()}))
	want := strings.Fields("prepared preinst journal-staging dirs-created stage-1 unpacked synced prerm journal-committed renamed-0 obsolete-0 journal-switched postinst configure journal-configured state-written postrm done")
	k := 0
	for _, p := range h.points {
		if k < len(want) && p == want[k] {
			k++
		}
	}
	if k != len(want) {
		t.Errorf("root upgrade points = %q, want %q in this order among them", h.points, want)
	}
}

// TestRecoverLeftovers plants what a crash between two instructions
// (not at a named point) leaves: a temp symlink beside `current`, temp
// files of atomic writes, a half-restored file. Recovery must leave
// none of them.
func TestRecoverLeftovers(t *testing.T) {
	cases := []struct {
		mode, point string
		plant       func(v *env)
	}{
		{api.InstallPrefix, "journal-committed", func(v *env) {
			os.Symlink("1.0.0", filepath.Join(v.sw, "com/example/app/.current.tmp-dead"))
		}},
		{api.InstallRoot, "journal-switched", func(v *env) {
			os.WriteFile(filepath.Join(v.root, "opt/app/.drover-old.bin"), []byte("half"), 0o600)
		}},
	}
	for _, c := range cases {
		t.Run(c.mode, func(t *testing.T) {
			v := newEnv(t)
			h := &crashHook{recoverN: -1, armed: c.point}
			e := v.engine(h.hook)
			h.active = true
			_, err := e.Apply(context.Background(), v.target(pkg{name: "app", version: "1.0.0", install: c.mode, files: v1Files()}))
			if !errors.Is(err, ErrCrash) {
				t.Fatalf("Apply() = %v, want ErrCrash", err)
			}
			c.plant(v)
			os.WriteFile(filepath.Join(v.state, ".state.json.tmp-dead"), []byte("{"), 0o600)
			os.WriteFile(filepath.Join(v.state, "manifests", ".x.json.tmp-dead"), []byte("{"), 0o600)
			e2 := v.engine(nil)
			v.assertConsistent(e2)
			if got := walk(t, v.state); slices.ContainsFunc(got, func(p string) bool { return strings.Contains(p, ".tmp-") }) {
				t.Errorf("state dir after Recover holds temp files: %q", got)
			}
		})
	}
}
