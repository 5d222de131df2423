package pkgfile

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/drover-dev/drover/internal/api"
)

var (
	digestA = sha("a")
	digestB = sha("b")
)

// baseManifest is a valid manifest that each case below changes a little.
func baseManifest() *api.Manifest {
	return &api.Manifest{
		Group: "com.example", Name: "app", Version: "1.0.0",
		Tags:    []string{"amd64", "linux"},
		Install: api.InstallPrefix,
		Depends: []api.Dependency{{Name: "com.example:core", Version: "^1.2"}},
		Params: map[string]api.Param{
			"port": {Type: "int", Default: 8080.0, Min: ptr(1), Max: ptr(65535)},
		},
		Templates: []api.Template{{Src: "templates/app.conf", Dest: "etc/app.conf", Digest: digestB}},
		Services:  []api.Service{{Name: "web", Start: "bin/app", Restart: "always"}},
		Scripts:   map[string]string{"postinst": digestB},
		Files: []api.File{
			{Path: "bin", Type: "dir", Mode: 0o755},
			{Path: "bin/app", Type: "file", Mode: 0o755, Size: 1, Digest: digestA},
			{Path: "current", Type: "symlink", Mode: 0o777, Target: "."},
			{Path: "etc", Type: "dir", Mode: 0o755},
			{Path: "lib", Type: "symlink", Mode: 0o777, Target: "bin"},
			{Path: "share", Type: "dir", Mode: 0o755},
			{Path: "share/app", Type: "symlink", Mode: 0o777, Target: "../bin/app"},
			{Path: "share/deep", Type: "symlink", Mode: 0o777, Target: "../lib/app"},
			{Path: "bin", Type: "dir", Mode: 0o755, Overlay: []string{"armv7l"}},
			{Path: "bin/app", Type: "symlink", Mode: 0o777, Target: "app.arm", Overlay: []string{"armv7l"}},
			{Path: "bin/app.arm", Type: "file", Mode: 0o755, Size: 1, Digest: digestA, Overlay: []string{"armv7l"}},
		},
	}
}

