package install

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/debtest"
)

// debPkg is a root-mode test build that carries Debian packages, and
// whose preinst and postinst check that dpkg runs between them.
type debPkg struct {
	name, version string
	debs          []debtest.Control
	// file is a file of the build's own tree.
	file string
	// failPostinst makes the postinst exit 9 (after checking the debs).
	failPostinst bool
}

func (v *env) debTarget(p debPkg) Target {
	v.t.Helper()
	m := &api.Manifest{Group: "com.example", Name: p.name, Version: p.version, Tags: []string{}, Install: api.InstallRoot}
	if p.file != "" {
		m.Files = []api.File{
			{Path: "etc", Type: api.TypeDir, Mode: 0o755},
			{Path: "etc/" + p.name, Type: api.TypeFile, Mode: 0o644, Digest: v.putBlob(p.file), Size: int64(len(p.file))},
		}
	}
	var pre, post strings.Builder
	pre.WriteString("#!/bin/sh\n")
	post.WriteString("#!/bin/sh\n")
	dir := v.t.TempDir()
	for _, c := range p.debs {
		path := debtest.Build(v.t, dir, c)
		b, err := os.ReadFile(path)
		if err != nil {
			v.t.Fatal(err)
		}
		m.Debs = append(m.Debs, api.Deb{Name: c.Name, Version: c.Version, Arch: "all", Digest: v.putBlob(string(b)), Size: int64(len(b))})
		// Each tiny package has usr/share/NAME/version.
		marker := `"$DROVER_ROOT/usr/share/` + c.Name + `/version"`
		pre.WriteString(`if [ -z "$DROVER_OLD_VERSION" ] && [ -f ` + marker + ` ] && [ "$(cat ` + marker + `)" = "` + c.Version + `" ]; then echo "preinst: ` + c.Name + ` ` + c.Version + ` already there"; exit 8; fi` + "\n")
		post.WriteString(`[ "$(cat ` + marker + `)" = "` + c.Version + `" ] || { echo "postinst: ` + c.Name + ` ` + c.Version + ` missing"; exit 7; }` + "\n")
	}
	if p.failPostinst {
		post.WriteString("echo postinst fails on purpose; exit 9\n")
	}
	m.Scripts = map[string]string{"preinst": v.putBlob(pre.String()), "postinst": v.putBlob(post.String())}
	b, err := json.Marshal(m)
	if err != nil {
		v.t.Fatal(err)
	}
	h := sha256.Sum256(b)
	return Target{Manifest: m, Digest: hex.EncodeToString(h[:]), Tags: []string{}}
}

func tiny(name, version, depends string) debtest.Control {
	return debtest.Control{Name: name, Version: version, Depends: depends,
		Files: map[string]string{"usr/share/" + name + "/version": version}}
}

// dpkgDB is what dpkg-query says of the root: "name version status".
func (v *env) dpkgDB() []string {
	v.t.Helper()
	out, err := exec.Command("dpkg-query", "--root="+v.root, "--show", "--showformat=${Package} ${Version} ${db:Status-Status}\n").Output()
	if err != nil {
		v.t.Fatalf("dpkg-query: %v", err)
	}
	var lines []string
	for l := range strings.SplitSeq(strings.TrimSpace(string(out)), "\n") {
		if l != "" && !strings.HasSuffix(l, " not-installed") {
			lines = append(lines, l)
		}
	}
	return lines
}

func newDebEnv(t *testing.T) *env {
	debtest.NeedDpkg(t)
	if os.Geteuid() != 0 {
		t.Skip("dpkg installs only as root (run the tests as root)")
	}
	v := newEnv(t)
	debtest.Root(t, v.root)
	v.snapshotFixture()
	return v
}

// assertDebConsistent is assertConsistent for a root that dpkg shares:
// no journal, and every app's files as its build says.
func (v *env) assertDebConsistent(e *Engine) {
	v.t.Helper()
	if ok, _ := exists(filepath.Join(v.state, "journal.json")); ok {
		v.t.Fatalf("journal.json still there")
	}
	for _, a := range e.state.Apps {
		m, err := e.Manifest(a.Digest)
		if err != nil {
			v.t.Fatalf("Manifest(%s) = %v", a.Digest, err)
		}
		if err := CheckInstalled(v.root, v.sw, a.public(), m, a.Have); err != nil {
			v.t.Fatalf("CheckInstalled(%s %s) = %v", a.Name, a.Version, err)
		}
	}
}

