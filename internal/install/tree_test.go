package install

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/pkgfile"
)

// selectTree is pkgfile.Tree behind pkgfile.ValidateManifest: the engine
// refuses exactly what the server refuses at push, and installs the tree
// the agent downloaded for.
func TestSelectTreeIsTheServersCheck(t *testing.T) {
	dg := strings.Repeat("b", 64)
	base := func(files ...api.File) *api.Manifest {
		return &api.Manifest{Group: "com.example", Name: "t", Version: "1.0.0", Tags: []string{}, Install: api.InstallPrefix, Files: files}
	}
	cases := []struct {
		name string
		m    *api.Manifest
	}{
		{"duplicate in one tree", base(api.File{Path: "a", Type: api.TypeFile, Digest: dg}, api.File{Path: "a", Type: api.TypeFile, Digest: dg})},
		{"bad digest", base(api.File{Path: "a", Type: api.TypeFile, Digest: "xyz"})},
		{"fifo", base(api.File{Path: "a", Type: "fifo"})},
		{"hardlink", base(api.File{Path: "a", Type: "hardlink", Target: "b"})},
		{"empty path", base(api.File{Path: "", Type: api.TypeDir})},
		{"trailing slash", base(api.File{Path: "a/", Type: api.TypeDir})},
		{"overlay turns a dir into a file", base(
			api.File{Path: "d", Type: api.TypeDir}, api.File{Path: "d/f", Type: api.TypeFile, Digest: dg},
			api.File{Path: "d", Type: api.TypeFile, Digest: dg, Overlay: []string{"x"}},
		)},
		{"empty symlink", base(api.File{Path: "l", Type: api.TypeSymlink})},
		{"symlink leaves", base(api.File{Path: "bin", Type: api.TypeDir}, api.File{Path: "bin/x", Type: api.TypeSymlink, Target: "../../etc"})},
		{"symlink climbs after a name", base(api.File{Path: "bin", Type: api.TypeDir}, api.File{Path: "bin/x", Type: api.TypeSymlink, Target: "s/.."})},
		{"setuid", base(api.File{Path: "a", Type: api.TypeFile, Digest: dg, Mode: 0o4755})},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := selectTree(c.m, []string{"x"})
			if err == nil {
				t.Fatalf("selectTree(%s) = nil error, want a refusal", c.name)
			}
			if verr := pkgfile.ValidateManifest(c.m); verr == nil || verr.Error() != err.Error() {
				t.Errorf("selectTree(%s) = %v, want the server's refusal %v", c.name, err, verr)
			}
		})
	}
	m := base(api.File{Path: "a", Type: api.TypeFile, Digest: dg, Size: 1}, api.File{Path: "a", Type: api.TypeFile, Digest: strings.Repeat("c", 64), Size: 2, Overlay: []string{"x"}})
	for _, have := range [][]string{nil, {"x"}, {"y"}} {
		tree, err := selectTree(m, have)
		if err != nil {
			t.Fatal(err)
		}
		if want := pkgfile.Tree(m, have); !slices.EqualFunc(tree, want, func(a, b api.File) bool { return a.Path == b.Path && a.Digest == b.Digest }) {
			t.Errorf("selectTree(%v) = %v, want pkgfile.Tree's %v", have, tree, want)
		}
	}
}

// BenchmarkDurable compares the two ways to make an unpacked version
// folder durable before the switch: one syncfs of the filesystem versus
// an fsync of every file and directory. 200 files of 4 KiB.
func BenchmarkDurable(b *testing.B) {
	for _, each := range []bool{false, true} {
		name := "syncfs"
		if each {
			name = "fsync-each"
		}
		b.Run(name, func(b *testing.B) {
			v := newEnv(b)
			var files []spec
			for i := range 200 {
				files = append(files, F(fmt.Sprintf("d%d/f%d", i%10, i), strings.Repeat(fmt.Sprint(i), 4096)[:4096]))
			}
			tg := v.target(pkg{name: "bench", version: "1.0.0", files: files})
			tree, err := selectTree(tg.Manifest, nil)
			if err != nil {
				b.Fatal(err)
			}
			e := v.engine(nil)
			e.syncEach = each
			b.ResetTimer()
			for i := range b.N {
				dir := filepath.Join(v.base, fmt.Sprintf("u%d", i))
				if err := e.unpack(context.Background(), tree, dir, nil); err != nil {
					b.Fatal(err)
				}
				if err := e.durable(dir, tree); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
