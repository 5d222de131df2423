package pkgfile

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/drover-dev/drover/internal/api"
)

// copyTree copies testdata/<name> into a fresh temporary directory with
// fixed permissions (0755 for directories and executables, 0644 else), so
// that tests do not depend on the checkout's umask.
func copyTree(t *testing.T, name string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), name)
	copyTreeTo(t, name, dst)
	return dst
}

// copyTreeTo copies testdata/<name> to dst, as copyTree does.
func copyTreeTo(t testing.TB, name, dst string) {
	t.Helper()
	src := filepath.Join("testdata", name)
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
			return os.Chmod(target, 0o755)
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		mode := fs.FileMode(0o644)
		if info.Mode()&0o111 != 0 {
			mode = 0o755
		}
		if err := os.WriteFile(target, data, mode); err != nil {
			return err
		}
		return os.Chmod(target, mode)
	})
	if err != nil {
		t.Fatalf("copy %s: %v", src, err)
	}
}

// simpleDir is testdata/simple plus what a module zip cannot carry: a
// symlink and an empty directory.
func simpleDir(t *testing.T) string {
	t.Helper()
	dir := copyTree(t, "simple")
	if err := os.Symlink("start", filepath.Join(dir, "files/bin/run")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../bin/start", filepath.Join(dir, "files/share/start")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "files/share/empty"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "files/share/empty"), 0o750); err != nil {
		t.Fatal(err)
	}
	return dir
}

func build(t *testing.T, dir string) (*api.Manifest, []byte, string, []byte) {
	t.Helper()
	var buf bytes.Buffer
	m, mjson, digest, err := Build(dir, &buf)
	if err != nil {
		t.Fatalf("Build(%s) error = %v", dir, err)
	}
	return m, mjson, digest, buf.Bytes()
}

