package install

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/plan"
)

var modes = []string{api.InstallPrefix, api.InstallRoot}

func v1Files() []spec {
	return []spec{
		D("opt/app"),
		X("opt/app/bin", "bin v1"),
		F("opt/app/lib.so", "lib"),
		F("etc/app.conf", "conf v1"),
		L("opt/app/link", "lib.so"),
		F("opt/app/old-only", "old"),
	}
}

func v2Files() []spec {
	return []spec{
		D("opt/app"),
		X("opt/app/bin", "bin v2"),
		F("opt/app/lib.so", "lib"),
		F("etc/app.conf", "conf v2"),
		L("opt/app/link", "bin"),
		F("opt/app/new-only", "new"),
		D("opt/app/share"),
		F("opt/app/share/doc", "doc"),
	}
}

func v3Files() []spec {
	return append(v2Files()[:len(v2Files())-1], F("opt/app/share/doc", "doc v3"), F("usr/lib/app/x", "x"))
}

func inode(t *testing.T, p string) uint64 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

func TestLifecycle(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			v := newEnv(t)
			e := v.engine(nil)
			scripts := api.ScriptNames
			t1 := v.target(pkg{name: "app", version: "1.0.0", install: mode, files: v1Files(), scripts: scripts})
			t2 := v.target(pkg{name: "app", version: "2.0.0", install: mode, files: v2Files(), scripts: scripts})
			t3 := v.target(pkg{name: "app", version: "3.0.0", install: mode, files: v3Files(), scripts: scripts})
			pkgDir := filepath.Join(v.sw, "com", "example", "app")

			want := func(version, digest, previous string) {
				t.Helper()
				got := e.Installed()
				w := []api.InstalledApp{{Name: "com.example:app", Version: version, Tags: []string{"t1"}, Digest: digest, Install: mode, Previous: previous}}
				if diff := cmp.Diff(w, got); diff != "" {
					t.Fatalf("Installed() mismatch (-want +got):\n%s", diff)
				}
				v.assertConsistent(e)
			}

			app := v.apply(e, t1)
			if app.Version != "1.0.0" || app.Digest != t1.Digest {
				t.Errorf("Apply(v1) = %+v, want version 1.0.0 digest %s", app, t1.Digest)
			}
			want("1.0.0", t1.Digest, "")
			var libIno uint64
			if mode == api.InstallRoot {
				libIno = inode(t, filepath.Join(v.root, "opt/app/lib.so"))
			}

			v.apply(e, t2)
			want("2.0.0", t2.Digest, "1.0.0")
			if mode == api.InstallRoot {
				if got := inode(t, filepath.Join(v.root, "opt/app/lib.so")); got != libIno {
					t.Errorf("unchanged lib.so was rewritten (inode %d, was %d): an upgrade must move only changed files", got, libIno)
				}
			} else if !isDir(filepath.Join(pkgDir, "1.0.0")) {
				t.Errorf("previous version folder 1.0.0 is gone after the upgrade")
			}

			v.apply(e, t3)
			want("3.0.0", t3.Digest, "2.0.0")
			ref := e.Referenced()
			for _, c := range []string{"bin v2", "doc v3", markScript("postinst")} {
				if d := v.putBlob(c); !slices.Contains(ref, d) {
					t.Errorf("Referenced() lacks the blob of %q", c)
				}
			}
			if d := v.putBlob("bin v1"); slices.Contains(ref, d) {
				t.Errorf("Referenced() still holds a blob only version 1.0.0 had")
			}
			if mode == api.InstallPrefix && isDir(filepath.Join(pkgDir, "1.0.0")) {
				t.Errorf("version folder 1.0.0 survived two upgrades; only the previous one is kept")
			}
			if _, err := e.Manifest(t2.Digest); err != nil {
				t.Errorf("Manifest(previous) = %v", err)
			}

			// Downgrade to the previous build. In prefix mode, prove no
			// blob is read: delete v2's blobs first.
			if mode == api.InstallPrefix {
				for _, d := range t2.Manifest.Digests() {
					os.Remove(filepath.Join(v.blobs.dir, d))
				}
			}
			v.blobs.reset()
			v.readMarks()
			v.apply(e, t2)
			want("2.0.0", t2.Digest, "3.0.0")
			if opened := v.blobs.reset(); mode == api.InstallPrefix && len(opened) > 0 {
				t.Errorf("rollback to the kept version read blobs %v, want none", opened)
			}
			if got, w := order(v.readMarks()), []string{
				"preinst com.example:app:2.0.0", "prerm com.example:app:3.0.0", "postinst com.example:app:2.0.0",
				"configure com.example:app:2.0.0", "postrm com.example:app:3.0.0",
			}; !slices.Equal(got, w) {
				t.Errorf("downgrade scripts = %q, want %q", got, w)
			}

			// Same build again: nothing runs.
			v.apply(e, t2)
			if got := v.readMarks(); got != nil {
				t.Errorf("Apply(same digest) ran scripts %q, want a no-op", got)
			}

			// A rebuild of the same version.
			t2b := v.target(pkg{name: "app", version: "2.0.0", install: mode, files: append(v2Files(), F("opt/app/rebuilt", "yes")), scripts: scripts})
			v.apply(e, t2b)
			want("2.0.0", t2b.Digest, "2.0.0")
			if mode == api.InstallPrefix {
				if got, _ := os.Readlink(filepath.Join(pkgDir, "current")); got != "2.0.0+"+t2b.Digest[:12] {
					t.Errorf("current -> %q, want the rebuild's own folder 2.0.0+%s", got, t2b.Digest[:12])
				}
			}

			if err := e.Remove(context.Background(), "com.example:app", ""); err != nil {
				t.Fatalf("Remove() = %v", err)
			}
			if got := e.Installed(); len(got) != 0 {
				t.Errorf("Installed() after Remove = %v, want none", got)
			}
			v.assertConsistent(e)
			if got := walk(t, v.sw); len(got) != 0 {
				t.Errorf("software root after Remove holds %q, want nothing", got)
			}
			if got := walk(t, filepath.Join(v.state, "scripts")); len(got) != 0 {
				t.Errorf("kept scripts after Remove: %q, want none", got)
			}
			if err := e.Remove(context.Background(), "com.example:app", ""); !errors.Is(err, ErrNotInstalled) {
				t.Errorf("Remove(again) = %v, want ErrNotInstalled", err)
			}
		})
	}
}

