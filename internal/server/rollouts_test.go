package server

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/hook"
	"github.com/drover-dev/drover/internal/store"
)

// fleetSim is a server whose devices are written straight to its store,
// as their reports would, and whose rollout driver the test steps with
// a fake clock.
type fleetSim struct {
	t   *testing.T
	ts  *testServer
	mu  sync.Mutex
	now time.Time
	ids []string
}

func newFleetSim(t *testing.T, n int) *fleetSim {
	ts := newTestServer(t, time.Second)
	ts.push(t, "web", "1.0.0", nil, "one")
	ts.push(t, "web", "1.1.0", nil, "two")
	f := &fleetSim{t: t, ts: ts, now: time.Now().Add(time.Minute)}
	f.setClock(ts.srv)
	for i := range n {
		id := string(rune('a'+i)) + "-dev"
		f.ids = append(f.ids, id)
		f.write(api.Device{ID: id, Tags: []string{"linux"}, Labels: map[string]string{"env": "prod"}, Installed: []api.InstalledApp{}})
	}
	f.set(api.Document{Group: "prod", Selector: "env=prod", Apps: []api.DesiredApp{{Name: "com.example:web", Version: "1.0.0"}}})
	for _, id := range f.ids {
		f.converge(id, api.HealthHealthy)
	}
	return f
}

func (f *fleetSim) setClock(s *Server) {
	s.now = func() time.Time { f.mu.Lock(); defer f.mu.Unlock(); return f.now }
	s.cfg.Now = s.now
}

func (f *fleetSim) advance(d time.Duration) {
	f.mu.Lock()
	f.now = f.now.Add(d)
	f.mu.Unlock()
	f.drive()
}

func (f *fleetSim) drive() { f.ts.srv.driveRollouts(context.Background()) }

func (f *fleetSim) write(d api.Device) {
	f.t.Helper()
	if d.LastSeen.IsZero() {
		d.LastSeen = f.ts.srv.now()
	}
	if _, err := f.ts.srv.store.Commit(context.Background(), store.Write{Device: &d}); err != nil {
		f.t.Fatal(err)
	}
	f.ts.srv.res.invalidate(d.ID)
}

func (f *fleetSim) set(docs ...api.Document) error {
	return f.ts.srv.setDocuments(context.Background(), docs, "ops")
}

// resolved is what the server gives the device now.
func (f *fleetSim) resolved(id string) *api.Resolved {
	f.t.Helper()
	res, err := f.ts.srv.res.get(context.Background(), id)
	if err != nil {
		f.t.Fatal(err)
	}
	return res.r
}

func (f *fleetSim) version(id string) string {
	r := f.resolved(id)
	if len(r.Apps) == 0 {
		return "none"
	}
	return r.Apps[0].Version
}

// converge makes the device report that it applied what it is given,
// with this health.
func (f *fleetSim) converge(id, health string) {
	f.t.Helper()
	r := f.resolved(id)
	d, err := f.ts.srv.store.Device(context.Background(), id)
	if err != nil {
		f.t.Fatal(err)
	}
	d.Installed = nil
	for _, a := range r.Apps {
		d.Installed = append(d.Installed, api.InstalledApp{Name: a.Name, Version: a.Version, Digest: a.Digest, Tags: a.Tags, Install: api.InstallPrefix})
	}
	d.Applied, d.Error, d.Health = r.Digest, "", health
	f.write(d)
}

func (f *fleetSim) fail(id, msg string) {
	f.t.Helper()
	d, _ := f.ts.srv.store.Device(context.Background(), id)
	d.Error, d.ErrorDigest = msg, f.resolved(id).Digest
	f.write(d)
}

