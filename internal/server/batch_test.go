package server

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/store"
)

// TestEmitGrouped: posts stored at once, some of them in one group, each
// get their own outcome: every good post's events are stored once, and a
// post with a bad event fails alone.
func TestEmitGrouped(t *testing.T) {
	fx := newServed(t)
	srv, err := New(context.Background(), Config{Logger: fx.log}, fx.st, fx.blobs)
	if err != nil {
		t.Fatal(err)
	}
	const posts, per = 40, 3
	errs := make([]error, posts)
	var wg sync.WaitGroup
	for i := range posts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			evs := make([]api.Event, per)
			for j := range evs {
				evs[j] = api.Event{Device: fmt.Sprintf("dev-%d", i), Kind: "bench.step", Message: fmt.Sprintf("%d/%d", i, j)}
			}
			if i == 7 {
				evs[1].Kind = "bad kind/with slash"
			}
			errs[i] = srv.emitGrouped(context.Background(), evs)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if (err != nil) != (i == 7) {
			t.Errorf("post %d: err = %v", i, err)
		}
	}
	got, err := fx.st.Events(context.Background(), store.EventFilter{Kind: "bench.step", Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if want := (posts - 1) * per; len(got) != want {
		t.Fatalf("%d events stored, want %d", len(got), want)
	}
	seen := map[string]bool{}
	for _, ev := range got {
		if seen[ev.Message] {
			t.Fatalf("event %s stored twice", ev.Message)
		}
		seen[ev.Message] = true
	}
}
