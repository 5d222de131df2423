package pkgfile

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/debtest"
)

// debSource writes a package source with install mode and the files of
// debs/ (name → content; a .deb built with dpkg-deb when content is "").
func debSource(t *testing.T, install string, debs map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	spec := "group: com.example\nname: withdebs\nversion: 1.0.0\ninstall: " + install + "\n"
	if err := os.WriteFile(filepath.Join(dir, SpecFile), []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	dd := filepath.Join(dir, "debs")
	if err := os.MkdirAll(dd, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range debs {
		if content == "" {
			p := debtest.Build(t, t.TempDir(), debtest.Control{Name: strings.TrimSuffix(name, ".deb"), Version: "1:2.0-1", Files: map[string]string{"usr/share/x": "x"}})
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			content = string(b)
		}
		if err := os.WriteFile(filepath.Join(dd, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestBuildDebs(t *testing.T) {
	debtest.NeedDpkg(t)
	dir := debSource(t, api.InstallRoot, map[string]string{"zeta.deb": "", "alpha.deb": ""})
	var buf bytes.Buffer
	m, _, _, err := Build(dir, &buf)
	if err != nil {
		t.Fatalf("Build() = %v", err)
	}
	var got []string
	for _, d := range m.Debs {
		if !api.ValidDigest(d.Digest) || d.Size == 0 {
			t.Errorf("deb %s: digest %q size %d", d.Name, d.Digest, d.Size)
		}
		got = append(got, d.Name+" "+d.Version+" "+d.Arch)
	}
	if diff := cmp.Diff([]string{"alpha 1:2.0-1 all", "zeta 1:2.0-1 all"}, got); diff != "" {
		t.Errorf("Debs (-want +got):\n%s", diff)
	}
	// The .debs travel as blobs of the package file.
	r, err := NewReader(bytes.NewReader(buf.Bytes()), Limits{})
	if err != nil {
		t.Fatalf("NewReader() = %v", err)
	}
	if diff := cmp.Diff(m.Digests(), r.Manifest().Digests()); diff != "" {
		t.Errorf("read back digests (-want +got):\n%s", diff)
	}
}

func TestBuildDebsErrors(t *testing.T) {
	debtest.NeedDpkg(t)
	for _, tc := range []struct {
		name    string
		install string
		debs    map[string]string
		want    string
	}{
		{"prefix mode", api.InstallPrefix, map[string]string{"a.deb": ""}, "debs/: Debian packages need install: root"},
		{"not a deb name", api.InstallRoot, map[string]string{"README": "hi"}, "debs/README: want only regular .deb files in debs/"},
		{"not a deb", api.InstallRoot, map[string]string{"bad.deb": "not an archive"}, "debs/bad.deb: dpkg-deb:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, _, err := Build(debSource(t, tc.install, tc.debs), &bytes.Buffer{})
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Build() = %v, want ErrInvalid with %q", err, tc.want)
			}
		})
	}
}

func TestValidateManifestDebs(t *testing.T) {
	digest := strings.Repeat("ab", 32)
	ok := api.Deb{Name: "hello", Version: "2.10-3", Arch: "amd64", Digest: digest, Size: 10}
	with := func(install string, debs ...api.Deb) *api.Manifest {
		return &api.Manifest{Group: "com.example", Name: "p", Version: "1.0.0", Tags: []string{}, Install: install, Files: []api.File{}, Debs: debs}
	}
	mod := func(f func(*api.Deb)) api.Deb { d := ok; f(&d); return d }
	for _, tc := range []struct {
		name string
		m    *api.Manifest
		want string // "" = valid
	}{
		{"valid", with(api.InstallRoot, ok, mod(func(d *api.Deb) { d.Name = "libfoo1"; d.Version = "1:2.3~rc1+dfsg-4"; d.Arch = "all" })), ""},
		{"prefix mode", with(api.InstallPrefix, ok), "need install: root"},
		{"bad name", with(api.InstallRoot, mod(func(d *api.Deb) { d.Name = "../etc" })), "package name"},
		{"upper case name", with(api.InstallRoot, mod(func(d *api.Deb) { d.Name = "Hello" })), "package name"},
		{"bad version", with(api.InstallRoot, mod(func(d *api.Deb) { d.Version = "v1 2" })), "not a Debian version"},
		{"bad arch", with(api.InstallRoot, mod(func(d *api.Deb) { d.Arch = "x86/64" })), "architecture"},
		{"bad digest", with(api.InstallRoot, mod(func(d *api.Deb) { d.Digest = "abc" })), "digest"},
		{"negative size", with(api.InstallRoot, mod(func(d *api.Deb) { d.Size = -1 })), "size"},
		{"twice", with(api.InstallRoot, ok, ok), "each name once"},
		{"unsorted", with(api.InstallRoot, ok, mod(func(d *api.Deb) { d.Name = "aaa" })), "sorted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateManifest(tc.m)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("ValidateManifest() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ValidateManifest() = %v, want ErrInvalid with %q", err, tc.want)
			}
		})
	}
}
