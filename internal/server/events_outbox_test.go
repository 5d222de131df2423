package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/client"
	"github.com/drover-dev/drover/internal/pki"
)

// TestEventsOutboxBound: with no broker reachable the outbox grows; past 80% of
// OutboxMax the server says so once, past OutboxMax it gives up on the
// oldest queued events with an error event naming their ids (they stay
// stored), the outbox stays within its bound, and the server answers all
// along.
func TestEventsOutboxBound(t *testing.T) {
	// A port nobody listens on: the broker is down for the whole test.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	broker := ln.Addr().String()
	ln.Close()
	const outboxMax = 10
	fx := newServed(t)
	_, addr, _ := fx.start(Config{Events: EventsConfig{AMQPURL: "amqp://guest:guest@" + broker + "/", OutboxMax: outboxMax}}, nil)
	admin := fx.client(pki.RoleAdmin, "ops", addr)
	dev := fx.client(pki.RoleDevice, "d1", addr)
	ctx := context.Background()

	logs := func(n int, what string) {
		t.Helper()
		evs := make([]api.Event, n)
		for i := range evs {
			evs[i] = api.Event{Kind: "log", Message: fmt.Sprintf("%s %d", what, i)}
		}
		if err := dev.PostEvents(ctx, "d1", evs); err != nil {
			t.Fatalf("post events with the broker down: %v", err)
		}
	}
	outboxEvents := func(level string) []api.Event {
		t.Helper()
		evs, err := admin.Events(ctx, client.EventQuery{Kind: KindOutbox})
		if err != nil {
			t.Fatal(err)
		}
		var out []api.Event
		for _, ev := range evs {
			if ev.Level == level {
				out = append(out, ev)
			}
		}
		return out
	}

	if _, err := dev.Report(ctx, "d1", api.Report{Installed: []api.InstalledApp{}}); err != nil {
		t.Fatal(err)
	}
	logs(outboxMax*8/10, "before the warning") // with device-seen: just past 80%
	waitUntil(t, 5*time.Second, "outbox warning event", func() bool { return len(outboxEvents(api.LevelWarn)) > 0 })
	if errs := outboxEvents(api.LevelError); len(errs) != 0 {
		t.Errorf("outbox error events below the maximum: %v", errs)
	}

	logs(outboxMax/2, "past the maximum")
	waitUntil(t, 5*time.Second, "outbox error event", func() bool { return len(outboxEvents(api.LevelError)) > 0 })
	if w := outboxEvents(api.LevelWarn); len(w) != 1 {
		t.Errorf("outbox warning events = %d, want 1 while the outbox stays full", len(w))
	}
	gaveUp := outboxEvents(api.LevelError)[0]
	var ids struct {
		First int64 `json:"first_id"`
		Last  int64 `json:"last_id"`
		Count int64 `json:"count"`
	}
	if err := json.Unmarshal(gaveUp.Payload, &ids); err != nil || ids.First != 1 || ids.Count != ids.Last-ids.First+1 {
		t.Fatalf("outbox error payload = %s (%v), want the given-up ids from the oldest, 1", gaveUp.Payload, err)
	}
	if want := fmt.Sprintf("ids %d to %d", ids.First, ids.Last); !strings.Contains(gaveUp.Message, want) {
		t.Errorf("outbox error message = %q, want it to name %q", gaveUp.Message, want)
	}
	// Within its bound, the error event itself included (else it would
	// overflow again at the next look, forever).
	if depth, err := fx.st.OutboxDepth(ctx); err != nil || depth > outboxMax {
		t.Errorf("outbox depth after giving up = %d (%v), want at most %d", depth, err, outboxMax)
	}
	next, err := fx.st.OutboxNext(ctx, 0, 1)
	if err != nil || len(next) != 1 || next[0].ID != ids.Last+1 {
		t.Errorf("oldest event still queued = %v (%v), want id %d: the given-up ones are out, the rest in", next, err, ids.Last+1)
	}
	// The given-up events are still stored and readable.
	stored, err := admin.Events(ctx, client.EventQuery{After: ids.First - 1, Limit: int(ids.Count)})
	if err != nil || len(stored) != int(ids.Count) || stored[len(stored)-1].ID != ids.Last {
		t.Errorf("stored events %d to %d: %d of them (%v), want all %d", ids.First, ids.Last, len(stored), err, ids.Count)
	}

	// The server keeps answering.
	if _, err := dev.Report(ctx, "d1", api.Report{Installed: []api.InstalledApp{}}); err != nil {
		t.Errorf("report with the outbox full: %v", err)
	}
	if d, err := admin.Device(ctx, "d1"); err != nil || d.ID != "d1" {
		t.Errorf("device show with the outbox full: %+v, %v", d, err)
	}
}