func TestStateSurvivesRestart(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			v := newEnv(t)
			e := v.engine(nil)
			v.apply(e, v.target(pkg{name: "app", version: "1.0.0", install: mode, files: v1Files()}))
			v.apply(e, v.target(pkg{name: "app", version: "2.0.0", install: mode, files: v2Files()}))
			e2 := v.engine(nil)
			if diff := cmp.Diff(e.Installed(), e2.Installed()); diff != "" {
				t.Errorf("Installed() after restart differs (-before +after):\n%s", diff)
			}
			v.assertConsistent(e2)
		})
	}
}

func TestInstances(t *testing.T) {
	v := newEnv(t)
	e := v.engine(nil)
	a := v.target(pkg{name: "app", version: "1.0.0", files: v1Files(), instance: "a"})
	b := v.target(pkg{name: "app", version: "2.0.0", files: v2Files(), instance: "b"})
	v.apply(e, a)
	v.apply(e, b)
	v.assertConsistent(e)
	got := e.Installed()
	if len(got) != 2 || got[0].Instance != "a" || got[1].Instance != "b" {
		t.Fatalf("Installed() = %+v, want instances a and b", got)
	}
	if loc, ok := e.Location("com.example:app", "b"); !ok || loc != filepath.Join(v.sw, "com/example/app@b/2.0.0") {
		t.Errorf("Location(b) = %q, %v, want the 2.0.0 folder of app@b", loc, ok)
	}
	if err := e.Remove(context.Background(), "com.example:app", "a"); err != nil {
		t.Fatal(err)
	}
	v.assertConsistent(e)
	if got := e.Installed(); len(got) != 1 || got[0].Instance != "b" {
		t.Errorf("Installed() after removing a = %+v, want only b", got)
	}
}

