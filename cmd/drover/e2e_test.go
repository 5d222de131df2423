package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// toolSources are the packages of the end-to-end test: a prefix-mode tool
// with a generic and an "edge" build of 1.0.0 and a generic 1.1.0, and a
// root-mode config package.
func buildFleetPackages(t *testing.T, f *fleet) []string {
	t.Helper()
	src := filepath.Join(f.dir, "src")
	tool := func(version, tags, body string) pkgSource {
		deps := ""
		if version == "1.1.0" {
			deps = "depends:\n  - {name: com.example:lib, version: \"^1.0\"}\n"
		}
		return pkgSource{
			yaml: "group: com.example\nname: tool\nversion: " + version + "\ntags: [" + tags + "]\n" + deps,
			files: map[string]string{
				"files/bin/tool":        "#!/bin/sh\necho " + body + "\n",
				"files/share/README":    "tool " + version + "\n",
				"files/share/empty.txt": "",
			},
			scripts: markScripts(version),
		}
	}
	sources := map[string]pkgSource{
		"tool-1.0.0":      tool("1.0.0", "linux", "generic-1.0.0"),
		"tool-1.0.0-edge": tool("1.0.0", "linux, edge", "edge-1.0.0"),
		"tool-1.1.0":      tool("1.1.0", "linux", "generic-1.1.0"),
		"lib-1.0.0": {
			yaml:  "group: com.example\nname: lib\nversion: 1.0.0\n",
			files: map[string]string{"files/lib/libthing.so": "not really a library\n"},
		},
		"conf-1.0.0": {
			yaml:  "group: com.example\nname: conf\nversion: 1.0.0\ninstall: root\n",
			files: map[string]string{"files/etc/app/app.conf": "level = 1\n", "files/etc/app/conf.d/extra.conf": "x = 2\n"},
		},
	}
	var files []string
	for name, p := range sources {
		dir := writeSource(t, filepath.Join(src, name), p)
		out := filepath.Join(f.dir, name+".drover")
		f.mustOK(nil, "pkg", "build", dir, "-o", out)
		files = append(files, out)
	}
	return files
}

