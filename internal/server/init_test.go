package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/client"
	"github.com/drover-dev/drover/internal/resolve"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// pushProgram pushes com.example:NAME VERSION with tags: bin/join
// (executable), README (not) and bin/link (a symlink). It returns the
// manifest digest and bin/join's blob digest.
func (ts *testServer) pushProgram(t *testing.T, name, version string, tags ...string) (string, string) {
	t.Helper()
	ctx := context.Background()
	m := api.Manifest{Group: "com.example", Name: name, Version: version, Tags: append([]string{}, tags...), Install: api.InstallPrefix}
	var join string
	for _, f := range []struct {
		path, content string
		mode          uint32
	}{{"README", "read me " + version, 0o644}, {"bin/join", "#!/bin/sh\necho " + version + " " + strings.Join(tags, ",") + "\n", 0o755}} {
		sum := sha256.Sum256([]byte(f.content))
		d := hex.EncodeToString(sum[:])
		if err := ts.admin.PutBlob(ctx, d, int64(len(f.content)), bytes.NewReader([]byte(f.content))); err != nil {
			t.Fatal(err)
		}
		m.Files = append(m.Files, api.File{Path: f.path, Type: api.TypeFile, Mode: f.mode, Size: int64(len(f.content)), Digest: d})
		if f.path == "bin/join" {
			join = d
		}
	}
	m.Files = append(m.Files, api.File{Path: "bin", Type: api.TypeDir, Mode: 0o755}, api.File{Path: "bin/link", Type: api.TypeSymlink, Mode: 0o777, Target: "join"})
	sortManifestFiles(m.Files)
	data, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	b, err := ts.admin.PushManifest(ctx, data)
	if err != nil {
		t.Fatalf("push %s: %v", name, err)
	}
	return b.Digest, join
}

func sortManifestFiles(fs []api.File) {
	for i := 1; i < len(fs); i++ {
		for j := i; j > 0 && fs[j].Path < fs[j-1].Path; j-- {
			fs[j], fs[j-1] = fs[j-1], fs[j]
		}
	}
}

func initGroup(name, sel string, entries ...api.InitEntry) api.Document {
	d := group(name, sel, app("web", "1.0.0"))
	d.Init = entries
	return d
}

func TestInitValidation(t *testing.T) {
	ts := newTestServer(t, 30*time.Second)
	ts.push(t, "web", "1.0.0", []string{"linux"}, "web")
	ts.pushProgram(t, "join", "1.0.0", "linux")
	ts.pushProgram(t, "join", "1.1.0", "linux")
	ts.pushProgram(t, "half", "1.0.0", "linux")
	ts.push(t, "half", "1.0.0", []string{"arm64", "linux"}, "no program in this build")
	entry := func(name, version, run string) api.InitEntry {
		return api.InitEntry{Name: "com.example:" + name, Version: version, Run: run}
	}
	for _, c := range []struct {
		name string
		doc  api.Document
		want string // "" = accepted
	}{
		{"exact", initGroup("edge", "", entry("join", "1.0.0", "bin/join")), ""},
		{"constraint", initGroup("edge", "", entry("join", "^1", "bin/join")), ""},
		{"latest", initGroup("edge", "", entry("join", "", "bin/join")), ""},
		{"unknown package", initGroup("edge", "", entry("nope", "1.0.0", "bin/join")), "group edge: init com.example:nope: unknown package"},
		{"no such version", initGroup("edge", "", entry("join", "2.0.0", "bin/join")), `group edge: init com.example:join: no version matches "2.0.0"`},
		{"not executable", initGroup("edge", "", entry("join", "1.0.0", "README")), "group edge: init com.example:join:1.0.0: run: README is not executable (mode 0644)"},
		{"a symlink", initGroup("edge", "", entry("join", "1.0.0", "bin/link")), "run: bin/link is a symlink, not a file"},
		{"a directory", initGroup("edge", "", entry("join", "1.0.0", "bin")), "run: bin is a dir, not a file"},
		{"not in the build", initGroup("edge", "", entry("join", "1.0.0", "bin/other")), "run: bin/other is not a file of the package"},
		{"not in every build of the version", initGroup("edge", "", entry("half", "1.0.0", "bin/join")), "init com.example:half:1.0.0: run: bin/join is not a file of the package"},
		{"absolute", initGroup("edge", "", entry("join", "1.0.0", "/bin/sh")), `run: path "/bin/sh" is absolute`},
		{"dot dot", initGroup("edge", "", entry("join", "1.0.0", "../x")), `has a ".." element`},
		{"no run", initGroup("edge", "", entry("join", "1.0.0", "")), "init com.example:join: no run"},
		{"bad name", initGroup("edge", "", api.InitEntry{Name: "join", Run: "bin/join"}), "group edge: init[0]:"},
		{"twice", initGroup("edge", "", entry("join", "1.0.0", "bin/join"), entry("join", "1.1.0", "bin/join")), "init com.example:join: listed twice"},
		{"device document", api.Document{ID: "d1", Apps: []api.DesiredApp{}, Init: []api.InitEntry{entry("join", "1.0.0", "bin/join")}}, "d1: a device document has no init entries"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ts.admin.SetDocuments(context.Background(), []api.Document{c.doc})
			var ae *api.Error
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("SetDocuments = %v, want accepted", err)
			case c.want != "" && (!errors.As(err, &ae) || ae.Code != api.EINVALID || !strings.Contains(ae.Message, c.want) || strings.Contains(ae.Message, "\n")):
				t.Fatalf("SetDocuments = %v, want one invalid line with %q", err, c.want)
			}
		})
	}
	doc, err := ts.admin.Document(context.Background(), api.DocGroup, "edge")
	if err != nil {
		t.Fatal(err)
	}
	evs, err := ts.admin.Events(context.Background(), client.EventQuery{Kind: api.KindState})
	if err != nil || len(evs) == 0 || !strings.Contains(evs[len(evs)-1].Message, "com.example:web 1.0.0, init com.example:join (1.1.0) bin/join") {
		t.Errorf("last state event = %+v, %v; want the init entry and its pin in the message", evs, err)
	}
	if len(doc.Init) != 1 || doc.Init[0].Version != "" || len(doc.Pinned) != 1 || !doc.Pinned[0].Init || doc.Pinned[0].Version != "1.1.0" {
		t.Errorf("stored document after the last accepted set = %+v, want init as written, pinned to 1.1.0", doc)
	}
}

