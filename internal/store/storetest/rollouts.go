package storetest

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/store"
)

// rolloutTests are the cases of the Rollouts contract, run by Run.
var rolloutTests = []struct {
	name string
	fn   func(t *testing.T, open func(t *testing.T) store.Store)
}{
	{"Rollouts", testRollouts},
	{"RolloutEventsTogether", testRolloutEventsTogether},
}

func rollout(name string, created time.Time) api.Rollout {
	return api.Rollout{
		RolloutSpec: api.RolloutSpec{
			Name: name,
			Documents: []api.Document{{Kind: api.DocGroup, Group: "web", Selector: "env=prod",
				Apps:   []api.DesiredApp{{Name: "com.example:web", Version: "^1.2", Tags: []string{}}},
				Pinned: []api.Pin{{Name: "com.example:web", Constraint: "^1.2", Version: "1.2.3"}}}},
			Waves: []string{"1", "100%"}, Soak: api.Duration(5 * time.Minute), WaveTimeout: api.Duration(15 * time.Minute),
			MaxFailures: "10%", OnFailure: api.OnFailurePause,
		},
		Phase: api.RolloutRunning,
		Stages: []api.RolloutWave{
			{Size: 1, Devices: []string{"d1"}, Started: created.Add(time.Second)},
			{Size: 2, Devices: []string{"d2", "d3"}},
		},
		Devices: []api.RolloutDevice{
			{ID: "d1", Wave: 0, Outcome: api.OutcomeUpdating},
			{ID: "d2", Wave: 1, Outcome: api.OutcomePending},
			{ID: "d3", Wave: 1, Outcome: api.OutcomePending},
		},
		Created: created, Updated: created, CreatedBy: "admin",
	}
}

func testRollouts(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	_, err := s.Rollout(ctx, "r1")
	checkErr(t, "Rollout of nothing", err, store.ErrNotFound)
	if got, err := s.Rollouts(ctx); err != nil || got == nil || len(got) != 0 {
		t.Fatalf("Rollouts of nothing = %v, %v, want an empty list", got, err)
	}
	r1 := rollout("r1", t0.Add(time.Hour))
	r2 := rollout("r2", t0) // older: listed first
	for _, r := range []api.Rollout{r1, r2} {
		if _, err := s.SaveRollout(ctx, r, true, nil); err != nil {
			t.Fatal(err)
		}
	}
	again := r1
	again.Phase = api.RolloutDone
	_, err = s.SaveRollout(ctx, again, true, nil)
	checkErr(t, "SaveRollout(create, existing name)", err, store.ErrConflict)
	if got, _ := s.Rollout(ctx, "r1"); got.Phase != api.RolloutRunning {
		t.Errorf("a refused create changed the rollout: phase %s", got.Phase)
	}
	_, err = s.SaveRollout(ctx, rollout("r9", t0), false, nil)
	checkErr(t, "SaveRollout(update, unknown)", err, store.ErrNotFound)
	if _, err := s.SaveRollout(ctx, api.Rollout{}, true, nil); err == nil {
		t.Error("SaveRollout with an empty name succeeded")
	}

	got, err := s.Rollout(ctx, "r1")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(r1, got, timeEqual); diff != "" {
		t.Errorf("Rollout round trip (-put +got):\n%s", diff)
	}
	// An update replaces the whole record.
	r1.Phase, r1.Wave, r1.Reason = api.RolloutPaused, 1, "gate hook check: no"
	r1.Devices[0].Outcome = api.OutcomePassed
	if _, err := s.SaveRollout(ctx, r1, false, nil); err != nil {
		t.Fatal(err)
	}
	got, _ = s.Rollout(ctx, "r1")
	if diff := cmp.Diff(r1, got, timeEqual); diff != "" {
		t.Errorf("Rollout after update (-put +got):\n%s", diff)
	}
	for _, tt := range []struct {
		phases []string
		want   []string
	}{
		{nil, []string{"r2", "r1"}},
		{[]string{api.RolloutRunning}, []string{"r2"}},
		{[]string{api.RolloutRunning, api.RolloutPaused}, []string{"r2", "r1"}},
		{[]string{api.RolloutDone}, nil},
	} {
		list, err := s.Rollouts(ctx, tt.phases...)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, r := range list {
			names = append(names, r.Name)
		}
		if !cmp.Equal(names, tt.want) {
			t.Errorf("Rollouts(%v) = %v, want %v", tt.phases, names, tt.want)
		}
	}
}

func testRolloutEventsTogether(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	ev := api.Event{Time: t0, Kind: "rollout-started", Level: api.LevelInfo, Priority: api.PriorityMedium, Message: "r1 started"}
	out, err := s.SaveRollout(ctx, rollout("r1", t0), true, []api.Event{ev})
	if err != nil || len(out) != 1 || out[0].ID == 0 {
		t.Fatalf("SaveRollout with an event = %v, %v", out, err)
	}
	// A refused save stores none of its events.
	if _, err := s.SaveRollout(ctx, rollout("r1", t0), true, []api.Event{ev}); err == nil {
		t.Fatal("second create succeeded")
	}
	// An invalid event refuses the whole save.
	r := rollout("r1", t0)
	r.Phase = api.RolloutDone
	if _, err := s.SaveRollout(ctx, r, false, []api.Event{{Time: t0, Kind: "bad kind/x", Message: "x"}}); err == nil {
		t.Fatal("save with an invalid event succeeded")
	}
	if got, _ := s.Rollout(ctx, "r1"); got.Phase != api.RolloutRunning {
		t.Errorf("phase %s after a refused save", got.Phase)
	}
	evs, err := s.Events(ctx, store.EventFilter{})
	if err != nil || len(evs) != 1 {
		t.Fatalf("events = %v, %v; want exactly the first save's", evs, err)
	}
}