func TestDebsInstallUpgradeShareRemove(t *testing.T) {
	v := newDebEnv(t)
	e := v.engine(nil)
	ctx := context.Background()

	v.apply(e, v.debTarget(debPkg{name: "a", version: "1.0.0", file: "a1", debs: []debtest.Control{tiny("drover-x", "1.0", "")}}))
	if diff := cmp.Diff([]string{"drover-x 1.0 installed"}, v.dpkgDB()); diff != "" {
		t.Fatalf("after install, dpkg (-want +got):\n%s", diff)
	}
	// Upgrade: the new build's deb replaces the old one, a new one comes.
	v.apply(e, v.debTarget(debPkg{name: "a", version: "2.0.0", file: "a2", debs: []debtest.Control{tiny("drover-x", "2.0", ""), tiny("drover-y", "1.0", "drover-x (>= 2.0)")}}))
	if diff := cmp.Diff([]string{"drover-x 2.0 installed", "drover-y 1.0 installed"}, v.dpkgDB()); diff != "" {
		t.Fatalf("after upgrade, dpkg (-want +got):\n%s", diff)
	}
	// Downgrade to a build without drover-y: it goes.
	v.apply(e, v.debTarget(debPkg{name: "a", version: "1.5.0", file: "a15", debs: []debtest.Control{tiny("drover-x", "2.0", "")}}))
	if diff := cmp.Diff([]string{"drover-x 2.0 installed"}, v.dpkgDB()); diff != "" {
		t.Fatalf("after downgrade, dpkg (-want +got):\n%s", diff)
	}
	// Another package carries drover-x too: removing a keeps it.
	bt := v.debTarget(debPkg{name: "b", version: "1.0.0", debs: []debtest.Control{tiny("drover-x", "2.0", "")}})
	bt.Manifest.Scripts = nil // its preinst would see drover-x there: it is
	v.apply(e, bt)
	if err := e.Remove(ctx, "com.example:a", ""); err != nil {
		t.Fatalf("Remove(a) = %v", err)
	}
	if diff := cmp.Diff([]string{"drover-x 2.0 installed"}, v.dpkgDB()); diff != "" {
		t.Fatalf("after removing a, b still carries drover-x; dpkg (-want +got):\n%s", diff)
	}
	if err := e.Remove(ctx, "com.example:b", ""); err != nil {
		t.Fatalf("Remove(b) = %v", err)
	}
	if got := v.dpkgDB(); len(got) != 0 {
		t.Fatalf("after removing every package, dpkg has %q, want nothing", got)
	}
	v.assertDebConsistent(e)
}

func TestDebsFailureLeavesLastGoodState(t *testing.T) {
	for _, tc := range []struct {
		name string
		next debPkg
		want string // in the error
	}{
		{"missing dependency", debPkg{name: "a", version: "2.0.0", file: "a2", debs: []debtest.Control{tiny("drover-x", "2.0", ""), tiny("drover-y", "1.0", "drover-missing (>= 1)")}},
			"dpkg --install exited 1: dpkg: dependency problems prevent configuration of drover-y: drover-y depends on drover-missing (>= 1); however: Package drover-missing is not installed."},
		{"postinst after dpkg fails", debPkg{name: "a", version: "2.0.0", file: "a2", debs: []debtest.Control{tiny("drover-x", "2.0", ""), tiny("drover-y", "1.0", "")}, failPostinst: true},
			"postinst exited 9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := newDebEnv(t)
			e := v.engine(nil)
			v.apply(e, v.debTarget(debPkg{name: "a", version: "1.0.0", file: "a1", debs: []debtest.Control{tiny("drover-x", "1.0", "")}}))
			_, err := e.Apply(context.Background(), v.debTarget(tc.next))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Apply(a 2.0.0) = %v, want an error with %q", err, tc.want)
			}
			var se *ScriptError
			if !errors.As(err, &se) || se.Output == "" {
				t.Errorf("Apply(a 2.0.0) = %v: want a *ScriptError with the output", err)
			}
			if diff := cmp.Diff([]string{"drover-x 1.0 installed"}, v.dpkgDB()); diff != "" {
				t.Errorf("dpkg after the failed upgrade (-want +got):\n%s", diff)
			}
			if b, _ := os.ReadFile(filepath.Join(v.root, "etc", "a")); string(b) != "a1" {
				t.Errorf("etc/a = %q, want the old build's a1", b)
			}
			if got := e.Installed(); len(got) != 1 || got[0].Version != "1.0.0" {
				t.Errorf("Installed() = %+v, want a 1.0.0", got)
			}
			v.assertDebConsistent(e)
		})
	}
}