func (f *fleetSim) start(spec api.RolloutSpec) api.Rollout {
	f.t.Helper()
	if spec.Documents == nil {
		spec.Documents = []api.Document{{Group: "prod", Selector: "env=prod", Apps: []api.DesiredApp{{Name: "com.example:web", Version: "1.1.0"}}}}
	}
	if spec.Waves == nil {
		spec.Waves = []string{"1", "100%"}
	}
	spec.Soak, spec.WaveTimeout = api.Duration(time.Minute), api.Duration(10*time.Minute)
	r, err := f.ts.admin.StartRollout(context.Background(), spec)
	if err != nil {
		f.t.Fatalf("start rollout: %v", err)
	}
	return r
}

func (f *fleetSim) rollout(name string) api.Rollout {
	f.t.Helper()
	r, err := f.ts.admin.Rollout(context.Background(), name)
	if err != nil {
		f.t.Fatal(err)
	}
	return r
}

func (f *fleetSim) kinds() []string {
	evs, err := f.ts.srv.store.Events(context.Background(), store.EventFilter{})
	if err != nil {
		f.t.Fatal(err)
	}
	var out []string
	for _, e := range evs {
		if strings.HasPrefix(e.Kind, "rollout-") {
			out = append(out, e.Kind+"/"+e.Priority)
		}
	}
	return out
}

func TestRolloutDriverGoodToDone(t *testing.T) {
	f := newFleetSim(t, 4)
	r := f.start(api.RolloutSpec{Name: "web-1-1"})
	if r.Phase != api.RolloutRunning || len(r.Devices) != 4 || r.Devices[0].Steps[0].Kind != api.StepUpgrade {
		t.Fatalf("started: %+v", r)
	}
	// Stored, not yet driven: nobody has the new version.
	if got := f.version("a-dev"); got != "1.0.0" {
		t.Fatalf("a-dev before the first wave: %s", got)
	}
	f.drive()
	if got := []string{f.version("a-dev"), f.version("b-dev")}; !slices.Equal(got, []string{"1.1.0", "1.0.0"}) {
		t.Fatalf("after wave 1 began: %v, want only a-dev at 1.1.0", got)
	}
	// Its documents are held while it runs.
	err := f.set(api.Document{Group: "prod", Selector: "env=prod", Apps: []api.DesiredApp{{Name: "com.example:web", Version: "1.0.0"}}})
	if code(err) != api.ECONFLICT || !strings.Contains(err.Error(), "web-1-1") {
		t.Fatalf("state set of a held document: %v, want a conflict naming the rollout", err)
	}
	f.converge("a-dev", api.HealthHealthy)
	f.drive()
	if st := f.rollout("web-1-1").Stages[0]; st.Soaking.IsZero() {
		t.Fatalf("wave 1 not soaking: %+v", st)
	}
	f.advance(time.Minute)
	for _, id := range f.ids {
		if f.version(id) != "1.1.0" {
			t.Fatalf("%s at %s after wave 2 began", id, f.version(id))
		}
		f.converge(id, "")
	}
	f.drive()
	f.advance(time.Minute)
	r = f.rollout("web-1-1")
	if r.Phase != api.RolloutDone {
		t.Fatalf("phase %s (%s), want done", r.Phase, r.Reason)
	}
	doc, err := f.ts.srv.store.Document(context.Background(), "group/prod")
	if err != nil || doc.Apps[0].Version != "1.1.0" {
		t.Fatalf("stored document after done: %+v, %v", doc, err)
	}
	for _, id := range f.ids {
		if f.version(id) != "1.1.0" {
			t.Errorf("%s at %s after done", id, f.version(id))
		}
	}
	// The documents are free again.
	if err := f.set(doc); err != nil {
		t.Errorf("state set after done: %v", err)
	}
	want := []string{"rollout-started/medium", "rollout-wave/medium", "rollout-wave/medium", "rollout-wave/medium", "rollout-wave/medium", "rollout-done/medium"}
	if got := f.kinds(); !slices.Equal(got, want) {
		t.Errorf("events %v, want %v", got, want)
	}
}