func sha(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func TestBuildSimple(t *testing.T) {
	dir := simpleDir(t)
	m, mjson, digest, _ := build(t, dir)

	start := "#!/bin/sh\nexec echo hello \"$@\"\n"
	health := "#!/bin/sh\nexit 0\n"
	same := "same content\n"
	armStart := "#!/bin/sh\nexec echo hello-arm \"$@\"\n"
	neon := "neon library\n"
	arm := []string{"armv7l"}
	armNeon := []string{"armv7l", "neon"}
	wantFiles := []api.File{
		{Path: "bin", Type: "dir", Mode: 0o755},
		{Path: "bin/health", Type: "file", Mode: 0o755, Size: int64(len(health)), Digest: sha(health)},
		{Path: "bin/run", Type: "symlink", Mode: 0o777, Target: "start"},
		{Path: "bin/start", Type: "file", Mode: 0o755, Size: int64(len(start)), Digest: sha(start)},
		{Path: "etc", Type: "dir", Mode: 0o755},
		{Path: "etc/defaults", Type: "file", Mode: 0o644, Size: int64(len(same)), Digest: sha(same)},
		{Path: "etc/empty.conf", Type: "file", Mode: 0o644, Digest: sha("")},
		{Path: "share", Type: "dir", Mode: 0o755},
		{Path: "share/doc", Type: "dir", Mode: 0o755},
		{Path: "share/doc/README", Type: "file", Mode: 0o644, Size: int64(len(same)), Digest: sha(same)},
		{Path: "share/empty", Type: "dir", Mode: 0o750},
		{Path: "share/start", Type: "symlink", Mode: 0o777, Target: "../bin/start"},
		{Path: "bin", Type: "dir", Mode: 0o755, Overlay: arm},
		{Path: "bin/start", Type: "file", Mode: 0o755, Size: int64(len(armStart)), Digest: sha(armStart), Overlay: arm},
		{Path: "lib", Type: "dir", Mode: 0o755, Overlay: armNeon},
		{Path: "lib/libhello.so.1", Type: "file", Mode: 0o644, Size: int64(len(neon)), Digest: sha(neon), Overlay: armNeon},
	}
	want := &api.Manifest{
		Group: "com.example", Name: "hello", Version: "1.2.0",
		Tags:    []string{"amd64", "linux"},
		Install: "prefix",
		Depends: []api.Dependency{{Name: "com.example:core", Version: ">=1.0.0, <2.0.0"}, {Name: "com.example:libs"}},
		Params: map[string]api.Param{
			"port":  {Type: "int", Default: int64(8080), Min: ptr(1), Max: ptr(65535), Description: "listen port"},
			"mode":  {Type: "string", Default: "fast", Allowed: []any{"fast", "safe"}},
			"token": {Type: "string", Required: true, Description: "API token"},
		},
		Templates: []api.Template{{Src: "templates/app.conf.tmpl", Dest: "etc/app.conf", Digest: sha("port = {{.Params.port}}\n")}},
		Services:  []api.Service{{Name: "web", Start: "bin/start", Health: "bin/health", Restart: "on-failure"}},
		Scripts: map[string]string{
			"postinst":  sha("#!/bin/sh\necho postinst\n"),
			"configure": sha("#!/bin/sh\necho configure\n"),
		},
		Files: wantFiles,
	}
	if diff := cmp.Diff(want, m); diff != "" {
		t.Errorf("Build() manifest mismatch (-want +got):\n%s", diff)
	}
	if got := sha(string(mjson)); got != digest {
		t.Errorf("Build() digest = %s, want sha256 of manifest.json %s", digest, got)
	}
	// The manifest bytes are the canonical encoding and decode back to
	// the same manifest (numbers come back as JSON numbers).
	back, err := DecodeManifest(mjson)
	if err != nil {
		t.Fatalf("DecodeManifest(Build's manifest) error = %v", err)
	}
	if diff := cmp.Diff(m.Files, back.Files); diff != "" {
		t.Errorf("DecodeManifest() files mismatch (-built +decoded):\n%s", diff)
	}
	if back.Params["port"].Default != 8080.0 {
		t.Errorf("decoded port default = %#v, want 8080", back.Params["port"].Default)
	}
}

func TestBuildReproducible(t *testing.T) {
	dir := simpleDir(t)
	_, _, d1, first := build(t, dir)
	_, _, d2, second := build(t, dir)
	if !bytes.Equal(first, second) || d1 != d2 {
		t.Fatalf("two builds of one directory differ (%d and %d bytes)", len(first), len(second))
	}

	// New timestamps on everything, and the tree in another place: the
	// same bytes.
	past := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.Type()&fs.ModeSymlink != 0 {
			return err
		}
		return os.Chtimes(p, past, past)
	})
	if err != nil {
		t.Fatal(err)
	}
	moved := filepath.Join(t.TempDir(), "elsewhere")
	if err := os.Rename(dir, moved); err != nil {
		t.Fatal(err)
	}
	_, _, d3, third := build(t, moved)
	if !bytes.Equal(first, third) || d1 != d3 {
		t.Errorf("build after touching mtimes and moving differs from the first (%d and %d bytes)", len(first), len(third))
	}

	// A changed byte changes the manifest digest.
	if err := os.WriteFile(filepath.Join(moved, "files/etc/defaults"), []byte("other\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, d4, _ := build(t, moved); d4 == d1 {
		t.Errorf("digest after a content change = %s, want a different one", d4)
	}
}

