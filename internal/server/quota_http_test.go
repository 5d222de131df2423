package server

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/client"
)

// One device certificate cannot fill the server: past the default quota
// of 1,000 events a minute its events are refused with 429 and
// Retry-After, one warning event is stored, and other devices are not
// affected.
func TestEventQuota(t *testing.T) {
	ts := newTestServer(t, time.Second)
	ctx := context.Background()
	batch := func(n int, msg string) []api.Event {
		evs := make([]api.Event, n)
		for i := range evs {
			evs[i] = api.Event{Kind: api.KindLog, Message: fmt.Sprintf("%s %d", msg, i)}
		}
		return evs
	}
	for i := range 2 {
		if err := ts.dev["d1"].PostEvents(ctx, "d1", batch(500, "ok")); err != nil {
			t.Fatalf("batch %d within the quota: %v", i, err)
		}
	}
	for range 2 {
		err := ts.dev["d1"].PostEvents(ctx, "d1", batch(10, "over"))
		var e *api.Error
		if !errors.As(err, &e) || e.Code != api.ETOOMANY || e.RetryAfter < 1 || e.RetryAfter > 60 || e.Accepted != 0 {
			t.Fatalf("events past the quota: %v (%+v), want %s with a retry after of 1 to 60 s", err, e, api.ETOOMANY)
		}
	}
	if err := ts.dev["d2"].PostEvents(ctx, "d2", batch(10, "other")); err != nil {
		t.Errorf("another device's events: %v, want them stored", err)
	}
	evs, err := ts.admin.Events(ctx, client.EventQuery{Device: "d1", Limit: 5000})
	if err != nil {
		t.Fatal(err)
	}
	var stored, warnings int
	for _, ev := range evs {
		switch {
		case ev.Kind == api.KindQuota:
			warnings++
		case strings.HasPrefix(ev.Message, "over"):
			t.Errorf("an event past the quota was stored: %q", ev.Message)
		case ev.Kind == api.KindLog:
			stored++
		}
	}
	if stored != 1000 || warnings != 1 {
		t.Errorf("stored %d events and %d quota warnings for d1, want 1000 and 1", stored, warnings)
	}
	// A device may not forge the warning.
	if err := ts.dev["d2"].PostEvents(ctx, "d2", []api.Event{{Kind: api.KindQuota}}); code(err) != api.EINVALID {
		t.Errorf("device posting %s: %v, want invalid", api.KindQuota, err)
	}
}

// An event over 64 KiB is cut, never stored whole.
func TestEventSizeBounded(t *testing.T) {
	ts := newTestServer(t, time.Second)
	ctx := context.Background()
	big := strings.Repeat("x", 1<<20)
	if err := ts.dev["d1"].PostEvents(ctx, "d1", []api.Event{
		{Kind: api.KindLog, Message: big},
		{Kind: api.KindLog, Message: "with payload", Payload: []byte(`"` + big + `"`)},
	}); err != nil {
		t.Fatal(err)
	}
	evs, err := ts.admin.Events(ctx, client.EventQuery{Device: "d1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if n := len(ev.Message) + len(ev.Payload); n > 64<<10 {
			t.Errorf("event %q... stored with %d bytes, want at most 64 KiB", ev.Message[:min(20, len(ev.Message))], n)
		}
	}
}
