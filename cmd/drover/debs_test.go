package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/drover-dev/drover/internal/debtest"
)

// dpkgHas returns what dpkg's database under root says of name:
// "VERSION STATUS", or "" when it does not know it.
func dpkgHas(t *testing.T, root, name string) string {
	t.Helper()
	out, err := exec.Command("dpkg-query", "--root="+root, "--show", "--showformat=${Version} ${db:Status-Status}", name).Output()
	if err != nil || strings.HasSuffix(string(out), "not-installed") {
		return ""
	}
	return string(out)
}

// TestDebsEndToEnd: a root-mode package carrying Debian's real hello
// .deb is installed by the agent through dpkg into its --root, between
// preinst and postinst; on a root whose dpkg lacks hello's libc6 the
// step fails with dpkg's message and nothing stays; an empty state
// removes hello again.
func TestDebsEndToEnd(t *testing.T) {
	debtest.NeedDpkg(t)
	if os.Geteuid() != 0 {
		t.Skip("dpkg installs only as root (run the tests as root)")
	}
	hello := debtest.Download(t, "hello")
	deb, err := os.ReadFile(hello)
	if err != nil {
		t.Fatal(err)
	}
	f := newFleet(t)
	src := writeSource(t, filepath.Join(f.dir, "src", "greeter"), pkgSource{
		yaml: "group: com.example\nname: greeter\nversion: 1.0.0\ninstall: root\n",
		files: map[string]string{
			"files/etc/greeter.conf":       "greeting = hello\n",
			"debs/" + filepath.Base(hello): string(deb),
		},
		scripts: map[string]string{
			"preinst":  `if [ -e "$DROVER_ROOT/usr/bin/hello" ]; then echo "hello is there before dpkg ran" >&2; exit 4; fi`,
			"postinst": `"$DROVER_ROOT/usr/bin/hello" > "$DROVER_ROOT/etc/greeting"`,
		},
	})
	pkgFile := filepath.Join(f.dir, "greeter.drover")
	f.mustOK(nil, "pkg", "build", src, "-o", pkgFile)
	f.op("pkg", "push", pkgFile)

	// A package with debs in prefix mode is refused when it is built.
	prefixSrc := writeSource(t, filepath.Join(f.dir, "src", "prefixed"), pkgSource{
		yaml:  "group: com.example\nname: prefixed\nversion: 1.0.0\n",
		files: map[string]string{"debs/" + filepath.Base(hello): string(deb)},
	})
	r := runBin(t, nil, "", "pkg", "build", prefixSrc, "-o", filepath.Join(f.dir, "prefixed.drover"))
	if r.code != 1 || !strings.Contains(r.stderr, "drover: ") || !strings.Contains(r.stderr, "need install: root") {
		t.Errorf("pkg build of a prefix package with debs: exit %d, stderr %q; want 1 and a line saying debs need install: root", r.code, r.stderr)
	}

	// good: dpkg's database there says libc6 is installed, as on any
	// Debian system.
	good := f.newAgent("deb-good")
	debtest.Root(t, good.root, debtest.Installed("libc6", "2.36-9"))
	good.start()
	f.waitFor("deb-good", "reported", func(d deviceJSON) bool { return len(d.SystemTags) > 0 })
	f.op("state", "set", "-f", writeState(t, f, "deb-good", "id: deb-good\napps:\n  - name: com.example:greeter\n    version: 1.0.0\n"))
	f.waitConverged("deb-good", "com.example:greeter=1.0.0")
	if got := dpkgHas(t, good.root, "hello"); !strings.HasSuffix(got, " installed") {
		t.Errorf("dpkg --root %s says hello is %q, want installed", good.root, got)
	}
	if got := readFile(t, filepath.Join(good.root, "etc", "greeting")); got != "Hello, world!\n" {
		t.Errorf("postinst ran hello: etc/greeting = %q, want Hello, world!", got)
	}

	// bad: a fresh dpkg root without libc6: hello's Depends cannot be met.
	bad := f.newAgent("deb-bad")
	debtest.Root(t, bad.root)
	bad.start()
	f.waitFor("deb-bad", "reported", func(d deviceJSON) bool { return len(d.SystemTags) > 0 })
	f.op("state", "set", "-f", writeState(t, f, "deb-bad", "id: deb-bad\napps:\n  - name: com.example:greeter\n    version: 1.0.0\n"))
	d := f.waitFor("deb-bad", "failed", func(d deviceJSON) bool { return d.Status.Error != "" })
	if !strings.Contains(d.Status.Error, "hello depends on libc6") || !strings.Contains(d.Status.Error, "Package libc6 is not installed") {
		t.Errorf("device error = %q, want dpkg's dependency message", d.Status.Error)
	}
	if len(d.Apps) != 0 {
		t.Errorf("after the failed install the device reports %+v, want nothing", d.Apps)
	}
	if got := dpkgHas(t, bad.root, "hello"); got != "" {
		t.Errorf("after the failed install dpkg says hello is %q, want it unknown", got)
	}
	for _, p := range []string{"usr/bin/hello", "etc/greeter.conf", "etc/greeting"} {
		if _, err := os.Stat(filepath.Join(bad.root, p)); !os.IsNotExist(err) {
			t.Errorf("%s after the failed install: %v, want it absent", p, err)
		}
	}
	out := f.op("events", "--device", "deb-bad", "--kind", "step-failed", "-o", "json")
	if !strings.Contains(out, "Package libc6 is not installed") {
		t.Errorf("no step-failed event with dpkg's output:\n%s", out)
	}

	// Removal takes hello away with the package.
	f.op("state", "set", "-f", writeState(t, f, "deb-good", "id: deb-good\napps: []\n"))
	f.waitConverged("deb-good")
	if got := dpkgHas(t, good.root, "hello"); got != "" {
		t.Errorf("after removal dpkg says hello is %q, want it gone", got)
	}
	if _, err := os.Stat(filepath.Join(good.root, "usr", "bin", "hello")); !os.IsNotExist(err) {
		t.Errorf("usr/bin/hello after removal: %v, want it gone", err)
	}
}