func TestScriptOrderAndEnv(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			v := newEnv(t)
			e := v.engine(nil)
			t1 := v.target(pkg{name: "app", version: "1.0.0", install: mode, files: v1Files(), scripts: api.ScriptNames})
			t2 := v.target(pkg{name: "app", version: "2.0.0", install: mode, files: v2Files(), scripts: api.ScriptNames})
			pkgDir := filepath.Join(v.sw, "com/example/app")
			loc := func(version string) string {
				if mode == api.InstallRoot {
					return v.root
				}
				return filepath.Join(pkgDir, version)
			}
			fresh := pkgDir
			if mode == api.InstallRoot {
				fresh = v.root
			}

			v.apply(e, t1)
			lines := v.readMarks()
			if got, w := order(lines), []string{"preinst com.example:app:1.0.0", "postinst com.example:app:1.0.0", "configure com.example:app:1.0.0"}; !slices.Equal(got, w) {
				t.Errorf("install scripts = %q, want %q", got, w)
			}
			wantLine := "preinst pkg=com.example:app:1.0.0 v=1.0.0 old= action=install prefix=" + loc("1.0.0") + " cwd=" + fresh + " root=" + v.root + " dev=dev-1 inst= port=8080"
			if len(lines) == 3 && lines[0] != wantLine {
				t.Errorf("preinst saw\n %s\nwant\n %s", lines[0], wantLine)
			}
			if len(lines) == 3 && !strings.Contains(lines[1], " cwd="+loc("1.0.0")+" ") {
				t.Errorf("postinst saw %s, want cwd %s", lines[1], loc("1.0.0"))
			}

			v.apply(e, t2)
			lines = v.readMarks()
			if got, w := order(lines), []string{
				"preinst com.example:app:2.0.0", "prerm com.example:app:1.0.0", "postinst com.example:app:2.0.0",
				"configure com.example:app:2.0.0", "postrm com.example:app:1.0.0",
			}; !slices.Equal(got, w) {
				t.Errorf("upgrade scripts = %q, want %q", got, w)
			}
			wantLine = "prerm pkg=com.example:app:1.0.0 v=2.0.0 old=1.0.0 action=upgrade prefix=" + loc("1.0.0") + " cwd=" + loc("1.0.0") + " root=" + v.root + " dev=dev-1 inst= port=8080"
			if len(lines) == 5 && lines[1] != wantLine {
				t.Errorf("old prerm saw\n %s\nwant\n %s", lines[1], wantLine)
			}

			if err := e.Remove(context.Background(), "com.example:app", ""); err != nil {
				t.Fatal(err)
			}
			lines = v.readMarks()
			if got, w := order(lines), []string{"prerm com.example:app:2.0.0", "postrm com.example:app:2.0.0"}; !slices.Equal(got, w) {
				t.Errorf("remove scripts = %q, want %q", got, w)
			}
			if len(lines) == 2 && !strings.Contains(lines[0], " action=remove ") {
				t.Errorf("prerm on remove saw %s, want action=remove", lines[0])
			}
			logs, _ := os.ReadDir(v.logs)
			if len(logs) != 10 {
				t.Errorf("%d script logs, want one per run (10)", len(logs))
			}
		})
	}
}

func TestConfigureHook(t *testing.T) {
	v := newEnv(t)
	e := v.engine(nil)
	tg := v.target(pkg{name: "app", version: "1.0.0", files: v1Files(), scripts: []string{"postinst", "configure"}})
	var at string
	tg.Configure = func(_ context.Context, loc string) error {
		at = loc
		v.readMarks()
		return os.WriteFile(filepath.Join(loc, "etc/rendered.conf"), []byte("x"), 0o644)
	}
	v.apply(e, tg)
	if want := filepath.Join(v.sw, "com/example/app/1.0.0"); at != want {
		t.Errorf("Configure ran at %q, want %q", at, want)
	}
	if got := order(v.readMarks()); !slices.Equal(got, []string{"configure com.example:app:1.0.0"}) {
		t.Errorf("after the hook, scripts = %q, want only configure (postinst before the hook)", got)
	}
	// A failing hook rolls the step back.
	t2 := v.target(pkg{name: "app", version: "2.0.0", files: v2Files()})
	t2.Configure = func(context.Context, string) error { return errors.New("bad template") }
	if _, err := e.Apply(context.Background(), t2); err == nil || !strings.Contains(err.Error(), "bad template") {
		t.Errorf("Apply(failing hook) = %v, want the hook's error", err)
	}
	if d := installedDigest(e, "app"); d != tg.Digest {
		t.Errorf("after a failing hook the installed digest is %s, want the old %s", d, tg.Digest)
	}
}