func TestValidateManifest(t *testing.T) {
	if err := ValidateManifest(baseManifest()); err != nil {
		t.Fatalf("ValidateManifest(base) = %v, want nil", err)
	}
	file := func(path string) api.File {
		return api.File{Path: path, Type: "file", Mode: 0o644, Size: 1, Digest: digestA}
	}
	link := func(path, target string) api.File {
		return api.File{Path: path, Type: "symlink", Mode: 0o777, Target: target}
	}
	// setFiles replaces the generic tree, keeping it sorted.
	setFiles := func(fs ...api.File) func(m *api.Manifest) {
		return func(m *api.Manifest) { m.Files = fs }
	}
	tests := []struct {
		name   string
		change func(m *api.Manifest)
		want   string // substring of the error; "" means valid
	}{
		{"nil tags and files", func(m *api.Manifest) { m.Tags, m.Files, m.Templates = nil, nil, nil }, ""},
		{"symlink to dir below symlink", setFiles(link("a", "b"), api.File{Path: "b", Type: "dir"}, link("c", "a/x")), ""},
		{"symlink dotdot within", setFiles(api.File{Path: "a", Type: "dir"}, api.File{Path: "a/b", Type: "dir"}, link("a/b/c", "../../x")), ""},
		{"symlink with dot elements", setFiles(link("a", "./b//c/")), ""},
		{"empty overlay is generic", func(m *api.Manifest) { m.Files = []api.File{file("a"), {Path: "b", Type: "dir", Overlay: []string{}}} }, ""},

		{"bad group", func(m *api.Manifest) { m.Group = "" }, "group"},
		{"bad version", func(m *api.Manifest) { m.Version = "v1" }, "version"},
		{"bad install", func(m *api.Manifest) { m.Install = "" }, "install mode"},
		{"unsorted tags", func(m *api.Manifest) { m.Tags = []string{"linux", "amd64"} }, "sorted"},
		{"duplicate tags", func(m *api.Manifest) { m.Tags = []string{"linux", "linux"} }, "sorted"},
		{"bad tag", func(m *api.Manifest) { m.Tags = []string{"../x"} }, "tag"},
		{"bad dependency", func(m *api.Manifest) { m.Depends = []api.Dependency{{Name: "x"}} }, "depends"},
		{"bad constraint", func(m *api.Manifest) { m.Depends = []api.Dependency{{Name: "a:b", Version: "~>"}} }, "constraint"},
		{"int default not integral", func(m *api.Manifest) { m.Params["port"] = api.Param{Type: "int", Default: 1.5} }, "not an int"},
		{"param without type", func(m *api.Manifest) { m.Params["x"] = api.Param{} }, "type"},
		{"bad service", func(m *api.Manifest) { m.Services[0].Restart = "" }, "restart"},
		{"unknown script", func(m *api.Manifest) { m.Scripts["evil"] = digestA }, "script \"evil\""},
		{"bad script digest", func(m *api.Manifest) { m.Scripts["postinst"] = strings.ToUpper(digestA) }, "digest"},
		{"template dest absolute", func(m *api.Manifest) { m.Templates[0].Dest = "/etc/shadow" }, "absolute"},
		{"template dest dotdot", func(m *api.Manifest) { m.Templates[0].Dest = "../x" }, `".."`},
		{"template without digest", func(m *api.Manifest) { m.Templates[0].Digest = "" }, "digest"},
		{"template dest through symlink", func(m *api.Manifest) { m.Templates[0].Dest = "lib/app.conf" }, `through symlink "lib"`},

		{"absolute path", setFiles(file("/etc/passwd")), "absolute"},
		{"dotdot path", setFiles(file("a/../../etc/passwd")), `".."`},
		{"dot path", setFiles(file("./a")), `"."`},
		{"empty element", setFiles(file("a//b")), "empty element"},
		{"trailing slash", setFiles(file("a/")), "empty element"},
		{"empty path", setFiles(file("")), "empty path"},
		{"NUL", setFiles(file("a\x00b")), "NUL"},
		{"backslash", setFiles(file(`a\..\b`)), "backslash"},
		{"path too long", setFiles(file(strings.Repeat("a/", 2048) + "b")), "longer than 4096"},
		{"element too long", setFiles(file(strings.Repeat("a", 256))), "longer than 255"},
		{"fifo", setFiles(api.File{Path: "p", Type: "fifo"}), `type "fifo"`},
		{"hardlink", setFiles(api.File{Path: "p", Type: "link", Target: "a"}), `type "link"`},
		{"setuid", setFiles(api.File{Path: "p", Type: "file", Mode: 0o4755, Digest: digestA}), "setuid"},
		{"sticky", setFiles(api.File{Path: "p", Type: "dir", Mode: 0o1777}), "sticky"},
		{"file without digest", setFiles(api.File{Path: "p", Type: "file"}), "digest"},
		{"uppercase digest", setFiles(api.File{Path: "p", Type: "file", Digest: strings.ToUpper(digestA)}), "digest"},
		{"negative size", setFiles(api.File{Path: "p", Type: "file", Digest: digestA, Size: -1}), "negative"},
		{"one digest two sizes", setFiles(file("a"), api.File{Path: "b", Type: "file", Digest: digestA, Size: 2}), "size 2"},
		{"file with target", setFiles(api.File{Path: "p", Type: "file", Digest: digestA, Target: "x"}), "no target"},
		{"dir with digest", setFiles(api.File{Path: "p", Type: "dir", Digest: digestA}), "only files"},
		{"dir with target", setFiles(api.File{Path: "p", Type: "dir", Target: "x"}), "no target"},
		{"symlink without target", setFiles(link("p", "")), "no target"},
		{"duplicate path", setFiles(file("a"), file("a")), "listed twice"},
		{"unsorted", setFiles(file("b"), file("a")), "not sorted"},
		{"overlay before generic", setFiles(api.File{Path: "a", Type: "dir", Overlay: []string{"x"}}, file("b")), "not sorted"},
		{"unsorted overlay tags", setFiles(api.File{Path: "a", Type: "dir", Overlay: []string{"b", "a"}}), "overlay"},
		{"invalid overlay tag", setFiles(api.File{Path: "a", Type: "dir", Overlay: []string{"a,b"}}), "overlay"},

		{"absolute symlink", setFiles(link("a", "/etc/passwd")), "absolute"},
		{"symlink escapes", setFiles(link("a", "..")), "leaves the install root"},
		{"nested symlink escapes", setFiles(api.File{Path: "a", Type: "dir"}, link("a/b", "../../etc")), "leaves the install root"},
		{"symlink escapes midway", setFiles(link("a", "../root/x")), "leaves the install root"},
		{"symlink escapes in overlay", setFiles(api.File{Path: "a", Type: "symlink", Target: "..", Overlay: []string{"x"}}), "leaves the install root"},
		{"symlink dotdot after symlink", setFiles(link("d", "."), link("e", "d/..")), `after passing through symlink "d"`},
		{"symlink dotdot after overlay symlink", setFiles(link("e", "d/../x"), api.File{Path: "d", Type: "symlink", Target: "a/b", Overlay: []string{"x"}}), `after passing through symlink "d"`},
		// The device cannot know that an on-disk "s" is not a symlink
		// (root mode lays the tree over an operator's disk): ".." after
		// any name is refused, as the install engine always did.
		{"symlink dotdot after a name", setFiles(link("t", "s/..")), `".." after a name`},
		{"symlink dotdot after a dir", setFiles(api.File{Path: "s", Type: "dir"}, link("t", "s/../x")), `".." after a name`},
		{"symlink NUL", setFiles(link("a", "b\x00")), "NUL"},
		{"path through symlink", setFiles(link("etc", "x"), file("etc/passwd")), `goes through symlink "etc"`},
		{"path through deeper symlink", setFiles(api.File{Path: "a", Type: "dir"}, link("a/b", "."), file("a/b/c/d")), `goes through symlink "a/b"`},
		{"overlay path through generic symlink", setFiles(link("etc", "x"), api.File{Path: "etc/passwd", Type: "file", Digest: digestA, Size: 1, Overlay: []string{"x"}}), `goes through symlink "etc"`},
		{"generic path through overlay symlink", setFiles(file("etc/passwd"), api.File{Path: "etc", Type: "symlink", Target: "/", Overlay: []string{"x"}}), `through symlink "etc"`},
		{"file as parent", setFiles(file("a"), file("a/b")), `goes through "a", which is a file`},
		{"file in one tree dir in another", setFiles(file("a"), api.File{Path: "a", Type: "dir", Overlay: []string{"x"}}), "directory in one tree"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := baseManifest()
			tc.change(m)
			err := ValidateManifest(m)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("ValidateManifest() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("ValidateManifest() = nil, want error containing %q", tc.want)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("ValidateManifest() = %v, want it to wrap ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ValidateManifest() = %q, want it to contain %q", err, tc.want)
			}
			// What ValidateManifest refuses, DecodeManifest refuses too.
			data, jerr := json.Marshal(m)
			if jerr != nil {
				t.Fatal(jerr)
			}
			if _, err := DecodeManifest(data); !errors.Is(err, ErrInvalid) {
				t.Errorf("DecodeManifest() error = %v, want ErrInvalid", err)
			}
		})
	}
	if err := ValidateManifest(nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("ValidateManifest(nil) = %v, want ErrInvalid", err)
	}
}

func TestDecodeManifest(t *testing.T) {
	data, err := json.Marshal(baseManifest())
	if err != nil {
		t.Fatal(err)
	}
	// A newer builder may add fields: they are ignored.
	newer := strings.Replace(string(data), `{"group"`, `{"signature":"xyz","group"`, 1)
	m, err := DecodeManifest([]byte(newer))
	if err != nil {
		t.Fatalf("DecodeManifest(with an unknown field) error = %v", err)
	}
	if m.Name != "app" || len(m.Files) != len(baseManifest().Files) {
		t.Errorf("DecodeManifest() = %s with %d files, want app with %d", m.Name, len(m.Files), len(baseManifest().Files))
	}
	for _, bad := range []string{"", "null", "{", `{"group": 1}`, `[]`, string(data) + "x"} {
		if _, err := DecodeManifest([]byte(bad)); !errors.Is(err, ErrInvalid) {
			t.Errorf("DecodeManifest(%q) error = %v, want ErrInvalid", bad, err)
		}
	}
}