func writeState(t *testing.T, f *fleet, id, yaml string) string {
	t.Helper()
	path := filepath.Join(f.dir, "state-"+id+".yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestEndToEnd(t *testing.T) {
	f := newFleet(t)
	files := buildFleetPackages(t, f)

	// Building again gives the very same bytes.
	again := filepath.Join(f.dir, "again.drover")
	f.mustOK(nil, "pkg", "build", filepath.Join(f.dir, "src", "tool-1.1.0"), "-o", again)
	if !bytes.Equal([]byte(readFile(t, again)), []byte(readFile(t, filepath.Join(f.dir, "tool-1.1.0.drover")))) {
		t.Errorf("building the same folder twice gave different package files")
	}

	out := f.op(append([]string{"pkg", "push"}, files...)...)
	if got := strings.Count(out, "pushed "); got != 5 {
		t.Fatalf("pkg push printed %d 'pushed' lines, want 5:\n%s", got, out)
	}
	// A second push uploads nothing: the server has every blob.
	out = f.op("pkg", "push", filepath.Join(f.dir, "tool-1.1.0.drover"))
	if !strings.Contains(out, "(0 of ") {
		t.Errorf("second push uploaded blobs again: %s", out)
	}
	ls := f.op("pkg", "ls")
	for _, want := range []string{"com.example:tool:1.0.0", "com.example:tool:1.1.0", "com.example:conf:1.0.0", "edge,linux"} {
		if !strings.Contains(ls, want) {
			t.Errorf("pkg ls lacks %q:\n%s", want, ls)
		}
	}

	alpha := f.newAgent("alpha", "--tags", "edge", "--labels", "env=test")
	beta := f.newAgent("beta")
	alpha.start()
	beta.start()
	f.waitFor("alpha", "reported", func(d deviceJSON) bool { return len(d.SystemTags) > 0 })
	f.waitFor("beta", "reported", func(d deviceJSON) bool { return len(d.SystemTags) > 0 })

	// Install: both get tool 1.0.0, alpha the edge build (most specific wins).
	// One file, one document per device: both states are set in one call.
	var docs []string
	for _, a := range []*agentProc{alpha, beta} {
		docs = append(docs, "id: "+a.id+"\napps:\n  - name: com.example:tool\n    version: 1.0.0\n  - name: com.example:conf\n    version: \">=1.0.0, <2.0.0\"\n")
	}
	if out := f.op("state", "set", "-f", writeState(t, f, "both", strings.Join(docs, "---\n"))); strings.Count(out, "desired state of") != 2 {
		t.Errorf("state set of two documents said:\n%s", out)
	}
	f.waitConverged("alpha", "com.example:conf=1.0.0", "com.example:tool=1.0.0")
	f.waitConverged("beta", "com.example:conf=1.0.0", "com.example:tool=1.0.0")
	for _, c := range []struct {
		a    *agentProc
		want string
	}{{alpha, "edge-1.0.0"}, {beta, "generic-1.0.0"}} {
		cur := filepath.Join(c.a.software, "com", "example", "tool", "current")
		if target, err := os.Readlink(cur); err != nil || filepath.Base(target) != "1.0.0" {
			t.Errorf("%s: current -> %q (%v), want 1.0.0", c.a.id, target, err)
		}
		if got := readFile(t, filepath.Join(cur, "bin", "tool")); !strings.Contains(got, c.want) {
			t.Errorf("%s: bin/tool = %q, want the %s build", c.a.id, got, c.want)
		}
		if got := readFile(t, filepath.Join(c.a.root, "etc", "app", "app.conf")); got != "level = 1\n" {
			t.Errorf("%s: root-mode etc/app/app.conf = %q", c.a.id, got)
		}
		if got := readFile(t, filepath.Join(c.a.root, "marks")); got != "preinst of 1.0.0: version=1.0.0 old=\npostinst of 1.0.0: version=1.0.0 old=\n" {
			t.Errorf("%s: install scripts ran as\n%s", c.a.id, got)
		}
	}
	show := f.op("device", "show", "alpha")
	for _, want := range []string{"id: alpha", "systemtags:", "- edge", "- name: com.example:tool", "version: 1.0.0"} {
		if !strings.Contains(show, want) {
			t.Errorf("device show alpha lacks %q:\n%s", want, show)
		}
	}
	if got := f.op("state", "get", "beta"); !strings.Contains(got, "name: com.example:tool") || !strings.Contains(got, "id: beta") {
		t.Errorf("state get beta:\n%s", got)
	}

	// Upgrade beta with a constraint: the newest fitting version wins, and
	// its new dependency is installed first.
	os.Remove(filepath.Join(beta.root, "marks"))
	f.op("state", "set", "-f", writeState(t, f, "beta", "id: beta\napps:\n  - name: com.example:tool\n    version: ^1.0\n  - name: com.example:conf\n    version: 1.0.0\n"))
	f.waitConverged("beta", "com.example:conf=1.0.0", "com.example:lib=1.0.0", "com.example:tool=1.1.0")
	if plan := f.op("events", "--device", "beta", "--kind", "plan"); !regexp.MustCompile(`install com.example:lib 1.0.0; upgrade com.example:tool 1.0.0 -> 1.1.0`).MatchString(plan) {
		t.Errorf("beta: the dependency is not installed before its dependent:\n%s", plan)
	}
	betaTool := filepath.Join(beta.software, "com", "example", "tool")
	if target, _ := os.Readlink(filepath.Join(betaTool, "current")); filepath.Base(target) != "1.1.0" {
		t.Errorf("beta: current -> %q after upgrade, want 1.1.0", target)
	}
	if _, err := os.Stat(filepath.Join(betaTool, "1.0.0", "bin", "tool")); err != nil {
		t.Errorf("beta: the previous version was not kept for rollback: %v", err)
	}
	// Upgrade = new preinst, unpack, old prerm, switch, new postinst, old
	// postrm (DESIGN §3); every script sees the version being installed
	// and the one it replaces.
	wantUpgrade := "preinst of 1.1.0: version=1.1.0 old=1.0.0\n" +
		"prerm of 1.0.0: version=1.1.0 old=1.0.0\n" +
		"postinst of 1.1.0: version=1.1.0 old=1.0.0\n" +
		"postrm of 1.0.0: version=1.1.0 old=1.0.0\n"
	if got := readFile(t, filepath.Join(beta.root, "marks")); got != wantUpgrade {
		t.Errorf("beta: upgrade scripts ran as\n%s\nwant\n%s", got, wantUpgrade)
	}

	// Rollback by asking for the old version again; lib, no longer needed,
	// goes.
	f.op("state", "set", "-f", writeState(t, f, "beta", "id: beta\napps:\n  - name: com.example:tool\n    version: 1.0.0\n  - name: com.example:conf\n    version: 1.0.0\n"))
	f.waitConverged("beta", "com.example:conf=1.0.0", "com.example:tool=1.0.0")
	if target, _ := os.Readlink(filepath.Join(betaTool, "current")); filepath.Base(target) != "1.0.0" {
		t.Errorf("beta: current -> %q after rollback, want 1.0.0", target)
	}
	if got := readFile(t, filepath.Join(betaTool, "current", "bin", "tool")); !strings.Contains(got, "generic-1.0.0") {
		t.Errorf("beta: after rollback bin/tool = %q", got)
	}

	// Removal: only what the packages own goes.
	keep := filepath.Join(beta.root, "etc", "app", "mine.conf")
	if err := os.WriteFile(keep, []byte("not drover's\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f.op("state", "set", "-f", writeState(t, f, "beta", "id: beta\napps: []\n"))
	f.waitConverged("beta")
	if _, err := os.Stat(filepath.Join(beta.root, "etc", "app", "app.conf")); !os.IsNotExist(err) {
		t.Errorf("beta: etc/app/app.conf still there after removal (%v)", err)
	}
	if _, err := os.Stat(filepath.Join(beta.root, "etc", "app", "conf.d")); !os.IsNotExist(err) {
		t.Errorf("beta: etc/app/conf.d still there after removal (%v)", err)
	}
	if got := readFile(t, keep); got != "not drover's\n" {
		t.Errorf("beta: a file drover does not own was touched: %q", got)
	}
	if _, err := os.Lstat(filepath.Join(betaTool, "current")); !os.IsNotExist(err) {
		t.Errorf("beta: tool's current link still there after removal (%v)", err)
	}

	// Alpha was left alone through all of it.
	f.waitConverged("alpha", "com.example:conf=1.0.0", "com.example:tool=1.0.0")

	// pkg rm of a build alpha uses is refused; --force removes it.
	r := runBin(t, f.adminEnv(), "", "pkg", "rm", "com.example:tool:1.0.0", "--tags", "edge,linux")
	oneLine(t, "pkg rm of a build in use", r, 1, "device alpha has it from device/alpha")
	// pkg rm: a removed build can no longer be asked for.
	f.op("pkg", "rm", "com.example:tool:1.0.0", "--tags", "edge,linux", "--force")
	if ls := f.op("pkg", "ls", "com.example:tool"); strings.Contains(ls, "edge") || !strings.Contains(ls, "com.example:tool:1.0.0") {
		t.Errorf("after pkg rm of the edge build, pkg ls says:\n%s", ls)
	}
	r = runBin(t, f.adminEnv(), "", "pkg", "rm", "com.example:tool:9.9.9")
	oneLine(t, "pkg rm of an unknown coordinate", r, 1, "9.9.9")

	// Events as YAML documents, for scripts (DESIGN §4: -o yaml|json).
	if y := f.op("events", "--device", "beta", "--kind", "step-done", "-o", "yaml"); !strings.Contains(y, "---\n") || !strings.Contains(y, "kind: step-done") || !strings.Contains(y, "device: beta") {
		t.Errorf("events -o yaml:\n%s", y)
	}

	// Every step of every plan is an event.
	evs := f.op("events", "--device", "beta")
	for _, want := range []string{"step-start", "step-done", "upgrade com.example:tool 1.0.0 -> 1.1.0", "remove com.example:conf"} {
		if !strings.Contains(evs, want) {
			t.Errorf("events of beta lack %q:\n%s", want, evs)
		}
	}
}