func TestRolloutDriverFailurePausesThenAbortReverts(t *testing.T) {
	f := newFleetSim(t, 3)
	f.start(api.RolloutSpec{Name: "bad"})
	f.drive()
	f.converge("a-dev", api.HealthHealthy)
	f.drive()
	// A health check fails during the soak (the device's health
	// "unknown" is a failing check).
	f.converge("a-dev", api.HealthUnknown)
	f.drive()
	r := f.rollout("bad")
	if r.Phase != api.RolloutPaused || r.Devices[0].Outcome != api.OutcomeFailed || !strings.Contains(r.Reason, "a-dev") {
		t.Fatalf("after a-dev went unhealthy: %s %q %+v", r.Phase, r.Reason, r.Devices[0])
	}
	f.advance(time.Hour)
	if f.version("b-dev") != "1.0.0" || f.version("c-dev") != "1.0.0" {
		t.Fatal("a paused rollout reached devices of the next wave")
	}
	if _, err := f.ts.admin.AbortRollout(context.Background(), "bad", true); err != nil {
		t.Fatal(err)
	}
	if f.version("a-dev") != "1.0.0" {
		t.Errorf("a-dev at %s after abort --revert, want 1.0.0", f.version("a-dev"))
	}
	if r := f.rollout("bad"); r.Phase != api.RolloutAborted || r.Devices[0].Outcome != api.OutcomeReverted || r.Devices[2].Outcome != api.OutcomeUntouched {
		t.Errorf("after abort: %+v", r)
	}
	want := []string{"rollout-started/medium", "rollout-wave/medium", "rollout-paused/high", "rollout-aborted/medium"}
	if got := f.kinds(); !slices.Equal(got, want) {
		t.Errorf("events %v, want %v", got, want)
	}
}

func TestRolloutDriverRevertPolicyAndStepFailure(t *testing.T) {
	f := newFleetSim(t, 3)
	f.start(api.RolloutSpec{Name: "rev", OnFailure: api.OnFailureRevert})
	f.drive()
	f.fail("a-dev", "postinst: exit 1")
	f.drive()
	r := f.rollout("rev")
	if r.Phase != api.RolloutFailed || !strings.Contains(r.Devices[0].Reason, "postinst: exit 1") {
		t.Fatalf("after a failed step: %s %+v", r.Phase, r.Devices[0])
	}
	if f.version("a-dev") != "1.0.0" {
		t.Errorf("a-dev not reverted: %s", f.version("a-dev"))
	}
	if got := f.kinds(); got[len(got)-1] != "rollout-failed/high" {
		t.Errorf("events %v", got)
	}
}

func TestRolloutSurvivesRestart(t *testing.T) {
	f := newFleetSim(t, 3)
	f.start(api.RolloutSpec{Name: "long"})
	f.drive()
	f.converge("a-dev", api.HealthHealthy)
	f.drive()
	// A new server over the same store takes the rollout up where it was.
	old := f.ts.srv
	s2, err := New(context.Background(), old.cfg, old.store, old.blobs)
	if err != nil {
		t.Fatal(err)
	}
	f.setClock(s2)
	f.ts.srv = s2
	if f.version("a-dev") != "1.1.0" || f.version("b-dev") != "1.0.0" {
		t.Fatalf("after restart: a-dev %s b-dev %s", f.version("a-dev"), f.version("b-dev"))
	}
	if _, held := s2.rolloutHolds([]string{"group/prod"}); !held {
		t.Error("the restarted server does not hold the rollout's document")
	}
	f.advance(time.Minute)
	if r, _ := s2.store.Rollout(context.Background(), "long"); r.Wave != 1 || f.version("c-dev") != "1.1.0" {
		t.Fatalf("after restart and the soak: wave %d, c-dev %s", r.Wave, f.version("c-dev"))
	}
}