func TestScriptFailures(t *testing.T) {
	type tc struct {
		name    string
		upgrade bool   // v1 installed first
		fail    string // script that fails
		remove  bool   // the step is a removal
		want    string // "" nothing, "v1", "v2"
		appBack bool   // Apply returns the app with its error (postrm)
	}
	cases := []tc{
		{name: "preinst on install", fail: "preinst", want: ""},
		{name: "postinst on install", fail: "postinst", want: ""},
		{name: "configure on install", fail: "configure", want: ""},
		{name: "preinst on upgrade", upgrade: true, fail: "preinst", want: "v1"},
		{name: "old prerm on upgrade", upgrade: true, fail: "prerm", want: "v1"},
		{name: "postinst on upgrade", upgrade: true, fail: "postinst", want: "v1"},
		{name: "configure on upgrade", upgrade: true, fail: "configure", want: "v1"},
		{name: "old postrm on upgrade", upgrade: true, fail: "postrm", want: "v2", appBack: true},
		{name: "prerm on remove", remove: true, fail: "prerm", want: "v1"},
		{name: "postrm on remove", remove: true, fail: "postrm", want: ""},
	}
	for _, mode := range modes {
		for _, c := range cases {
			t.Run(mode+"/"+c.name, func(t *testing.T) {
				v := newEnv(t)
				e := v.engine(nil)
				var p1 map[string]string
				if c.remove {
					p1 = map[string]string{"fail": c.fail}
				}
				t1 := v.target(pkg{name: "app", version: "1.0.0", install: mode, files: v1Files(), scripts: api.ScriptNames, params: p1})
				t2 := v.target(pkg{name: "app", version: "2.0.0", install: mode, files: v2Files(), scripts: api.ScriptNames, params: map[string]string{"fail": c.fail}})
				if c.upgrade || c.remove {
					v.apply(e, t1)
				}
				var err error
				var app *api.InstalledApp
				switch {
				case c.remove:
					err = e.Remove(context.Background(), "com.example:app", "")
				case c.upgrade:
					app, err = e.Apply(context.Background(), t2)
				default:
					t1 = v.target(pkg{name: "app", version: "1.0.0", install: mode, files: v1Files(), scripts: api.ScriptNames, params: map[string]string{"fail": c.fail}})
					app, err = e.Apply(context.Background(), t1)
					t1, t2 = t2, t1 // the failed build is "v2" below
				}
				var se *ScriptError
				if !errors.As(err, &se) {
					t.Fatalf("step error = %v, want a *ScriptError", err)
				}
				if se.Script != c.fail || se.Code != 3 || !strings.Contains(se.Output, "some output") {
					t.Errorf("ScriptError = %+v, want script %s, code 3, output with the script's output", se, c.fail)
				}
				if w := c.fail + " exited 3: " + c.fail + " is failing on purpose"; se.Error() != w {
					t.Errorf("ScriptError.Error() = %q, want %q", se.Error(), w)
				}
				if c.appBack != (app != nil) {
					t.Errorf("Apply returned app %v with the error, want app: %v", app, c.appBack)
				}
				wantDigest := map[string]string{"": "", "v1": t1.Digest, "v2": t2.Digest}[c.want]
				if got := installedDigest(e, "app"); got != wantDigest {
					t.Errorf("installed digest = %q, want %s (%q)", got, c.want, wantDigest)
				}
				v.assertConsistent(e)
			})
		}
	}
}