func TestDebsFreshInstallFailure(t *testing.T) {
	v := newDebEnv(t)
	e := v.engine(nil)
	_, err := e.Apply(context.Background(), v.debTarget(debPkg{name: "c", version: "1.0.0", file: "c1", debs: []debtest.Control{tiny("drover-z", "1.0", "drover-missing")}}))
	if err == nil || !strings.Contains(err.Error(), "Package drover-missing is not installed") {
		t.Fatalf("Apply(c) = %v, want dpkg's dependency error", err)
	}
	if got := v.dpkgDB(); len(got) != 0 {
		t.Errorf("dpkg after the failed install has %q, want nothing", got)
	}
	if got := e.Installed(); len(got) != 0 {
		t.Errorf("Installed() = %+v, want nothing", got)
	}
	if _, err := os.Stat(filepath.Join(v.root, "etc", "c")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("etc/c after the failed install: %v, want it absent", err)
	}
	v.assertDebConsistent(e)
}

func TestDpkgSummary(t *testing.T) {
	for _, tc := range []struct{ out, want string }{
		{"Selecting previously unselected package hello.\nUnpacking hello (2.10-3) ...\ndpkg: dependency problems prevent configuration of hello:\n hello depends on libc6 (>= 2.34); however:\n  Package libc6 is not installed.\n\ndpkg: error processing package hello (--install):\n dependency problems - leaving unconfigured\nErrors were encountered while processing:\n hello\n",
			"dpkg: dependency problems prevent configuration of hello: hello depends on libc6 (>= 2.34); however: Package libc6 is not installed."},
		{"dpkg: warning: 'ldconfig' not found in PATH\ndpkg: error: cannot access archive 'x.deb': No such file or directory\n", "dpkg: error: cannot access archive 'x.deb': No such file or directory"},
		{"something else\nlast words\n", "last words"},
	} {
		if got := dpkgSummary(tc.out); got != tc.want {
			t.Errorf("dpkgSummary(%q) = %q, want %q", tc.out, got, tc.want)
		}
	}
}

// TestDebsCrashRecovery: a kill -9 after dpkg ran (or after postinst)
// and before the step is configured: Recover puts dpkg's packages back
// with the files.
func TestDebsCrashRecovery(t *testing.T) {
	for _, point := range []string{"debs", "postinst"} {
		t.Run(point, func(t *testing.T) {
			v := newDebEnv(t)
			e := v.engine(nil)
			v.apply(e, v.debTarget(debPkg{name: "a", version: "1.0.0", file: "a1", debs: []debtest.Control{tiny("drover-x", "1.0", "")}}))
			crash := v.engine(func(p string) error {
				if p == point {
					return ErrCrash
				}
				return nil
			})
			next := v.debTarget(debPkg{name: "a", version: "2.0.0", file: "a2", debs: []debtest.Control{tiny("drover-x", "2.0", ""), tiny("drover-y", "1.0", "")}})
			if _, err := crash.Apply(context.Background(), next); !errors.Is(err, ErrCrash) {
				t.Fatalf("Apply() = %v, want the simulated crash", err)
			}
			if diff := cmp.Diff([]string{"drover-x 2.0 installed", "drover-y 1.0 installed"}, v.dpkgDB()); diff != "" {
				t.Fatalf("at the crash dpkg has (-want +got):\n%s", diff)
			}
			e = v.engine(nil) // recovers
			if diff := cmp.Diff([]string{"drover-x 1.0 installed"}, v.dpkgDB()); diff != "" {
				t.Errorf("after recovery dpkg has (-want +got):\n%s", diff)
			}
			if b, _ := os.ReadFile(filepath.Join(v.root, "etc", "a")); string(b) != "a1" {
				t.Errorf("etc/a = %q after recovery, want a1", b)
			}
			v.assertDebConsistent(e)
		})
	}
}
