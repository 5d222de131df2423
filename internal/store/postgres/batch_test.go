package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/store"
	"github.com/drover-dev/drover/internal/store/postgres"
	"github.com/drover-dev/drover/internal/store/postgres/pgtest"
)

// holdEventLock takes the event writers' lock on a connection of its own,
// so that the batcher's next batch waits for it, and waits until a batch
// does. It returns the lock's release.
func holdEventLock(t *testing.T, s *postgres.Store, first func()) func() {
	t.Helper()
	ctx := context.Background()
	conn, err := s.PoolForTest().Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, s.EventLockKeyForTest()); err != nil {
		t.Fatal(err)
	}
	first()
	// A backend waiting for an advisory lock is the batch (nothing else
	// in this schema's test writes events).
	for {
		var waiting bool
		err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
			AND ((classid::bigint << 32) | objid::bigint) = $1)`, s.EventLockKeyForTest()).Scan(&waiting)
		if err != nil {
			t.Fatal(err)
		}
		if waiting {
			break
		}
	}
	released := false
	return func() {
		if released {
			return
		}
		released = true
		if _, err := conn.Exec(ctx, `SELECT pg_advisory_unlock($1)`, s.EventLockKeyForTest()); err != nil {
			t.Error(err)
		}
		conn.Release()
	}
}

// waitQueued waits until n writes wait for the batcher.
func waitQueued(s *postgres.Store, n int) {
	for s.QueuedForTest() < n {
		runtime.Gosched()
	}
}

// Concurrent Commits share batches: every write gets its events with
// consecutive IDs, in order, all distinct; a write the database refuses
// (a device id with a NUL byte, which text cannot hold) fails alone and
// stores nothing, even in a batch with the others.
func TestBatchConcurrentCommits(t *testing.T) {
	s := pgtest.Open(t)
	ctx := context.Background()
	const n = 200
	bad := func(i int) bool { return i%17 == 5 }
	write := func(i int) store.Write {
		id := fmt.Sprintf("device-%03d", i)
		if bad(i) {
			id = fmt.Sprintf("bad\x00%03d", i)
		}
		var evs []api.Event
		for j := range 1 + i%4 {
			evs = append(evs, api.Event{Device: fmt.Sprintf("device-%03d", i), Kind: api.KindLog, Message: fmt.Sprintf("%d/%d", i, j)})
		}
		return store.Write{Device: &api.Device{ID: id, Health: "ok"}, Events: evs}
	}
	got := make([][]api.Event, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	commit := func(i int) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], errs[i] = s.Commit(ctx, write(i))
		}()
	}
	// Write 0 holds up the batcher at the event lock until the other 199
	// are queued, so they are one batch (bad ones included), then the
	// rest run with no help.
	release := holdEventLock(t, s, func() { commit(0) })
	for i := 1; i < n; i++ {
		commit(i)
	}
	waitQueued(s, n-1)
	release()
	wg.Wait()

	ids := map[int64]bool{}
	for i := range n {
		if bad(i) {
			if errs[i] == nil {
				t.Errorf("Commit(write %d, device id with NUL) = nil error, want the database's refusal", i)
			}
			continue
		}
		if errs[i] != nil {
			t.Errorf("Commit(write %d) = %v", i, errs[i])
			continue
		}
		w := write(i)
		if len(got[i]) != len(w.Events) {
			t.Errorf("write %d: %d events back, want %d", i, len(got[i]), len(w.Events))
			continue
		}
		for j, e := range got[i] {
			if e.Message != w.Events[j].Message || e.ID != got[i][0].ID+int64(j) || ids[e.ID] {
				t.Errorf("write %d: event %d = %d %q, want ID %d (not seen before), message %q",
					i, j, e.ID, e.Message, got[i][0].ID+int64(j), w.Events[j].Message)
			}
			ids[e.ID] = true
		}
		if _, err := s.Device(ctx, w.Device.ID); err != nil {
			t.Errorf("Device(%s) = %v", w.Device.ID, err)
		}
	}
	stored, err := s.Events(ctx, store.EventFilter{Limit: 10 * n})
	if err != nil {
		t.Fatal(err)
	}
	if len(stored) != len(ids) {
		t.Errorf("%d events stored, want %d (the good writes', none of the refused)", len(stored), len(ids))
	}
	for k, e := range stored {
		if !ids[e.ID] || (k > 0 && e.ID <= stored[k-1].ID) {
			t.Errorf("stored event %d: ID %d unknown or not ascending", k, e.ID)
		}
	}
	devs, err := s.Devices(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range devs {
		if d.ID[:3] == "bad" {
			t.Errorf("device %q of a refused write stored", d.ID)
		}
	}
}

// A write whose caller gives up while it is queued is never applied and
// its caller gets ctx.Err(); the batch before it and the writes after it
// are not disturbed.
func TestBatchCancelledBeforeTaken(t *testing.T) {
	s := pgtest.Open(t)
	ctx := context.Background()
	first := make(chan error, 1)
	release := holdEventLock(t, s, func() {
		go func() {
			_, err := s.Commit(ctx, store.Write{Events: []api.Event{{Kind: api.KindLog, Message: "first"}}})
			first <- err
		}()
	})
	defer release()
	cctx, cancel := context.WithCancel(ctx)
	gaveUp := make(chan error, 1)
	go func() {
		_, err := s.Commit(cctx, store.Write{
			Device: &api.Device{ID: "gave-up"},
			Events: []api.Event{{Kind: api.KindLog, Message: "gave up"}},
		})
		gaveUp <- err
	}()
	waitQueued(s, 1)
	cancel()
	if err := <-gaveUp; !errors.Is(err, context.Canceled) {
		t.Errorf("Commit(cancelled while queued) = %v, want context.Canceled", err)
	}
	release()
	if err := <-first; err != nil {
		t.Errorf("Commit(first) = %v", err)
	}
	if _, err := s.Commit(ctx, store.Write{Events: []api.Event{{Kind: api.KindLog, Message: "after"}}}); err != nil {
		t.Errorf("Commit(after) = %v", err)
	}
	evs, err := s.Events(ctx, store.EventFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var msgs []string
	for _, e := range evs {
		msgs = append(msgs, e.Message)
	}
	if fmt.Sprint(msgs) != "[first after]" {
		t.Errorf("events = %q, want [first after]", msgs)
	}
	if _, err := s.Device(ctx, "gave-up"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Device(gave-up) = %v, want ErrNotFound", err)
	}
}

// Close commits the writes queued before it, and a Commit after it is
// refused, not lost in a queue nobody reads.
func TestBatchClose(t *testing.T) {
	cfg := pgtest.Config(t)
	s, err := postgres.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	done := make(chan error, 1)
	release := holdEventLock(t, s, func() {
		go func() {
			_, err := s.Commit(ctx, store.Write{Events: []api.Event{{Kind: api.KindLog, Message: "one"}}})
			done <- err
		}()
	})
	queued := make(chan error, 1)
	go func() {
		_, err := s.Commit(ctx, store.Write{Events: []api.Event{{Kind: api.KindLog, Message: "two"}}})
		queued <- err
	}()
	waitQueued(s, 1)
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	release()
	for _, ch := range []chan error{done, queued, closed} {
		if err := <-ch; err != nil {
			t.Errorf("Commit or Close = %v", err)
		}
	}
	if _, err := s.Commit(ctx, store.Write{Events: []api.Event{{Kind: api.KindLog}}}); err == nil {
		t.Error("Commit after Close = nil error, want one")
	}
	s2 := open(t, cfg)
	evs, err := s2.Events(ctx, store.EventFilter{})
	if err != nil || len(evs) != 2 {
		t.Errorf("events after Close = %v, %v, want one and two", evs, err)
	}
}

// The outbox row of an event is the event as JSON, byte for byte, its ID
// spliced in by the database in the statement that inserts the event.
func TestBatchOutboxBody(t *testing.T) {
	s := pgtest.Open(t)
	ctx := context.Background()
	s.SetOutbox(true)
	evs, err := s.Commit(ctx, store.Write{Device: &api.Device{ID: "d1"}, Events: []api.Event{
		{Device: "d1", Kind: api.KindLog, Message: "one"},
		{Device: "d1", Kind: api.KindConverged, Message: "two \"quoted\"", Payload: []byte(`{"a":[1,2]}`)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		want, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		var body []byte
		if err := s.PoolForTest().QueryRow(ctx, `SELECT body FROM outbox WHERE id = $1`, e.ID).Scan(&body); err != nil {
			t.Fatalf("outbox row of event %d: %v", e.ID, err)
		}
		if string(body) != string(want) {
			t.Errorf("outbox body of event %d = %s, want %s", e.ID, body, want)
		}
	}
}