func TestScriptTimeout(t *testing.T) {
	v := newEnv(t)
	cfg := v.config(nil)
	cfg.ScriptTimeout = 200 * time.Millisecond
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tg := v.target(pkg{name: "app", version: "1.0.0", files: v1Files()})
	tg.Manifest.Scripts = map[string]string{"postinst": v.putBlob("#!/bin/sh\necho started\nsleep 30 &\nsleep 30\n")}
	_, err = e.Apply(context.Background(), tg)
	var se *ScriptError
	if !errors.As(err, &se) || se.Code != -1 || !strings.Contains(se.Error(), "timeout") {
		t.Fatalf("Apply(hanging postinst) = %v, want a ScriptError naming the timeout", err)
	}
	if d := installedDigest(e, "app"); d != "" {
		t.Errorf("installed %s after a timed-out postinst, want nothing", d)
	}
	v.assertConsistent(e)
}

func TestOverlayInstall(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			v := newEnv(t)
			e := v.engine(nil)
			files := []spec{
				F("opt/a/conf", "generic"),
				F("opt/a/conf", "arm").on("armv7l"),
				F("opt/a/conf", "arm+glibc").on("glibc", "armv7l"),
				F("opt/a/only-amd64", "x").on("amd64"),
			}
			tg := v.target(pkg{name: "a", version: "1.0.0", install: mode, files: files, have: []string{"linux", "armv7l", "glibc"}})
			v.apply(e, tg)
			v.assertConsistent(e)
			loc := v.root
			if mode == api.InstallPrefix {
				loc = filepath.Join(v.sw, "com/example/a/current")
			}
			if b, err := os.ReadFile(filepath.Join(loc, "opt/a/conf")); err != nil || string(b) != "arm+glibc" {
				t.Errorf("opt/a/conf = %q, %v, want the most specific overlay's content", b, err)
			}
			if ok, _ := exists(filepath.Join(loc, "opt/a/only-amd64")); ok {
				t.Errorf("an overlay that does not fit was installed")
			}
			// The device loses a tag: same build, other overlays: reinstalled.
			tg.Have = []string{"linux", "armv7l"}
			v.apply(e, tg)
			v.assertConsistent(e)
			if b, _ := os.ReadFile(filepath.Join(loc, "opt/a/conf")); string(b) != "arm" {
				t.Errorf("after the tag change opt/a/conf = %q, want %q", b, "arm")
			}
		})
	}
}

func TestMissingAndShortBlobs(t *testing.T) {
	for _, mode := range modes {
		for _, what := range []string{"missing", "short", "corrupt"} {
			t.Run(mode+"/"+what, func(t *testing.T) {
				v := newEnv(t)
				e := v.engine(nil)
				t1 := v.target(pkg{name: "app", version: "1.0.0", install: mode, files: v1Files()})
				v.apply(e, t1)
				t2 := v.target(pkg{name: "app", version: "2.0.0", install: mode, files: v2Files()})
				d := v.putBlob("new")
				switch what {
				case "missing":
					os.Remove(filepath.Join(v.blobs.dir, d))
				case "short":
					os.WriteFile(filepath.Join(v.blobs.dir, d), []byte("ne"), 0o644)
				case "corrupt": // same size, other bytes: only the hash tells
					os.WriteFile(filepath.Join(v.blobs.dir, d), []byte("NEW"), 0o644)
				}
				_, err := e.Apply(context.Background(), t2)
				if err == nil || !strings.Contains(err.Error(), d) {
					t.Fatalf("Apply(%s blob) = %v, want an error naming the blob", what, err)
				}
				if what == "missing" && !errors.Is(err, errBlobNotFound) {
					t.Errorf("Apply(missing blob) = %v, want it to wrap the cache's not-found error", err)
				}
				var ce *CorruptBlobError
				if what == "corrupt" && (!errors.As(err, &ce) || ce.Digest != d) {
					t.Errorf("Apply(corrupt blob) = %v, want a *CorruptBlobError naming %s", err, d)
				}
				if got := installedDigest(e, "app"); got != t1.Digest {
					t.Errorf("installed %s, want the old build %s", got, t1.Digest)
				}
				v.assertConsistent(e)
			})
		}
	}
}

