package storetest

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/store"
)

var exportTests = []struct {
	name string
	fn   func(t *testing.T, open func(t *testing.T) store.Store)
}{
	{"ExportTrustFiles", testExportTrustFiles},
	{"ExportLastEventID", testExportLastEventID},
}

// exporter is s as a store.Exporter: every store can be copied whole
// (drover server migrate reads its source through it).
func exporter(t *testing.T, s store.Store) store.Exporter {
	t.Helper()
	x, ok := s.(store.Exporter)
	if !ok {
		t.Fatalf("%T does not implement store.Exporter", s)
	}
	return x
}

func testExportTrustFiles(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	x := exporter(t, s)
	if got, err := x.TrustFiles(ctx); err != nil || len(got) != 0 {
		t.Errorf("TrustFiles(empty) = %v, %v, want none", got, err)
	}
	f := func(role string, v int64) store.TrustFile {
		return store.TrustFile{Role: role, Version: v, Data: []byte(role + string(rune('0'+v)))}
	}
	for _, files := range [][]store.TrustFile{{f("root", 1), f("timestamp", 1)}, {f("root", 2), f("timestamp", 2), f("bins-3a", 1)}} {
		if err := s.PutTrustFiles(ctx, files); err != nil {
			t.Fatal(err)
		}
	}
	got, err := x.TrustFiles(ctx)
	want := []store.TrustFile{f("bins-3a", 1), f("root", 1), f("root", 2), f("timestamp", 2)}
	if diff := cmp.Diff(want, got); err != nil || diff != "" {
		t.Errorf("TrustFiles = %v, mismatch (-want +got), every root and the newest of the others:\n%s", err, diff)
	}
}

func testExportLastEventID(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	x := exporter(t, s)
	if last, err := x.LastEventID(ctx); err != nil || last != 0 {
		t.Errorf("LastEventID(empty) = %d, %v, want 0", last, err)
	}
	evs, err := s.AppendEvents(ctx, []api.Event{{Time: t0, Kind: api.KindLog}, {Time: t0, Kind: api.KindLog}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PruneEvents(ctx, t0.Add(time.Hour), 0); err != nil {
		t.Fatal(err)
	}
	if last, err := x.LastEventID(ctx); err != nil || last != evs[1].ID {
		t.Errorf("LastEventID after pruning every event = %d, %v, want %d (pruned IDs count)", last, err, evs[1].ID)
	}
}
