package storetest

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/store"
)

// outboxTests are the cases of the Outbox contract, run by Run.
var outboxTests = []struct {
	name string
	fn   func(t *testing.T, open func(t *testing.T) store.Store)
}{
	{"OutboxOffWritesNothing", testOutboxOff},
	{"OutboxSameIDsInOrder", testOutboxOrder},
	{"OutboxDelete", testOutboxDelete},
	{"OutboxSurvivesPrune", testOutboxSurvivesPrune},
	{"PruneEvents", testPruneEvents},
}

func appendN(t *testing.T, s store.Store, n int, at time.Time) []api.Event {
	t.Helper()
	evs := make([]api.Event, n)
	for i := range evs {
		evs[i] = api.Event{Time: at.Add(time.Duration(i) * time.Second), Device: "d1", Kind: api.KindLog,
			Message: "m", Payload: []byte(`{"n":1}`)}
	}
	out, err := s.AppendEvents(ctx, evs)
	if err != nil {
		t.Fatalf("AppendEvents = %v", err)
	}
	return out
}

func testOutboxOff(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	appendN(t, s, 3, t0)
	if n, err := s.OutboxDepth(ctx); err != nil || n != 0 {
		t.Errorf("OutboxDepth with the outbox off = %d, %v, want 0, nil", n, err)
	}
}

func testOutboxOrder(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	appendN(t, s, 2, t0) // before enabling: not queued
	s.SetOutbox(true)
	stored := appendN(t, s, 5, t0)
	got, err := s.OutboxNext(ctx, 0, 0)
	if err != nil {
		t.Fatalf("OutboxNext = %v", err)
	}
	if diff := cmp.Diff(stored, got, timeEqual); diff != "" {
		t.Errorf("OutboxNext(0) differs from the stored events (-stored +got):\n%s", diff)
	}
	got, err = s.OutboxNext(ctx, stored[1].ID, 2)
	if err != nil {
		t.Fatalf("OutboxNext = %v", err)
	}
	if want := ids(stored[2:4]); !cmp.Equal(ids(got), want) {
		t.Errorf("OutboxNext(after %d, 2) = %v, want %v", stored[1].ID, ids(got), want)
	}
	if n, _ := s.OutboxDepth(ctx); n != 5 {
		t.Errorf("OutboxDepth = %d, want 5", n)
	}
}

func testOutboxDelete(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	s.SetOutbox(true)
	stored := appendN(t, s, 4, t0)
	n, err := s.OutboxDelete(ctx, stored[1].ID)
	if err != nil || n != 2 {
		t.Fatalf("OutboxDelete(%d) = %d, %v, want 2, nil", stored[1].ID, n, err)
	}
	got, _ := s.OutboxNext(ctx, 0, 0)
	if want := ids(stored[2:]); !cmp.Equal(ids(got), want) {
		t.Errorf("after OutboxDelete, OutboxNext = %v, want %v", ids(got), want)
	}
	if n, _ := s.OutboxDelete(ctx, stored[1].ID); n != 0 {
		t.Errorf("OutboxDelete again = %d, want 0 (idempotent)", n)
	}
	// The events themselves stay.
	all, _ := s.Events(ctx, store.EventFilter{})
	if len(all) != 4 {
		t.Errorf("Events after OutboxDelete = %d events, want 4", len(all))
	}
}

func testOutboxSurvivesPrune(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	s.SetOutbox(true)
	stored := appendN(t, s, 3, t0)
	if _, err := s.PruneEvents(ctx, t0.Add(time.Hour), 0); err != nil {
		t.Fatalf("PruneEvents = %v", err)
	}
	got, _ := s.OutboxNext(ctx, 0, 0)
	if !cmp.Equal(ids(got), ids(stored)) {
		t.Errorf("outbox after pruning every event = %v, want %v (unpublished events are kept)", ids(got), ids(stored))
	}
}

func testPruneEvents(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name    string
		before  time.Time
		keep    int
		wantIdx []int // indexes of the 6 appended events that remain
	}{
		{"nothing", time.Time{}, 0, []int{0, 1, 2, 3, 4, 5}},
		{"by age", t0.Add(2 * time.Second), 0, []int{2, 3, 4, 5}},
		{"by count", time.Time{}, 4, []int{2, 3, 4, 5}},
		{"both", t0.Add(3 * time.Second), 4, []int{3, 4, 5}},
		{"keep more than there are", time.Time{}, 100, []int{0, 1, 2, 3, 4, 5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			stored := appendN(t, s, 6, t0)
			n, err := s.PruneEvents(ctx, tt.before, tt.keep)
			if err != nil {
				t.Fatalf("PruneEvents = %v", err)
			}
			var want []int64
			for _, i := range tt.wantIdx {
				want = append(want, stored[i].ID)
			}
			got, _ := s.Events(ctx, store.EventFilter{})
			if !cmp.Equal(ids(got), want) {
				t.Errorf("PruneEvents(%v, %d) left %v, want %v", tt.before, tt.keep, ids(got), want)
			}
			if int(n) != 6-len(want) {
				t.Errorf("PruneEvents(%v, %d) = %d, want %d", tt.before, tt.keep, n, 6-len(want))
			}
			// IDs are never reused after pruning.
			more := appendN(t, s, 1, t0.Add(time.Hour))
			if more[0].ID <= stored[5].ID {
				t.Errorf("ID after pruning = %d, want > %d", more[0].ID, stored[5].ID)
			}
		})
	}
}

var timeEqual = cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) })