func TestRolloutGateRefuses(t *testing.T) {
	f := newFleetSim(t, 2)
	dir := t.TempDir()
	gate := filepath.Join(dir, "rollout-gate.d")
	if err := os.MkdirAll(gate, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(gate, "budget"), []byte("#!/bin/sh\ngrep -q '\"name\":\"gated\"' || exit 9\necho error budget spent\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	f.ts.srv.ro.gate = hook.New(hook.Config{Dir: dir})
	f.start(api.RolloutSpec{Name: "gated"})
	f.drive()
	r := f.rollout("gated")
	if r.Phase != api.RolloutPaused || !strings.Contains(r.Reason, "gate hook budget") || !strings.Contains(r.Reason, "error budget spent") {
		t.Fatalf("gated: %s %q", r.Phase, r.Reason)
	}
	if f.version("a-dev") != "1.0.0" {
		t.Error("a device got the new state although the gate refused the first wave")
	}
	if got := f.kinds(); got[len(got)-1] != "rollout-paused/medium" {
		t.Errorf("events %v", got)
	}
}

func TestRolloutStartRefusals(t *testing.T) {
	f := newFleetSim(t, 2)
	ctx := context.Background()
	doc := func(v string) []api.Document {
		return []api.Document{{Group: "prod", Selector: "env=prod", Apps: []api.DesiredApp{{Name: "com.example:web", Version: v}}}}
	}
	for _, tc := range []struct {
		name string
		spec api.RolloutSpec
		code string
		msg  string
	}{
		{"no change", api.RolloutSpec{Name: "same", Documents: doc("1.0.0")}, api.EINVALID, "changes no device"},
		{"unknown version", api.RolloutSpec{Name: "nope", Documents: doc("9.0.0")}, api.EINVALID, "9.0.0"},
		{"bad waves", api.RolloutSpec{Name: "w", Documents: doc("1.1.0"), Waves: []string{"50%", "10%"}}, api.EINVALID, "must grow"},
		{"bad name", api.RolloutSpec{Name: "Bad Name", Documents: doc("1.1.0")}, api.EINVALID, "rollout name"},
	} {
		_, err := f.ts.admin.StartRollout(ctx, tc.spec)
		if code(err) != tc.code || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: %v, want %s with %q", tc.name, err, tc.code, tc.msg)
		}
	}
	f.start(api.RolloutSpec{Name: "first"})
	_, err := f.ts.admin.StartRollout(ctx, api.RolloutSpec{Name: "second", Documents: doc("1.1.0")})
	if code(err) != api.ECONFLICT || !strings.Contains(err.Error(), "first") {
		t.Errorf("second rollout of held documents: %v", err)
	}
	dr, err := f.ts.admin.PlanRollout(ctx, api.RolloutSpec{Name: "dry", Documents: []api.Document{{ID: "a-dev", Apps: []api.DesiredApp{{Name: "com.example:web", Version: "1.1.0"}}}}})
	if err != nil || dr.Plan.Changed != 1 || len(dr.Rollout.Stages) != 4 {
		t.Errorf("dry run: %+v, %v", dr, err)
	}
	if _, err := f.ts.srv.store.Rollout(ctx, "dry"); err == nil {
		t.Error("a dry run stored its rollout")
	}
	// Devices may not use the rollout calls, nor forge its events.
	if _, err := f.ts.dev["d1"].Rollouts(ctx); code(err) != api.EFORBIDDEN {
		t.Errorf("device lists rollouts: %v", err)
	}
	err = f.ts.dev["d1"].PostEvents(ctx, "d1", []api.Event{{Kind: api.KindRolloutDone, Message: "fake"}})
	if code(err) != api.EINVALID {
		t.Errorf("device posts rollout-done: %v, want refused", err)
	}
}

// A build pushed while a rollout runs reaches no device through it: the
// documents are stored, when it ends done, as they were pinned at its
// start.
func TestRolloutDonePinsAsAtItsStart(t *testing.T) {
	f := newFleetSim(t, 2)
	r := f.start(api.RolloutSpec{Name: "pinned", Documents: []api.Document{{Group: "prod", Selector: "env=prod",
		Apps: []api.DesiredApp{{Name: "com.example:web", Version: "^1.1"}}}}})
	if len(r.Documents[0].Pinned) != 1 || r.Documents[0].Pinned[0].Version != "1.1.0" {
		t.Fatalf("pinned at the start: %+v", r.Documents[0].Pinned)
	}
	f.drive()
	f.advance(time.Second)
	f.ts.push(t, "web", "1.2.0", nil, "three")
	for range 2 {
		for _, id := range f.ids {
			if f.version(id) == "1.2.0" {
				t.Fatalf("%s got a build pushed during the rollout", id)
			}
			f.converge(id, "")
		}
		f.drive()
		f.advance(time.Minute)
	}
	if r := f.rollout("pinned"); r.Phase != api.RolloutDone {
		t.Fatalf("phase %s: %s", r.Phase, r.Reason)
	}
	doc, err := f.ts.srv.store.Document(context.Background(), "group/prod")
	if err != nil || len(doc.Pinned) != 1 || doc.Pinned[0].Version != "1.1.0" || doc.SetBy != "rollout/pinned" {
		t.Fatalf("stored document: %+v, %v", doc, err)
	}
	for _, id := range f.ids {
		if v := f.version(id); v != "1.1.0" {
			t.Errorf("%s at %s after done, want 1.1.0", id, v)
		}
	}
}

// abort without --revert leaves the devices of begun waves where they
// are, until their document is set again.
func TestRolloutAbortKeepsUntilSetAgain(t *testing.T) {
	f := newFleetSim(t, 3)
	f.start(api.RolloutSpec{Name: "stop"})
	f.drive()
	if _, err := f.ts.admin.AbortRollout(context.Background(), "stop", false); err != nil {
		t.Fatal(err)
	}
	if got := []string{f.version("a-dev"), f.version("b-dev")}; !slices.Equal(got, []string{"1.1.0", "1.0.0"}) {
		t.Fatalf("after abort: %v, want a-dev kept at 1.1.0, b-dev untouched", got)
	}
	if _, held := f.ts.srv.rolloutHolds([]string{"group/prod"}); held {
		t.Error("an aborted rollout still holds its documents")
	}
	// A server restart keeps that too.
	old := f.ts.srv
	s2, err := New(context.Background(), old.cfg, old.store, old.blobs)
	if err != nil {
		t.Fatal(err)
	}
	f.setClock(s2)
	f.ts.srv = s2
	if v := f.version("a-dev"); v != "1.1.0" {
		t.Fatalf("a-dev at %s after a restart", v)
	}
	f.advance(time.Second)
	if err := f.set(api.Document{Group: "prod", Selector: "env=prod", Apps: []api.DesiredApp{{Name: "com.example:web", Version: "1.0.0"}}}); err != nil {
		t.Fatal(err)
	}
	if v := f.version("a-dev"); v != "1.0.0" {
		t.Errorf("a-dev at %s after its document was set again, want 1.0.0", v)
	}
}

// A device that applied its wave's state and then could not reach the
// server (the server restarted during the soak) has not failed its step;
// an error the agent ties to that state has.
func TestRolloutSoakSurvivesUnreachableServer(t *testing.T) {
	f := newFleetSim(t, 2)
	f.start(api.RolloutSpec{Name: "web-1-1"})
	f.drive()
	f.converge("a-dev", api.HealthHealthy)
	f.drive()
	d, _ := f.ts.srv.store.Device(context.Background(), "a-dev")
	d.Error, d.ErrorDigest = "get desired state: server unreachable: 127.0.0.1:8443: connection refused", ""
	f.write(d)
	f.drive()
	if r := f.rollout("web-1-1"); r.Phase != api.RolloutRunning || r.Devices[0].Outcome == api.OutcomeFailed {
		t.Fatalf("after a transport error of a converged device: phase %s, %+v", r.Phase, r.Devices[0])
	}
	f.fail("a-dev", "step failed: post-install exited 1")
	f.drive()
	if r := f.rollout("web-1-1"); r.Phase != api.RolloutPaused || r.Devices[0].Outcome != api.OutcomeFailed {
		t.Fatalf("after the step's own error: phase %s, %+v", r.Phase, r.Devices[0])
	}
}