func TestHostileManifests(t *testing.T) {
	cases := []struct {
		name  string
		files []spec
	}{
		{"dotdot path", []spec{F("../escape", "x")}},
		{"absolute path", []spec{F("/etc/passwd", "x")}},
		{"dot element", []spec{F("a/./b", "x")}},
		{"device", []spec{{path: "dev/null", typ: "char", mode: 0o666}}},
		{"absolute symlink", []spec{L("a/link", "/etc/shadow")}},
		{"symlink leaves root", []spec{L("a/link", "../../etc")}},
		{"symlink climbs after a name", []spec{L("s", "."), L("t", "s/..")}},
		{"file under a symlink", []spec{L("a", "b"), D("b"), F("a/c", "x")}},
		{"file under a file", []spec{F("a", "x"), F("a/b", "y")}},
		// What the server refuses at push the engine refuses too: one
		// validation (pkgfile.ValidateManifest) for both.
		{"setuid file", []spec{{path: "a", typ: api.TypeFile, content: "x", mode: 0o4755}}},
	}
	for _, mode := range modes {
		for _, c := range cases {
			t.Run(mode+"/"+c.name, func(t *testing.T) {
				v := newEnv(t)
				e := v.engine(nil)
				tg := v.target(pkg{name: "bad", version: "1.0.0", install: mode, files: c.files, scripts: []string{"preinst"}})
				if _, err := e.Apply(context.Background(), tg); err == nil {
					t.Fatalf("Apply(%s) succeeded, want an error", c.name)
				}
				if got := v.readMarks(); got != nil {
					t.Errorf("a script ran for a hostile manifest: %q", got)
				}
				v.assertConsistent(e)
			})
		}
	}
}

func TestRootConflicts(t *testing.T) {
	cases := []struct {
		name     string
		setup    func(v *env, e *Engine)
		files    []spec
		conflict bool
		owner    string // named in the error
	}{
		{
			name: "owned by another package",
			setup: func(v *env, e *Engine) {
				v.apply(e, v.target(pkg{name: "other", version: "1.0.0", install: api.InstallRoot, files: []spec{F("etc/shared.conf", "theirs")}}))
			},
			files: []spec{F("etc/shared.conf", "theirs")}, conflict: true, owner: "com.example:other",
		},
		{
			name: "owned by another package under another name",
			setup: func(v *env, e *Engine) {
				v.apply(e, v.target(pkg{name: "other", version: "1.0.0", install: api.InstallRoot, files: []spec{F("opt/x", "theirs")}}))
				os.Symlink("opt", filepath.Join(v.root, "srv"))
			},
			files: []spec{F("srv/x", "theirs")}, conflict: true, owner: "com.example:other",
		},
		{
			name: "two paths of the package are one file on disk",
			setup: func(v *env, _ *Engine) {
				os.Mkdir(filepath.Join(v.root, "opt"), 0o755)
				os.Symlink("opt", filepath.Join(v.root, "srv"))
			},
			files: []spec{F("opt/y", "1"), F("srv/y", "2")}, conflict: true,
		},
		{
			name:  "unowned file with other content",
			setup: func(v *env, _ *Engine) { os.WriteFile(filepath.Join(v.root, "etc/local.conf"), []byte("mine"), 0o644) },
			files: []spec{F("etc/local.conf", "package")}, conflict: true,
		},
		{
			name:  "unowned identical file is adopted",
			setup: func(v *env, _ *Engine) { os.WriteFile(filepath.Join(v.root, "etc/same.conf"), []byte("same"), 0o644) },
			files: []spec{F("etc/same.conf", "same")},
		},
		{
			name:  "directory in the way of a file",
			setup: func(v *env, _ *Engine) { os.Mkdir(filepath.Join(v.root, "etc/app.d"), 0o755) },
			files: []spec{F("etc/app.d", "x")}, conflict: true,
		},
		{
			name:  "file in the way of a directory",
			setup: func(v *env, _ *Engine) { os.WriteFile(filepath.Join(v.root, "etc/dir"), []byte("x"), 0o644) },
			files: []spec{F("etc/dir/conf", "x")}, conflict: true,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := newEnv(t)
			e := v.engine(nil)
			c.setup(v, e)
			v.snapshotFixture()
			before := walk(t, v.root)
			tg := v.target(pkg{name: "app", version: "1.0.0", install: api.InstallRoot, files: c.files, scripts: []string{"preinst"}})
			_, err := e.Apply(context.Background(), tg)
			if !c.conflict {
				if err != nil {
					t.Fatalf("Apply() = %v, want success", err)
				}
				v.assertConsistent(e)
				return
			}
			if !errors.Is(err, ErrConflict) {
				t.Fatalf("Apply() = %v, want ErrConflict", err)
			}
			if c.owner != "" && !strings.Contains(err.Error(), c.owner) {
				t.Errorf("Apply() = %v, want the owner %s named", err, c.owner)
			}
			if got := v.readMarks(); got != nil {
				t.Errorf("preinst ran before the conflict was found: %q", got)
			}
			if got := walk(t, v.root); !slices.Equal(got, before) {
				t.Errorf("root changed by a refused install:\n got %q\nwant %q", got, before)
			}
			if installedDigest(e, "app") != "" {
				t.Errorf("app installed despite the conflict")
			}
		})
	}
}

