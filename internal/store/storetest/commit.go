package storetest

import (
	"testing"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/store"
)

var commitTests = []struct {
	name string
	fn   func(t *testing.T, open func(t *testing.T) store.Store)
}{
	{"CommitTogether", testCommitTogether},
	{"CommitAllOrNothing", testCommitAllOrNothing},
}

// testCommitTogether: a device, its desired state and their events are
// stored by one Commit and read back.
func testCommitTogether(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	d := api.Device{ID: "c1", Tags: []string{"linux"}, LastSeen: t0, Installed: []api.InstalledApp{}}
	st := api.DesiredState{ID: "c1", Apps: []api.DesiredApp{{Name: "com.example:a", Version: "1.0.0", Tags: []string{}}}}
	evs, err := s.Commit(ctx, store.Write{Device: &d, Desired: []api.DesiredState{st}, Events: []api.Event{
		{Time: t0, Device: "c1", Kind: "state", Message: "one"},
		{Time: t0, Device: "c1", Kind: "converged", Message: "two"},
	}})
	if err != nil {
		t.Fatalf("Commit: %v", err)
	}
	if len(evs) != 2 || evs[0].ID == 0 || evs[1].ID <= evs[0].ID {
		t.Fatalf("Commit returned events %+v, want two with increasing IDs", evs)
	}
	if got, err := s.Device(ctx, "c1"); err != nil || got.Tags[0] != "linux" {
		t.Errorf("Device after Commit = %+v, %v", got, err)
	}
	if got, err := s.Desired(ctx, "c1"); err != nil || len(got.Apps) != 1 {
		t.Errorf("Desired after Commit = %+v, %v", got, err)
	}
	stored, err := s.Events(ctx, store.EventFilter{Device: "c1"})
	if err != nil || len(stored) != 2 || stored[1].Message != "two" {
		t.Errorf("Events after Commit = %+v, %v", stored, err)
	}
	if evs, err := s.Commit(ctx, store.Write{}); err != nil || len(evs) != 0 {
		t.Errorf("empty Commit = %v, %v, want nothing", evs, err)
	}
}

// testCommitAllOrNothing: a Commit with one bad event stores neither the
// device nor any event.
func testCommitAllOrNothing(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	d := api.Device{ID: "c2", LastSeen: t0}
	_, err := s.Commit(ctx, store.Write{Device: &d, Events: []api.Event{
		{Time: t0, Device: "c2", Kind: "state", Message: "fine"},
		{Time: t0, Device: "c2", Kind: "state", Level: "shouting", Message: "bad level"},
	}})
	if err == nil {
		t.Fatal("Commit with an invalid event succeeded")
	}
	if _, err := s.Device(ctx, "c2"); err == nil {
		t.Error("the device of a failed Commit was stored")
	}
	if evs, _ := s.Events(ctx, store.EventFilter{Device: "c2"}); len(evs) != 0 {
		t.Errorf("a failed Commit stored events %+v", evs)
	}
}
