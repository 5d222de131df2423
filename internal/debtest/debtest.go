// Package debtest makes Debian packages for tests: tiny ones built with
// dpkg-deb, and real ones from Debian's archive fetched with apt-get
// download into a cache outside the repository. It is imported by tests
// only.
package debtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Control is what a tiny package declares.
type Control struct {
	Name    string
	Version string
	Depends string // "" for none
	// Files are the package's files: path under / (no leading slash) →
	// content.
	Files map[string]string
}

// NeedDpkg skips the test, naming the missing program, when dpkg or
// dpkg-deb cannot be found: the test needs a Debian system.
func NeedDpkg(t testing.TB) {
	t.Helper()
	for _, p := range []string{"dpkg", "dpkg-deb"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("%s not in PATH: this test needs a Debian system", p)
		}
	}
}

// Build builds c with dpkg-deb --build into dir and returns the .deb's
// path. Its architecture is "all".
func Build(t testing.TB, dir string, c Control) string {
	t.Helper()
	NeedDpkg(t)
	src := filepath.Join(t.TempDir(), c.Name)
	ctl := fmt.Sprintf("Package: %s\nVersion: %s\nArchitecture: all\nMaintainer: drover tests <tests@example.com>\nDescription: drover test package\n", c.Name, c.Version)
	if c.Depends != "" {
		ctl += "Depends: " + c.Depends + "\n"
	}
	write(t, filepath.Join(src, "DEBIAN", "control"), ctl)
	for p, content := range c.Files {
		write(t, filepath.Join(src, p), content)
	}
	out := filepath.Join(dir, fmt.Sprintf("%s_%s_all.deb", c.Name, c.Version))
	if b, err := exec.Command("dpkg-deb", "--root-owner-group", "--build", src, out).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb --build: %v\n%s", err, b)
	}
	return out
}

func write(t testing.TB, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Download returns the path of Debian's package name (the candidate
// version of this machine's apt sources), fetched with apt-get download
// into a cache outside the repository ($DROVER_TEST_DEB_CACHE, else the
// user cache folder) when it is not there yet. It skips the test, saying
// why, only when apt-get download fails.
func Download(t testing.TB, name string) string {
	t.Helper()
	NeedDpkg(t)
	dir := os.Getenv("DROVER_TEST_DEB_CACHE")
	if dir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			base = os.TempDir()
		}
		dir = filepath.Join(base, "drover-test", "debs")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if p := find(dir, name); p != "" {
		return p
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		t.Skipf("no apt-get to download the Debian package %s", name)
	}
	cmd := exec.Command("apt-get", "download", name)
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Skipf("apt-get download %s failed (no apt sources or no network to Debian's archive?): %v\n%s", name, err, b)
	}
	p := find(dir, name)
	if p == "" {
		t.Fatalf("apt-get download %s: no %s_*.deb in %s", name, name, dir)
	}
	return p
}

func find(dir, name string) string {
	m, _ := filepath.Glob(filepath.Join(dir, name+"_*.deb"))
	for _, p := range m {
		if !strings.Contains(filepath.Base(p), ".partial") {
			return p
		}
	}
	return ""
}

// Root makes a fresh dpkg root under dir: the empty database dpkg needs
// (var/lib/dpkg/status, info/, updates/). Each stanza given is written to
// the status file as an installed package, e.g. to stand for libc6.
func Root(t testing.TB, dir string, installed ...string) string {
	t.Helper()
	for _, d := range []string{"info", "updates", "triggers"} {
		if err := os.MkdirAll(filepath.Join(dir, "var", "lib", "dpkg", d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var status strings.Builder
	for _, s := range installed {
		status.WriteString(strings.TrimSpace(s) + "\n\n")
	}
	write(t, filepath.Join(dir, "var", "lib", "dpkg", "status"), status.String())
	return dir
}

// Installed returns a status stanza for Root: package name at version,
// installed, of the machine's architecture.
func Installed(name, version string) string {
	arch := "all"
	if b, err := exec.Command("dpkg", "--print-architecture").Output(); err == nil {
		arch = strings.TrimSpace(string(b))
	}
	return fmt.Sprintf("Package: %s\nStatus: install ok installed\nPriority: optional\nSection: libs\nMaintainer: drover tests <tests@example.com>\nArchitecture: %s\nMulti-Arch: same\nVersion: %s\nDescription: stands in for %s\n", name, arch, version, name)
}