func TestRootPlantedSymlinks(t *testing.T) {
	t.Run("directory symlink leading out", func(t *testing.T) {
		for _, link := range []string{"abs", "rel"} {
			t.Run(link, func(t *testing.T) {
				v := newEnv(t)
				outside := filepath.Join(v.base, "outside")
				os.Mkdir(outside, 0o755)
				target := outside
				if link == "rel" {
					target = "../../outside"
				}
				if err := os.Symlink(target, filepath.Join(v.root, "srv")); err != nil {
					t.Fatal(err)
				}
				v.snapshotFixture()
				e := v.engine(nil)
				v.apply(e, v.target(pkg{name: "app", version: "1.0.0", install: api.InstallRoot, files: []spec{F("srv/app.conf", "x"), D("srv/d")}}))
				if got := walk(t, outside); len(got) != 0 {
					t.Errorf("install wrote outside the root through a planted symlink: %q", got)
				}
				if err := e.Remove(context.Background(), "com.example:app", ""); err != nil {
					t.Fatal(err)
				}
				if got := walk(t, outside); len(got) != 0 {
					t.Errorf("outside after remove: %q", got)
				}
			})
		}
	})
	t.Run("file symlink leading out", func(t *testing.T) {
		v := newEnv(t)
		secret := filepath.Join(v.base, "secret")
		os.WriteFile(secret, []byte("secret"), 0o600)
		os.Symlink(secret, filepath.Join(v.root, "etc/app.conf"))
		e := v.engine(nil)
		_, err := e.Apply(context.Background(), v.target(pkg{name: "app", version: "1.0.0", install: api.InstallRoot, files: []spec{F("etc/app.conf", "evil")}}))
		if !errors.Is(err, ErrConflict) {
			t.Errorf("Apply() over a planted symlink = %v, want ErrConflict", err)
		}
		if b, _ := os.ReadFile(secret); string(b) != "secret" {
			t.Errorf("the file outside the root became %q", b)
		}
	})
}

func TestRecoverFirst(t *testing.T) {
	v := newEnv(t)
	e := v.engine(nil)
	if err := e.Recover(context.Background()); err != nil {
		t.Fatalf("Recover(clean) = %v", err)
	}
	os.WriteFile(filepath.Join(v.state, "journal.json"), []byte(`{"op":"apply","phase":"staging","mode":"prefix","new":{"name":"com.example:x"}}`), 0o600)
	_, err := e.Apply(context.Background(), v.target(pkg{name: "app", version: "1.0.0", files: v1Files()}))
	if !errors.Is(err, ErrRecoverFirst) {
		t.Errorf("Apply() with a journal = %v, want ErrRecoverFirst", err)
	}
	if err := e.Recover(context.Background()); err != nil {
		t.Fatalf("Recover() = %v", err)
	}
	v.apply(e, v.target(pkg{name: "app", version: "1.0.0", files: v1Files()}))
	v.assertConsistent(e)
}

