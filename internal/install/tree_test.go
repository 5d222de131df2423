package install

import (
	"context"
	"fmt"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/drover-dev/drover/internal/api"
)

func TestSelectTree(t *testing.T) {
	dg := strings.Repeat("a", 64)
	file := func(p, content string, overlay ...string) api.File {
		return api.File{Path: p, Type: api.TypeFile, Mode: 0o644, Digest: dg, Size: int64(len(content)), Target: content, Overlay: overlay}
	}
	files := []api.File{
		file("conf", "generic"),
		file("conf", "b", "b"),
		file("conf", "a", "a"),
		file("conf", "a+b", "b", "a"),
		file("only-c", "c", "c"),
		file("lib", "generic"),
		file("lib", "x86", "amd64"),
	}
	cases := []struct {
		have []string
		want map[string]string // path -> which entry (Target field used as a label)
		ovs  string
	}{
		{have: nil, want: map[string]string{"conf": "generic", "lib": "generic"}, ovs: ""},
		{have: []string{"a"}, want: map[string]string{"conf": "a", "lib": "generic"}, ovs: "a"},
		{have: []string{"b"}, want: map[string]string{"conf": "b", "lib": "generic"}, ovs: "b"},
		// Same number of tags: ties by key, "b" after "a", so "b" wins;
		// the two-tag overlay comes last of all.
		{have: []string{"a", "b"}, want: map[string]string{"conf": "a+b", "lib": "generic"}, ovs: "a b a,b"},
		{have: []string{"c", "amd64", "z"}, want: map[string]string{"conf": "generic", "lib": "x86", "only-c": "c"}, ovs: "amd64 c"},
	}
	m := &api.Manifest{Files: files}
	for _, c := range cases {
		t.Run(strings.Join(c.have, ","), func(t *testing.T) {
			tree, err := selectTree(m, c.have)
			if err != nil {
				t.Fatalf("selectTree(%v) = %v", c.have, err)
			}
			got := map[string]string{}
			for _, f := range tree {
				got[f.Path] = f.Target
			}
			if fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Errorf("selectTree(%v) = %v, want %v", c.have, got, c.want)
			}
			if ovs := strings.Join(overlays(m, c.have), " "); ovs != c.ovs {
				t.Errorf("overlays(%v) = %q, want %q", c.have, ovs, c.ovs)
			}
		})
	}
}

func TestSelectTreeRejects(t *testing.T) {
	dg := strings.Repeat("b", 64)
	cases := []struct {
		name  string
		files []api.File
	}{
		{"duplicate in one tree", []api.File{{Path: "a", Type: api.TypeFile, Digest: dg}, {Path: "a", Type: api.TypeFile, Digest: dg}}},
		{"bad digest", []api.File{{Path: "a", Type: api.TypeFile, Digest: "xyz"}}},
		{"fifo", []api.File{{Path: "a", Type: "fifo"}}},
		{"hardlink", []api.File{{Path: "a", Type: "hardlink", Target: "b"}}},
		{"empty path", []api.File{{Path: "", Type: api.TypeDir}}},
		{"trailing slash", []api.File{{Path: "a/", Type: api.TypeDir}}},
		{"overlay turns a dir into a file", []api.File{
			{Path: "d", Type: api.TypeDir}, {Path: "d/f", Type: api.TypeFile, Digest: dg},
			{Path: "d", Type: api.TypeFile, Digest: dg, Overlay: []string{"x"}},
		}},
		{"empty symlink", []api.File{{Path: "l", Type: api.TypeSymlink}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := selectTree(&api.Manifest{Files: c.files}, []string{"x"}); err == nil {
				t.Errorf("selectTree(%s) = nil error, want a refusal", c.name)
			}
		})
	}
}

func TestCheckLinkTarget(t *testing.T) {
	cases := []struct {
		path, target string
		ok           bool
	}{
		{"bin/x", "../lib/x.so", true},
		{"bin/x", "x2", true},
		{"bin/x", "./x2", true},
		{"a/b/c", "../../d", true},
		{"x", ".", true},
		{"x", "..", false},
		{"bin/x", "../../etc", false},
		{"bin/x", "/etc/passwd", false},
		{"bin/x", "sub/../../..", false},
		{"bin/x", "s/..", false},
		{"bin/x", "", false},
	}
	for _, c := range cases {
		err := checkLinkTarget(c.path, c.target)
		if (err == nil) != c.ok {
			t.Errorf("checkLinkTarget(%q, %q) = %v, want ok %v", c.path, c.target, err, c.ok)
		}
	}
}

// FuzzCheckLinkTarget: whatever a manifest says, an accepted symlink
// resolves (lexically) inside the install root.
func FuzzCheckLinkTarget(f *testing.F) {
	for _, s := range [][2]string{{"bin/x", "../lib/x"}, {"a", ".."}, {"a/b", "c/../../.."}, {"x", "/abs"}, {"a/b/c", "./../.."}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, p, target string) {
		if checkPath(p) != nil || checkLinkTarget(p, target) != nil {
			return
		}
		r := path.Clean(path.Join(path.Dir(p), target))
		if r == ".." || strings.HasPrefix(r, "../") || strings.HasPrefix(r, "/") {
			t.Fatalf("checkLinkTarget(%q, %q) accepted a link to %q", p, target, r)
		}
		if strings.Contains(target, "..") && linkUps(target) < 0 {
			t.Fatalf("checkLinkTarget(%q, %q) accepted '..' after a name", p, target)
		}
	})
}

// FuzzSelectTree: hostile file lists never panic, and an accepted tree
// has only clean relative paths of the three types.
func FuzzSelectTree(f *testing.F) {
	f.Add("a/b", "file", "", "x")
	f.Add("../a", "dir", "", "")
	f.Add("l", "symlink", "../x", "")
	f.Add("d", "char", "", "y")
	f.Fuzz(func(t *testing.T, p, typ, target, overlay string) {
		fl := api.File{Path: p, Type: typ, Target: target, Digest: strings.Repeat("c", 64)}
		if overlay != "" {
			fl.Overlay = strings.Split(overlay, ",")
		}
		tree, err := selectTree(&api.Manifest{Files: []api.File{fl, {Path: "z", Type: api.TypeDir}}}, []string{"x", "y"})
		if err != nil {
			return
		}
		for _, e := range tree {
			if checkPath(e.Path) != nil || filepath.IsAbs(e.Path) {
				t.Fatalf("accepted path %q", e.Path)
			}
			if e.Type != api.TypeFile && e.Type != api.TypeDir && e.Type != api.TypeSymlink {
				t.Fatalf("accepted type %q", e.Type)
			}
		}
	})
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
