package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/store"
)

var documentTests = []struct {
	name string
	fn   func(t *testing.T, open func(t *testing.T) store.Store)
}{
	{"Documents", testDocuments},
	{"RemoveDevices", testRemoveDevices},
}

func testDocuments(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	if docs, err := s.Documents(ctx); err != nil || len(docs) != 0 || docs == nil {
		t.Errorf("Documents(empty) = %v, %v, want an empty non-nil list", docs, err)
	}
	set := t0.UTC().Truncate(time.Microsecond)
	web := api.Document{Kind: api.DocGroup, Group: "web", Selector: "env=prod,role in (web,edge)",
		Apps:   []api.DesiredApp{{Name: "org.a:web", Version: "^1.2", Tags: []string{}, Params: map[string]any{"port": float64(8081)}}},
		Init:   []api.InitEntry{{Name: "org.a:join", Version: "^1", Run: "bin/join"}},
		Pinned: []api.Pin{{Name: "org.a:web", Constraint: "^1.2", Version: "1.2.3"}, {Name: "org.a:join", Constraint: "^1", Version: "1.0.0", Init: true}},
		Set:    set, SetBy: "admin"}
	all := api.Document{Kind: api.DocGroup, Group: "all", Selector: "", Apps: []api.DesiredApp{}}
	dev := api.Document{Kind: api.DocDevice, ID: "zz-dev", Apps: []api.DesiredApp{{Name: "org.a:core", Tags: []string{}}}, Set: set}
	if _, err := s.Commit(ctx, store.Write{Documents: []api.Document{web, all, dev}}); err != nil {
		t.Fatalf("Commit(documents) = %v", err)
	}
	docs, err := s.Documents(ctx)
	if diff := cmp.Diff([]api.Document{dev, all, web}, docs); err != nil || diff != "" {
		t.Errorf("Documents = %v, mismatch (-want +got), devices first, then groups by name:\n%s", err, diff)
	}
	got, err := s.Document(ctx, "group/web")
	if diff := cmp.Diff(web, got); err != nil || diff != "" {
		t.Errorf("Document(group/web) = %v, mismatch (-want +got):\n%s", err, diff)
	}
	// A device document is the device's desired state.
	st, err := s.Desired(ctx, "zz-dev")
	if diff := cmp.Diff(api.DesiredState{ID: "zz-dev", Apps: dev.Apps}, st); err != nil || diff != "" {
		t.Errorf("Desired(zz-dev) = %v, mismatch (-want +got):\n%s", err, diff)
	}
	// A group named like a device is another document.
	if _, err := s.Document(ctx, "group/zz-dev"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Document(group/zz-dev) = %v, want ErrNotFound", err)
	}
	// Replace and remove in one write; removing an unknown key is fine.
	web2 := web
	web2.Selector = "env=prod"
	if _, err := s.Commit(ctx, store.Write{Documents: []api.Document{web2}, RemoveDocuments: []string{"group/all", "group/nope"},
		Events: []api.Event{{Kind: api.KindState, Time: t0}}}); err != nil {
		t.Fatalf("Commit(replace, remove) = %v", err)
	}
	docs, _ = s.Documents(ctx)
	if diff := cmp.Diff([]api.Document{dev, web2}, docs); diff != "" {
		t.Errorf("Documents after replace and remove mismatch (-want +got):\n%s", diff)
	}
	for _, bad := range []api.Document{{Kind: api.DocGroup}, {Kind: api.DocDevice}, {Kind: "x", ID: "a"}, {Kind: api.DocGroup, Group: "g", ID: "d"}} {
		checkErr(t, "Commit(bad document)", commitCtx(ctx, s, store.Write{Documents: []api.Document{bad}}), errInvalid)
	}
	if docs, _ := s.Documents(ctx); len(docs) != 2 {
		t.Errorf("a refused write changed the documents: %d documents", len(docs))
	}
}

func testRemoveDevices(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	for _, id := range []string{"dev-1", "dev-2"} {
		if err := putDevice(s, device(id, t0)); err != nil {
			t.Fatal(err)
		}
	}
	if err := setDesired(s, api.DesiredState{ID: "dev-1", Apps: []api.DesiredApp{}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AppendEvents(ctx, []api.Event{{Device: "dev-1", Kind: api.KindLog, Time: t0}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Commit(ctx, store.Write{RemoveDevices: []string{"dev-1", "unknown"}, RemoveDocuments: []string{"device/dev-1"}}); err != nil {
		t.Fatalf("Commit(remove device) = %v", err)
	}
	if _, err := s.Device(ctx, "dev-1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Device(removed) = %v, want ErrNotFound", err)
	}
	if _, err := s.Desired(ctx, "dev-1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Desired(removed) = %v, want ErrNotFound", err)
	}
	if _, err := s.Device(ctx, "dev-2"); err != nil {
		t.Errorf("Device(other) = %v, want it kept", err)
	}
	if evs, err := s.Events(ctx, store.EventFilter{Device: "dev-1"}); err != nil || len(evs) != 1 {
		t.Errorf("events of a removed device = %d, %v, want them kept", len(evs), err)
	}
}