func TestRemoveWithoutManifest(t *testing.T) {
	v := newEnv(t)
	e := v.engine(nil)
	tg := v.target(pkg{name: "app", version: "1.0.0", install: api.InstallRoot, files: v1Files()})
	v.apply(e, tg)
	if err := os.Remove(filepath.Join(v.state, "manifests", tg.Digest+".json")); err != nil {
		t.Fatal(err)
	}
	if err := e.Remove(context.Background(), "com.example:app", ""); err != nil {
		t.Fatalf("Remove() without the kept manifest = %v, want success", err)
	}
	v.assertConsistent(e)
}

func TestCheckInstalledDetects(t *testing.T) {
	tamper := []struct {
		name string
		do   func(loc string) error
		want string
	}{
		{"content", func(loc string) error {
			return os.WriteFile(filepath.Join(loc, "opt/app/lib.so"), []byte("LIB"), 0o644)
		}, "content"},
		{"size", func(loc string) error {
			return os.WriteFile(filepath.Join(loc, "opt/app/lib.so"), []byte("library"), 0o644)
		}, "bytes"},
		{"mode", func(loc string) error { return os.Chmod(filepath.Join(loc, "opt/app/bin"), 0o700) }, "mode"},
		{"symlink target", func(loc string) error {
			p := filepath.Join(loc, "opt/app/link")
			os.Remove(p)
			return os.Symlink("bin", p)
		}, "symlink to"},
		{"missing", func(loc string) error { return os.Remove(filepath.Join(loc, "etc/app.conf")) }, "no such file"},
		{"file became a dir", func(loc string) error {
			p := filepath.Join(loc, "opt/app/old-only")
			os.Remove(p)
			return os.Mkdir(p, 0o755)
		}, "want a regular file"},
	}
	for _, mode := range modes {
		for _, c := range tamper {
			t.Run(mode+"/"+c.name, func(t *testing.T) {
				v := newEnv(t)
				e := v.engine(nil)
				tg := v.target(pkg{name: "app", version: "1.0.0", install: mode, files: v1Files()})
				app := v.apply(e, tg)
				if err := CheckInstalled(v.root, v.sw, *app, tg.Manifest, nil); err != nil {
					t.Fatalf("CheckInstalled(fresh install) = %v", err)
				}
				loc := v.root
				if mode == api.InstallPrefix {
					loc = filepath.Join(v.sw, "com/example/app/1.0.0")
				}
				if err := c.do(loc); err != nil {
					t.Fatal(err)
				}
				err := CheckInstalled(v.root, v.sw, *app, tg.Manifest, nil)
				if err == nil || !strings.Contains(err.Error(), c.want) {
					t.Errorf("CheckInstalled(after %s) = %v, want an error mentioning %q", c.name, err, c.want)
				}
			})
		}
	}
}

// The plan decides a step's kind and the engine takes it; without one
// (a standalone install, the way back after a failed start) the engine
// asks the plan's rule, never a rule of its own.
func TestStepKindIsThePlans(t *testing.T) {
	cases := []struct {
		name       string
		from, to   string
		action     plan.Action
		wantAction string
	}{
		{"given by the plan", "1.0.0", "2.0.0", plan.Upgrade, "upgrade"},
		{"plan says downgrade", "2.0.0", "1.0.0", plan.Downgrade, "downgrade"},
		{"plan's rule: other build metadata is an upgrade", "1.0.0+a", "1.0.0+b", "", "upgrade"},
		{"plan's rule: same version is a reinstall", "1.0.0", "1.0.0", "", "reinstall"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := newEnv(t)
			e := v.engine(nil)
			v.apply(e, v.target(pkg{name: "app", version: c.from, files: v1Files(), scripts: []string{"preinst"}}))
			v.readMarks()
			files := v2Files()
			tg := v.target(pkg{name: "app", version: c.to, files: files, scripts: []string{"preinst"}})
			tg.Action = string(c.action)
			v.apply(e, tg)
			lines := v.readMarks()
			if len(lines) != 1 || !strings.Contains(lines[0], " action="+c.wantAction+" ") {
				t.Errorf("%s -> %s (plan %q): preinst saw %q, want action=%s", c.from, c.to, c.action, lines, c.wantAction)
			}
		})
	}
}
