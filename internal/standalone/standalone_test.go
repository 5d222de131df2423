package standalone

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/drover-dev/drover/internal/pkgfile"
)

// build writes a package source with one file and builds it into dir.
func build(t *testing.T, dir, version, param string) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src")
	yaml := "group: com.example\nname: tool\nversion: " + version + "\n" + param
	for p, c := range map[string]string{"drover.yaml": yaml, "files/share/v": version + "\n"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(src, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, p), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(dir, "com.example-tool-"+version+".drover")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, _, _, err := pkgfile.Build(src, f); err != nil {
		t.Fatalf("build: %v", err)
	}
	return out
}

// TestInstallListRemove: a package file installs under the folders of
// the installation, the newest version in a repository folder is found by
// name, parameters are checked before anything changes, and remove takes
// it away.
func TestInstallListRemove(t *testing.T) {
	ctx := context.Background()
	repo := t.TempDir()
	build(t, repo, "1.0.0", "")
	newest := build(t, repo, "1.2.0", "")
	home := filepath.Join(t.TempDir(), "home")
	s, err := Open(ctx, Config{Home: home})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	for _, d := range []string{"software", "runtime", "root"} {
		if st, err := os.Stat(filepath.Join(home, d)); err != nil || !st.IsDir() {
			t.Errorf("Open made no %s folder: %v", d, err)
		}
	}
	path, err := FindInRepo(repo, "com.example:tool")
	if err != nil || path != newest {
		t.Fatalf("FindInRepo(name) = %q, %v; want %s", path, err, newest)
	}
	if _, err := FindInRepo(repo, "com.example:nope"); err == nil {
		t.Error("FindInRepo of an unknown package: no error")
	}
	m, digest, err := s.Load(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.Install(ctx, Request{Manifest: m, Digest: digest})
	if err != nil {
		t.Fatalf("Install: %v", err)
	}
	if got, err := os.ReadFile(filepath.Join(res.Location, "share", "v")); err != nil || string(got) != "1.2.0\n" {
		t.Errorf("installed share/v = %q, %v", got, err)
	}
	if res.Coordinate != "com.example:tool:1.2.0" || !strings.HasPrefix(res.Location, filepath.Join(home, "software")) {
		t.Errorf("Install = %+v", res)
	}
	apps := s.List()
	if len(apps) != 1 || apps[0].Version != "1.2.0" || s.Location(apps[0].Name, "") != res.Location {
		t.Errorf("List = %+v", apps)
	}
	if err := s.Remove(ctx, "com.example:tool", "", false); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if apps := s.List(); len(apps) != 0 {
		t.Errorf("List after Remove = %+v", apps)
	}

	// A bad parameter value changes nothing.
	bad := build(t, t.TempDir(), "2.0.0", "params:\n  port: {type: int, min: 1, max: 10}\n")
	m, digest, err = s.Load(ctx, bad)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Install(ctx, Request{Manifest: m, Digest: digest, Values: map[string]any{"port": "99"}}); err == nil || !strings.Contains(err.Error(), "port") {
		t.Errorf("Install with port 99 = %v, want an error naming port", err)
	}
	if apps := s.List(); len(apps) != 0 {
		t.Errorf("a refused install installed %+v", apps)
	}
	if _, err := Open(ctx, Config{}); err == nil {
		t.Error("Open with no home: no error")
	}
}
