package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/pki"
	"github.com/drover-dev/drover/internal/store"
)

// reportAs sends a report of device id with labels and installed apps,
// making its client on first use.
func (ts *testServer) reportAs(t *testing.T, id string, labels map[string]string, installed ...api.InstalledApp) {
	t.Helper()
	if ts.dev[id] == nil {
		ts.dev[id] = ts.client(pki.RoleDevice, id)
	}
	if installed == nil {
		installed = []api.InstalledApp{}
	}
	if _, err := ts.dev[id].Report(context.Background(), id, api.Report{Tags: []string{"linux"}, Labels: labels, Installed: installed}); err != nil {
		t.Fatalf("report %s: %v", id, err)
	}
}

// pushFiles pushes a build with these root-mode or prefix files
// (path → content).
func (ts *testServer) pushFiles(t *testing.T, name, version, install string, files map[string]string) string {
	t.Helper()
	ctx := context.Background()
	m := api.Manifest{Group: "com.example", Name: name, Version: version, Tags: []string{}, Install: install}
	var paths []string
	for p := range files {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	for _, p := range paths {
		sum := sha256.Sum256([]byte(files[p]))
		d := hex.EncodeToString(sum[:])
		if err := ts.admin.PutBlob(ctx, d, int64(len(files[p])), bytes.NewReader([]byte(files[p]))); err != nil {
			t.Fatal(err)
		}
		m.Files = append(m.Files, api.File{Path: p, Type: api.TypeFile, Mode: 0o644, Size: int64(len(files[p])), Digest: d})
	}
	data, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	b, err := ts.admin.PushManifest(ctx, data)
	if err != nil {
		t.Fatalf("push %s: %v", name, err)
	}
	return b.Digest
}

func group(name, sel string, apps ...api.DesiredApp) api.Document {
	return api.Document{Group: name, Selector: sel, Apps: apps}
}

func app(name, version string) api.DesiredApp {
	return api.DesiredApp{Name: "com.example:" + name, Version: version}
}

// apps is "name=version" of each resolved app, or the error.
func apps(r *api.Resolved) []string {
	if r.Error != "" {
		return []string{"error: " + r.Error}
	}
	out := []string{}
	for _, a := range r.Apps {
		out = append(out, strings.TrimPrefix(a.Name, "com.example:")+"="+a.Version)
	}
	return out
}

func (ts *testServer) desired(t *testing.T, id string) *api.Resolved {
	t.Helper()
	r, err := ts.dev[id].Desired(context.Background(), id, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestGroupsPinsAndPlan(t *testing.T) {
	ts := newTestServer(t, 30*time.Second)
	ctx := context.Background()
	web100, _ := ts.push(t, "web", "1.0.0", []string{"linux"}, "web 1.0.0")
	ts.push(t, "web", "1.1.0", []string{"linux"}, "web 1.1.0")
	ts.push(t, "tool", "1.0.0", []string{"linux"}, "tool")
	ts.reportAs(t, "d1", map[string]string{"env": "prod", "role": "web"}, api.InstalledApp{Name: "com.example:web", Version: "1.0.0", Digest: web100})
	ts.reportAs(t, "d2", map[string]string{"env": "prod"})
	ts.reportAs(t, "d3", map[string]string{"env": "dev"})

	_, err := ts.admin.SetDocuments(ctx, []api.Document{
		group("prod", "env=prod", app("web", "^1.0")),
		group("prod-web", "env=prod,role=web", app("web", "1.0.0")),
		{ID: "d2", Apps: []api.DesiredApp{app("tool", "1.0.0")}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		id   string
		want []string
	}{
		{"d1", []string{"web=1.0.0"}},               // the most specific group
		{"d2", []string{"tool=1.0.0", "web=1.1.0"}}, // own document, then the group (pinned ^1.0 = 1.1.0)
	} {
		if got := apps(ts.desired(t, c.id)); !cmp.Equal(got, c.want) {
			t.Errorf("%s resolves to %v, want %v", c.id, got, c.want)
		}
	}
	if r := ts.desired(t, "d3"); !r.Unset {
		t.Errorf("d3 (no document applies) = %+v, want unset", r)
	}
	d, err := ts.admin.Device(ctx, "d2")
	if err != nil {
		t.Fatal(err)
	}
	var sources []string
	for _, e := range d.Effective {
		sources = append(sources, e.Name+"<"+e.Source)
	}
	if want := []string{"com.example:tool<device/d2", "com.example:web<group/prod"}; !cmp.Equal(sources, want) {
		t.Errorf("device d2 effective sources = %v, want %v", sources, want)
	}
	prod, err := ts.admin.Document(ctx, api.DocGroup, "prod")
	if err != nil || !cmp.Equal(prod.Pinned, []api.Pin{{Name: "com.example:web", Constraint: "^1.0", Version: "1.1.0"}}) || prod.SetBy != "ops" {
		t.Errorf("state get --group prod = %+v, %v, want web pinned to 1.1.0, set by ops", prod, err)
	}

	// A push reaches nobody by itself: no resolution is redone, and state
	// ls says what would fit.
	before := ts.srv.res.cache["d2"]
	ts.push(t, "web", "1.2.0", []string{"linux"}, "web 1.2.0")
	if after := ts.srv.res.cache["d2"]; before == nil || after != before {
		t.Errorf("a push dropped d2's resolution (%p -> %p)", before, after)
	}
	ts.srv.res.invalidateResolutions() // as after a restart: resolve from scratch
	if got := apps(ts.desired(t, "d2")); !cmp.Equal(got, []string{"tool=1.0.0", "web=1.1.0"}) {
		t.Errorf("after a push d2 resolves to %v, want web still 1.1.0", got)
	}
	ls, err := ts.admin.Documents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 3 || ls[1].Key() != "group/prod" || !cmp.Equal(ls[1].Newer, []string{"com.example:web 1.2.0"}) || ls[1].Devices != 1 || ls[0].Devices != 1 || ls[2].Devices != 1 {
		t.Errorf("state ls = %+v, want prod with newer web 1.2.0 and one device each", ls)
	}

	// Plan of prod-web moving to ^1: d1 upgrades and downloads the new
	// build (manifest + its one file); nothing is stored.
	p, err := ts.admin.Plan(ctx, []api.Document{group("prod-web", "env=prod,role=web", app("web", "^1"))})
	if err != nil {
		t.Fatal(err)
	}
	if p.Summary() != "1 devices change, 2 unchanged, 0 errors" || len(p.Devices) != 1 {
		t.Fatalf("plan = %+v (%s)", p, p.Summary())
	}
	dp := p.Devices[0]
	if dp.Device != "d1" || len(dp.Steps) != 1 || dp.Steps[0].Kind != api.StepUpgrade || dp.Steps[0].From != "1.0.0" || dp.Steps[0].To != "1.2.0" ||
		!cmp.Equal(dp.Steps[0].BuildTags, []string{"linux"}) || dp.Steps[0].Build == "" {
		t.Errorf("plan of d1 = %+v, want upgrade web 1.0.0 -> 1.2.0 with the linux build", dp)
	}
	man, _ := ts.srv.res.manifest(ctx, dp.Steps[0].Build)
	if want := man.size + int64(len("web 1.2.0")); dp.Download != want {
		t.Errorf("plan download = %d, want %d (manifest + file)", dp.Download, want)
	}
	if got := apps(ts.desired(t, "d1")); !cmp.Equal(got, []string{"web=1.0.0"}) {
		t.Errorf("a plan changed d1: %v", got)
	}

	// A tie between equally specific groups is refused at state set,
	// and nothing is stored.
	_, err = ts.admin.SetDocuments(ctx, []api.Document{group("web-b", "env", app("web", "1.0.0"))})
	if code(err) != api.EINVALID || !strings.Contains(err.Error(), "d2: com.example:web: groups prod and web-b (1 selector terms each) disagree") {
		t.Errorf("state set of a tie = %v, want invalid naming the disagreement", err)
	}
	p, err = ts.admin.Plan(ctx, []api.Document{group("tie-a", "env=prod,role", app("web", "1.0.0")), group("tie-b", "role=web,env", app("web", "1.1.0"))})
	if err != nil || p.Errors != 1 || len(p.Devices) != 1 || !strings.Contains(strings.Join(p.Devices[0].Errors, ""), "groups prod-web and tie-a and tie-b (2 selector terms each) disagree") {
		t.Errorf("plan of a tie = %+v, %v, want one device with the tie error", p, err)
	}
	if docs, _ := ts.srv.store.Documents(ctx); len(docs) != 3 {
		t.Errorf("a refused state set stored documents: %d, want 3", len(docs))
	}
	for _, bad := range []api.Document{group("Bad_Name", ""), group("x", "env in prod"), {Apps: []api.DesiredApp{}}} {
		if _, err := ts.admin.SetDocuments(ctx, []api.Document{bad}); code(err) != api.EINVALID {
			t.Errorf("state set of %+v = %v, want invalid", bad, err)
		}
	}

	// A device that joins later gets its groups' state at its first report.
	ts.reportAs(t, "d4", map[string]string{"env": "prod"})
	if got := apps(ts.desired(t, "d4")); !cmp.Equal(got, []string{"web=1.1.0"}) {
		t.Errorf("new device d4 resolves to %v, want the prod group's web 1.1.0", got)
	}

	// pkg rm of a build in use is refused, naming a device and its document.
	if _, err := ts.admin.RemovePackage(ctx, "com.example:web:1.1.0", nil, false); code(err) != api.ECONFLICT || !strings.Contains(err.Error(), "from group/prod") {
		t.Errorf("pkg rm of a build in use = %v, want conflict naming group/prod", err)
	}
	if _, err := ts.admin.RemovePackage(ctx, "com.example:web:1.2.0", nil, false); err != nil {
		t.Errorf("pkg rm of a build nobody uses = %v", err)
	}
	if _, err := ts.admin.RemovePackage(ctx, "com.example:web:1.1.0", nil, true); err != nil {
		t.Errorf("pkg rm --force = %v", err)
	}
	if r := ts.desired(t, "d2"); r.Error == "" {
		t.Errorf("after a forced removal d2 = %+v, want an error", r)
	}

	// state rm and device rm.
	if err := ts.admin.RemoveDocument(ctx, api.DocGroup, "prod"); err != nil {
		t.Fatal(err)
	}
	if got := apps(ts.desired(t, "d2")); !cmp.Equal(got, []string{"tool=1.0.0"}) {
		t.Errorf("after state rm --group prod d2 = %v", got)
	}
	if err := ts.admin.RemoveDevice(ctx, "d2"); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.admin.Device(ctx, "d2"); code(err) != api.ENOTFOUND {
		t.Errorf("device show after device rm = %v, want not found", err)
	}
	if _, err := ts.srv.store.Desired(ctx, "d2"); err == nil {
		t.Errorf("device rm left the device's document")
	}
	if evs, _ := ts.srv.store.Events(ctx, store.EventFilter{Device: "d2"}); len(evs) == 0 {
		t.Errorf("device rm removed the device's events")
	}
}

func TestRootConflictRefused(t *testing.T) {
	ts := newTestServer(t, 30*time.Second)
	ctx := context.Background()
	ts.pushFiles(t, "a", "1.0.0", api.InstallRoot, map[string]string{"etc/app.conf": "a", "etc/a.conf": "a"})
	ts.pushFiles(t, "b", "1.0.0", api.InstallRoot, map[string]string{"etc/app.conf": "b"})
	ts.reportAs(t, "d1", map[string]string{"role": "web"})
	doc := api.Document{ID: "d1", Apps: []api.DesiredApp{app("a", "1.0.0"), app("b", "1.0.0")}}
	p, err := ts.admin.Plan(ctx, []api.Document{doc})
	if err != nil || p.Errors != 1 || len(p.Devices) != 1 || !cmp.Equal(p.Devices[0].Conflicts, []string{"etc/app.conf: com.example:a and com.example:b"}) {
		t.Errorf("plan of two packages owning one file = %+v, %v", p, err)
	}
	if _, err := ts.admin.SetDocuments(ctx, []api.Document{doc}); code(err) != api.EINVALID || !strings.Contains(err.Error(), "etc/app.conf") {
		t.Errorf("state set of a root-mode conflict = %v, want invalid naming etc/app.conf", err)
	}
}

// state rm of a group whose removal leaves a device between two
// disagreeing groups is refused, and nothing is removed.
func TestRemoveExposingTieRefused(t *testing.T) {
	ts := newTestServer(t, 30*time.Second)
	ctx := context.Background()
	ts.push(t, "web", "1.0.0", []string{"linux"}, "web 1.0.0")
	ts.push(t, "web", "1.1.0", []string{"linux"}, "web 1.1.0")
	ts.reportAs(t, "d1", map[string]string{"env": "prod", "role": "web"})
	if _, err := ts.admin.SetDocuments(ctx, []api.Document{
		group("web", "role=web", app("web", "1.0.0")),
		group("prod", "env=prod", app("web", "1.0.0")),
		group("prod-web", "env=prod,role=web,!old", app("web", "1.1.0")),
	}); err != nil {
		t.Fatal(err)
	}
	// prod now disagrees with web, but prod-web is more specific.
	if _, err := ts.admin.SetDocuments(ctx, []api.Document{group("prod", "env=prod", app("web", "1.1.0"))}); err != nil {
		t.Fatal(err)
	}
	err := ts.admin.RemoveDocument(ctx, api.DocGroup, "prod-web")
	if code(err) != api.EINVALID || !strings.Contains(err.Error(), "d1: com.example:web: groups prod and web") {
		t.Errorf("state rm exposing a tie = %v, want invalid naming d1 and the groups", err)
	}
	if _, err := ts.admin.Document(ctx, api.DocGroup, "prod-web"); err != nil {
		t.Errorf("a refused state rm removed the document: %v", err)
	}
	if got := apps(ts.desired(t, "d1")); !cmp.Equal(got, []string{"web=1.1.0"}) {
		t.Errorf("d1 after a refused state rm = %v", got)
	}
	if err := ts.admin.RemoveDocument(ctx, api.DocGroup, "nope"); code(err) != api.ENOTFOUND {
		t.Errorf("state rm of an unknown group = %v, want not found", err)
	}
	// A label change can still bring the tie: it is the device's error,
	// shown by device ls and device show, and the agent is told to change
	// nothing (no apps, an error).
	ts.reportAs(t, "d1", map[string]string{"env": "prod", "role": "web", "old": "yes"})
	r := ts.desired(t, "d1")
	if !strings.Contains(r.Error, "groups prod and web (1 selector terms each) disagree") || len(r.Apps) != 0 {
		t.Errorf("d1 with a tie resolves to %+v, want the tie error and no apps", r)
	}
	devs, err := ts.admin.Devices(ctx)
	if err != nil || len(devs) != 1 || !strings.Contains(devs[0].Error, "disagree") || devs[0].Converged {
		t.Errorf("device ls with a tie = %+v, %v", devs, err)
	}
}

// A state set resolves each device it concerns once and keeps that
// resolution: the device's long-poll is answered with it, not with a
// second resolution.
func TestStateSetResolvesOnce(t *testing.T) {
	ts := newTestServer(t, 30*time.Second)
	ctx := context.Background()
	ts.push(t, "web", "1.0.0", []string{"linux"}, "web 1.0.0")
	ts.reportAs(t, "d1", map[string]string{"env": "prod"})
	res, err := ts.admin.SetState(ctx, api.DesiredState{ID: "d1", Apps: []api.DesiredApp{app("web", "^1")}})
	if err != nil {
		t.Fatal(err)
	}
	ts.srv.res.mu.Lock()
	kept := ts.srv.res.cache["d1"]
	ts.srv.res.mu.Unlock()
	if kept == nil || kept.res.r.Digest != res.Digest {
		t.Fatalf("after state set the cache holds %+v, want the resolution the set answered (%s)", kept, res.Digest)
	}
	if got := ts.desired(t, "d1"); got.Digest != res.Digest {
		t.Errorf("long-poll answered %s, want %s", got.Digest, res.Digest)
	}
	ts.srv.res.mu.Lock()
	after := ts.srv.res.cache["d1"]
	ts.srv.res.mu.Unlock()
	if after != kept {
		t.Errorf("the long-poll resolved again instead of using the state set's resolution")
	}
}
