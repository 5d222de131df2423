package install

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/param"
)

var errBlobNotFound = errors.New("blob not found")

// dirBlobs is a blob cache double: files named by digest in a folder.
// It records every Open.
type dirBlobs struct {
	dir    string
	mu     sync.Mutex
	opened []string
}

func (b *dirBlobs) Open(_ context.Context, digest string) (*os.File, error) {
	b.mu.Lock()
	b.opened = append(b.opened, digest)
	b.mu.Unlock()
	f, err := os.Open(filepath.Join(b.dir, digest))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", digest, errBlobNotFound)
	}
	return f, err
}

func (b *dirBlobs) reset() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	o := b.opened
	b.opened = nil
	return o
}

// env is one test device: root, software root, state and blob dirs.
type env struct {
	t       testing.TB
	base    string
	root    string
	sw      string
	state   string
	logs    string
	marks   string
	blobs   *dirBlobs
	fixture map[string]bool // paths under root that exist before any install
}

func newEnv(t testing.TB) *env {
	t.Helper()
	base := t.TempDir()
	v := &env{t: t, base: base}
	v.root = filepath.Join(base, "root")
	v.sw = filepath.Join(base, "software")
	v.state = filepath.Join(base, "state")
	v.logs = filepath.Join(base, "logs")
	v.marks = filepath.Join(base, "marks")
	v.blobs = &dirBlobs{dir: filepath.Join(base, "blobs")}
	for _, d := range []string{v.root, v.sw, v.blobs.dir, filepath.Join(v.root, "etc")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	v.snapshotFixture()
	return v
}

// snapshotFixture records what is under root now: it must survive any
// install and removal.
func (v *env) snapshotFixture() {
	v.fixture = map[string]bool{}
	for _, p := range walk(v.t, v.root) {
		v.fixture[p] = true
	}
}

func (v *env) config(crash func(string) error) Config {
	return Config{
		SoftwareRoot: v.sw, Root: v.root, StateDir: v.state, LogDir: v.logs,
		Device: "dev-1", Blobs: v.blobs, Crash: crash,
	}
}

// engine returns a recovered engine.
func (v *env) engine(crash func(string) error) *Engine {
	v.t.Helper()
	e, err := New(v.config(crash))
	if err != nil {
		v.t.Fatal(err)
	}
	if err := e.Recover(context.Background()); err != nil {
		v.t.Fatalf("Recover() = %v", err)
	}
	return e
}

func (v *env) putBlob(content string) string {
	v.t.Helper()
	h := sha256.Sum256([]byte(content))
	d := hex.EncodeToString(h[:])
	if err := os.WriteFile(filepath.Join(v.blobs.dir, d), []byte(content), 0o644); err != nil {
		v.t.Fatal(err)
	}
	return d
}

// spec is one entry of a test package.
type spec struct {
	path, typ, content, target string
	mode                       uint32
	overlay                    []string
}

func F(p, content string) spec {
	return spec{path: p, typ: api.TypeFile, content: content, mode: 0o644}
}
func X(p, content string) spec {
	return spec{path: p, typ: api.TypeFile, content: content, mode: 0o755}
}
func D(p string) spec { return spec{path: p, typ: api.TypeDir, mode: 0o750} }
func L(p, target string) spec {
	return spec{path: p, typ: api.TypeSymlink, target: target, mode: 0o777}
}

// on puts s in the overlay of tags t, written as the builder does (sorted).
func (s spec) on(t ...string) spec { s.overlay = api.NormalizeTags(t); return s }

// markScript appends its name and environment to $DROVER_PARAM_MARKS and
// fails with code 3 when $DROVER_PARAM_FAIL names it.
func markScript(name string) string {
	return `#!/bin/sh
if [ -n "$DROVER_PARAM_MARKS" ]; then
  echo "` + name + ` pkg=$DROVER_PACKAGE v=$DROVER_VERSION old=$DROVER_OLD_VERSION action=$DROVER_ACTION prefix=$DROVER_PREFIX cwd=$(pwd) root=$DROVER_ROOT dev=$DROVER_DEVICE inst=$DROVER_INSTANCE port=$DROVER_PARAM_LISTEN_PORT" >> "$DROVER_PARAM_MARKS"
fi
if [ "$DROVER_PARAM_FAIL" = "` + name + `" ]; then
  echo "some output"
  echo "` + name + ` is failing on purpose" >&2
  exit 3
fi
exit 0
`
}

// pkg describes a test package build.
type pkg struct {
	name, version, install string
	files                  []spec
	scripts                []string
	instance               string
	have                   []string
	params                 map[string]string
	// templates are rendered templates: dest -> content.
	templates map[string]string
}

// target builds the manifest, stores its blobs and returns the Target.
func (v *env) target(p pkg) Target {
	v.t.Helper()
	mode := p.install
	if mode == "" {
		mode = api.InstallPrefix
	}
	m := &api.Manifest{Group: "com.example", Name: p.name, Version: p.version, Tags: []string{}, Install: mode}
	for _, s := range p.files {
		f := api.File{Path: s.path, Type: s.typ, Mode: s.mode, Target: s.target, Overlay: s.overlay}
		if s.typ == api.TypeFile {
			f.Digest = v.putBlob(s.content)
			f.Size = int64(len(s.content))
		}
		m.Files = append(m.Files, f)
	}
	// Sorted as the builder writes them: by overlay, then path.
	slices.SortStableFunc(m.Files, func(a, b api.File) int {
		return cmp.Or(strings.Compare(strings.Join(a.Overlay, ","), strings.Join(b.Overlay, ",")), strings.Compare(a.Path, b.Path))
	})
	if len(p.scripts) > 0 {
		m.Scripts = map[string]string{}
		for _, n := range p.scripts {
			m.Scripts[n] = v.putBlob(markScript(n))
		}
	}
	var rendered []param.Rendered
	for _, dest := range slices.Sorted(maps.Keys(p.templates)) {
		m.Templates = append(m.Templates, api.Template{Src: "templates/" + path.Base(dest), Dest: dest, Digest: v.putBlob("{{/* source of */}}" + dest)})
		rendered = append(rendered, param.Rendered{Dest: dest, Data: []byte(p.templates[dest])})
	}
	b, err := json.Marshal(m)
	if err != nil {
		v.t.Fatal(err)
	}
	h := sha256.Sum256(b)
	params := map[string]string{"marks": v.marks, "listen-port": "8080"}
	for k, val := range p.params {
		params[k] = val
	}
	return Target{Manifest: m, Digest: hex.EncodeToString(h[:]), Have: p.have, Tags: []string{"t1"}, Instance: p.instance, Params: params, Templates: rendered}
}

func (v *env) apply(e *Engine, t Target) *api.InstalledApp {
	v.t.Helper()
	app, err := e.Apply(context.Background(), t)
	if err != nil {
		v.t.Fatalf("Apply(%s) = %v", t.Manifest.Coordinate(), err)
	}
	return app
}

// readMarks returns the script lines written so far and clears them.
func (v *env) readMarks() []string {
	b, err := os.ReadFile(v.marks)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		v.t.Fatal(err)
	}
	os.Remove(v.marks)
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// order reduces mark lines to "script coordinate".
func order(lines []string) []string {
	var out []string
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) >= 2 {
			out = append(out, f[0]+" "+strings.TrimPrefix(f[1], "pkg="))
		}
	}
	return out
}