func TestBuildErrors(t *testing.T) {
	write := func(rel, content string) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			p := filepath.Join(dir, rel)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	symlink := func(target, rel string) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			if err := os.Symlink(target, filepath.Join(dir, rel)); err != nil {
				t.Fatal(err)
			}
		}
	}
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string)
		want  []string
	}{
		{"unknown script", write("scripts/postinstall", "x"), []string{"scripts/postinstall", "not a script name"}},
		{"script directory", func(t *testing.T, dir string) {
			if err := os.Mkdir(filepath.Join(dir, "scripts/prerm"), 0o755); err != nil {
				t.Fatal(err)
			}
		}, []string{"scripts/prerm", "not a regular file"}},
		{"empty overlay tags", write("files@/x", "x"), []string{"files@", "empty tag set"}},
		{"empty overlay tag", write("files@a,,b/x", "x"), []string{"files@a,,b", `tag ""`}},
		{"invalid overlay tag", write("files@a b/x", "x"), []string{"files@a b", `tag "a b"`}},
		{"overlay tag twice", write("files@a,a/x", "x"), []string{"twice"}},
		{"same overlay twice", func(t *testing.T, dir string) {
			write("files@a,b/x", "x")(t, dir)
			write("files@b,a/y", "y")(t, dir)
		}, []string{"files@a,b", "files@b,a", "same tag set"}},
		{"files not a directory", func(t *testing.T, dir string) {
			if err := os.RemoveAll(filepath.Join(dir, "files")); err != nil {
				t.Fatal(err)
			}
			write("files", "x")(t, dir)
		}, []string{"files: not a directory"}},
		{"fifo", func(t *testing.T, dir string) {
			if err := syscall.Mkfifo(filepath.Join(dir, "files/etc/pipe"), 0o644); err != nil {
				t.Skipf("mkfifo: %v", err)
			}
		}, []string{"files/etc/pipe", "named pipe"}},
		{"socket", func(t *testing.T, dir string) {
			fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
			if err != nil {
				t.Skipf("socket: %v", err)
			}
			defer syscall.Close(fd)
			if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: filepath.Join(dir, "files/etc/sock")}); err != nil {
				t.Skipf("bind: %v", err)
			}
		}, []string{"files/etc/sock", "socket"}},
		{"absolute symlink", symlink("/etc/passwd", "files/etc/passwd"), []string{"files/etc/passwd", "absolute"}},
		{"escaping symlink", symlink("../../etc/passwd", "files/etc/passwd"), []string{"etc/passwd", "leaves the install root"}},
		{"escaping symlink in overlay", symlink("../x", "files@armv7l/up"), []string{"up", "leaves the install root"}},
		{"setuid file", func(t *testing.T, dir string) {
			if err := os.Chmod(filepath.Join(dir, "files/bin/start"), fs.ModeSetuid|0o755); err != nil {
				t.Fatal(err)
			}
		}, []string{"files/bin/start", "setuid"}},
		{"missing template", write("drover.yaml", "group: g\nname: n\nversion: 1.0.0\ntemplates:\n  - {src: templates/nope, dest: etc/x}\n"), []string{"templates/nope"}},
		{"template outside source", func(t *testing.T, dir string) {
			symlink("/etc/hostname", "templates/host")(t, dir)
			write("drover.yaml", "group: g\nname: n\nversion: 1.0.0\ntemplates:\n  - {src: templates/host, dest: etc/x}\n")(t, dir)
		}, []string{"templates/host"}},
		{"template dest is a directory", write("drover.yaml", "group: g\nname: n\nversion: 1.0.0\ntemplates:\n  - {src: templates/app.conf.tmpl, dest: etc}\n"), []string{"etc", "directory"}},
		{"bad drover.yaml", write("drover.yaml", "group: g\nname: n\nversion: one\n"), []string{"drover.yaml", "version"}},
		{"no drover.yaml", func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, "drover.yaml")); err != nil {
				t.Fatal(err)
			}
		}, []string{"no drover.yaml"}},
		{"file in one tree, directory in another", write("files@armv7l/etc/defaults/x", "x"), []string{"etc/defaults"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyTree(t, "simple")
			tc.setup(t, dir)
			var buf bytes.Buffer
			m, _, _, err := Build(dir, &buf)
			if err == nil {
				t.Fatalf("Build() = %+v, want error", m)
			}
			t.Logf("error: %v", err)
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("Build() error = %v, want one wrapping ErrInvalid", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Build() error = %q, want it to contain %q", err, w)
				}
			}
			if buf.Len() != 0 {
				t.Errorf("Build() wrote %d bytes despite the error", buf.Len())
			}
		})
	}
}

func TestBuildEmptyPackage(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, SpecFile), []byte("group: g\nname: n\nversion: 0.1.0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, mjson, _, _ := build(t, dir)
	// Tags and files are lists, never null, so other readers need no
	// special case.
	for _, want := range []string{`"tags":[]`, `"files":[]`, `"install":"prefix"`} {
		if !bytes.Contains(mjson, []byte(want)) {
			t.Errorf("manifest.json = %s, want it to contain %s", mjson, want)
		}
	}
}