func TestInitResolvedAuthorizedAndPlanned(t *testing.T) {
	ts := newTestServer(t, 30*time.Second)
	ctx := context.Background()
	ts.push(t, "web", "1.0.0", []string{"linux"}, "web")
	generic, _ := ts.pushProgram(t, "join", "1.0.0", "linux")
	arm, armJoin := ts.pushProgram(t, "join", "1.0.0", "arm64", "linux")
	ts.reportAs(t, "d1", map[string]string{"role": "edge"})
	ts.reportAs(t, "d2", map[string]string{"role": "db"})
	if _, err := ts.admin.SetDocuments(ctx, []api.Document{group("all", "", app("web", "1.0.0"))}); err != nil {
		t.Fatal(err)
	}
	before := ts.desired(t, "d1")
	if before.Init != nil || before.Digest != resolve.Digest(before.Apps) {
		t.Errorf("without init entries: %+v, want the digest of the apps alone", before)
	}
	edge := initGroup("edge", "role=edge", api.InitEntry{Name: "com.example:join", Version: "^1", Run: "bin/join"})
	other := initGroup("edge", "role=edge") // the same app build again, as another instance
	other.Apps[0].Instance = "b"
	withoutInit, err := ts.admin.Plan(ctx, []api.Document{other})
	if err != nil || len(withoutInit.Devices) != 1 {
		t.Fatalf("plan without init = %+v, %v", withoutInit, err)
	}
	p, err := ts.admin.Plan(ctx, []api.Document{edge})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Devices) != 1 || p.Devices[0].Device != "d1" || len(p.Devices[0].Steps) != 2 || p.Devices[0].Download <= withoutInit.Devices[0].Download || p.Devices[0].Steps[0].Kind != api.StepInit ||
		p.Devices[0].Steps[0].Build != generic || p.Devices[0].Steps[0].Group != "edge" || p.Devices[0].Steps[0].Run != "bin/join" {
		t.Errorf("plan = %+v, want d1 with the init step of the generic build first, then the app, downloading the init build too", p)
	}
	if _, err := ts.admin.SetDocuments(ctx, []api.Document{edge}); err != nil {
		t.Fatal(err)
	}
	r := ts.desired(t, "d1")
	want := []api.ResolvedInit{{Group: "edge", Name: "com.example:join", Version: "1.0.0", Digest: generic, Run: "bin/join", BuildTags: []string{"linux"}}}
	if len(r.Init) != 1 || !cmp.Equal(r.Init[0], want[0], cmpopts.EquateEmpty()) || r.Digest == before.Digest || r.Digest != resolve.StateDigest(r.Apps, r.Init) {
		t.Errorf("d1 resolves to init %+v digest %s, want %+v in a new digest", r.Init, r.Digest, want)
	}
	if got := ts.desired(t, "d2"); got.Init != nil {
		t.Errorf("d2 (not in the group) gets init %+v", got.Init)
	}

	// Tag match picks the arm64 build for an arm64 device, like an app's.
	ts.dev["d1"].Report(ctx, "d1", api.Report{Tags: []string{"linux", "arm64"}, Labels: map[string]string{"role": "edge"}, Installed: []api.InstalledApp{}})
	if got := ts.desired(t, "d1"); len(got.Init) != 1 || got.Init[0].Digest != arm {
		t.Errorf("arm64 d1 init = %+v, want build %s", got.Init, arm)
	}
	// The device may fetch its init build and its files; another may not.
	for _, c := range []struct {
		id, digest string
		ok         bool
	}{{"d1", arm, true}, {"d1", armJoin, true}, {"d2", arm, false}, {"d2", armJoin, false}} {
		body, _, err := ts.dev[c.id].Blob(ctx, c.digest)
		if err == nil {
			_, _ = io.Copy(io.Discard, body)
			body.Close()
		}
		if (err == nil) != c.ok {
			t.Errorf("%s fetching %.12s: err %v, want allowed %v", c.id, c.digest, err, c.ok)
		}
	}

	// Reported done: a plan of the same group shows no init step for it.
	ts.dev["d1"].Report(ctx, "d1", api.Report{Tags: []string{"linux", "arm64"}, Labels: map[string]string{"role": "edge"}, Installed: []api.InstalledApp{},
		Init: []api.InitRecord{{Group: "edge", Name: "com.example:join", Version: "1.0.0", Digest: arm, Run: "bin/join"}}})
	edge.Apps = append(edge.Apps, app("web", "1.0.0"))
	edge.Apps[1].Instance = "b"
	p, err = ts.admin.Plan(ctx, []api.Document{edge})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Devices) != 1 || p.Devices[0].Device != "d1" {
		t.Fatalf("plan of a new app = %+v, want d1", p)
	}
	for _, d := range p.Devices {
		for _, s := range d.Steps {
			if s.Kind == api.StepInit {
				t.Errorf("plan after d1 reported the init entry done still has %+v", s)
			}
		}
	}
}