// walk lists every path under dir, relative, slash-separated.
func walk(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		out = append(out, filepath.ToSlash(rel))
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

func withAncestors(set map[string]bool, p string) {
	for ; p != "." && p != "" && p != "/"; p = path.Dir(p) {
		set[p] = true
	}
}

// assertConsistent checks the invariant after any step or recovery:
// every installed app is wholly its build (CheckInstalled), a prefix
// app's previous folder is wholly the previous build, nothing else is
// on disk (no staging leftovers, no half of another build), there is no
// journal, and state.json says what the engine says.
func (v *env) assertConsistent(e *Engine) {
	v.t.Helper()
	if ok, _ := exists(filepath.Join(v.state, "journal.json")); ok {
		v.t.Fatalf("journal.json still there")
	}
	wantRoot := map[string]bool{}
	for p := range v.fixture {
		wantRoot[p] = true
	}
	wantSW := map[string]bool{}
	rendered := map[string]bool{} // digests the rendered store must hold
	for _, a := range e.state.Apps {
		m, err := e.Manifest(a.Digest)
		if err != nil {
			v.t.Fatalf("Manifest(%s) = %v", a.Digest, err)
		}
		pub := a.public()
		if err := CheckInstalled(v.root, v.sw, pub, m, a.Have); err != nil {
			v.t.Fatalf("CheckInstalled(%s %s) = %v", a.Name, a.Version, err)
		}
		tree, _ := appTree(m, a.Have, a.Templates)
		for _, f := range a.Templates {
			rendered[f.Digest] = true
		}
		if a.Previous != nil {
			for _, f := range a.Previous.Templates {
				rendered[f.Digest] = true
			}
		}
		if a.Install == api.InstallRoot {
			for _, f := range tree {
				withAncestors(wantRoot, f.Path)
			}
			// Rendered templates are whole, as the build's files are.
			for _, f := range a.Templates {
				loc := func(r string, _ bool) (string, error) { return filepath.Join(v.root, filepath.FromSlash(r)), nil }
				if err := checkOne(f, loc, false); err != nil {
					v.t.Fatalf("%s %s template %s: %v", a.Name, a.Version, f.Path, err)
				}
			}
			continue
		}
		pkgDir, _ := PackageDir(v.sw, a.Name, a.Instance)
		rel, _ := filepath.Rel(v.sw, pkgDir)
		withAncestors(wantSW, filepath.ToSlash(rel)+"/current")
		folders := []struct {
			dir  string
			tree []api.File
		}{{a.Prefix, tree}}
		if p := a.Previous; p != nil {
			pm, err := e.Manifest(p.Digest)
			if err != nil {
				v.t.Fatalf("Manifest(previous %s) = %v", p.Digest, err)
			}
			ptree, err := appTree(pm, p.Have, p.Templates)
			if err != nil {
				v.t.Fatal(err)
			}
			folders = append(folders, struct {
				dir  string
				tree []api.File
			}{p.Prefix, ptree})
		}
		for _, fo := range folders {
			frel, _ := filepath.Rel(v.sw, fo.dir)
			withAncestors(wantSW, filepath.ToSlash(frel))
			for _, f := range fo.tree {
				withAncestors(wantSW, filepath.ToSlash(frel)+"/"+f.Path)
				loc := func(r string, _ bool) (string, error) { return filepath.Join(fo.dir, filepath.FromSlash(r)), nil }
				if err := checkOne(f, loc, true); err != nil {
					v.t.Fatalf("%s %s folder %s: %s: %v", a.Name, a.Version, fo.dir, f.Path, err)
				}
			}
		}
	}
	// Kept manifests and scripts: exactly those of installed and
	// previous builds.
	keptM, keptS := map[string]bool{}, map[string]bool{}
	for _, a := range e.state.Apps {
		for _, d := range []string{a.Digest, prevDigest(a)} {
			if d == "" {
				continue
			}
			keptM[d+".json"] = true
			if m, _ := e.Manifest(d); m != nil && len(m.Scripts) > 0 {
				keptS[d] = true
				for n := range m.Scripts {
					keptS[d+"/"+n] = true
				}
			}
		}
	}
	if got, want := walk(v.t, filepath.Join(v.state, "manifests")), sortedKeys(keptM); !slices.Equal(got, want) {
		v.t.Fatalf("kept manifests:\n got %q\nwant %q", got, want)
	}
	if got, want := walk(v.t, filepath.Join(v.state, "scripts")), sortedKeys(keptS); !slices.Equal(got, want) {
		v.t.Fatalf("kept scripts:\n got %q\nwant %q", got, want)
	}
	if got, want := walk(v.t, filepath.Join(v.state, "rendered")), sortedKeys(rendered); !slices.Equal(got, want) {
		v.t.Fatalf("kept rendered templates:\n got %q\nwant %q", got, want)
	}
	if got, want := walk(v.t, v.root), sortedKeys(wantRoot); !slices.Equal(got, want) {
		v.t.Fatalf("files under root:\n got %q\nwant %q", got, want)
	}
	if got, want := walk(v.t, v.sw), sortedKeys(wantSW); !slices.Equal(got, want) {
		v.t.Fatalf("files under software root:\n got %q\nwant %q", got, want)
	}
	// state.json agrees with the engine.
	st, err := loadState(filepath.Join(v.state, "state.json"))
	if err != nil {
		v.t.Fatal(err)
	}
	a, _ := json.Marshal(st.Apps)
	b, _ := json.Marshal(e.state.Apps)
	if len(st.Apps) == 0 && len(e.state.Apps) == 0 {
		return
	}
	if string(a) != string(b) {
		v.t.Fatalf("state.json = %s\nengine has %s", a, b)
	}
}

// installed returns the digest of the app named name ("" if absent).
func installedDigest(e *Engine, name string) string {
	for _, a := range e.Installed() {
		if a.Name == "com.example:"+name {
			return a.Digest
		}
	}
	return ""
}

func prevDigest(a *appState) string {
	if a.Previous == nil {
		return ""
	}
	return a.Previous.Digest
}
