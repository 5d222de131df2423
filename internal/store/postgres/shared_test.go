package postgres_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/drover-dev/drover/internal/store"
	"github.com/drover-dev/drover/internal/store/postgres"
	"github.com/drover-dev/drover/internal/store/postgres/pgtest"
)

// wait bounds how long a test waits for something to happen on the
// server; only a broken implementation gets near it.
const wait = 15 * time.Second

// replicas opens two stores on one new schema, as two server replicas.
func replicas(t *testing.T) (a, b *postgres.Store) {
	cfg := pgtest.Config(t)
	return open(t, cfg), open(t, cfg)
}

// listen runs s.Listen until the test ends and returns what it hears.
func listen(t *testing.T, s *postgres.Store) <-chan store.Change {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan store.Change, 100)
	done := make(chan error, 1)
	go func() { done <- s.Listen(ctx, func(c store.Change) { ch <- c }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Listen after its context ended = %v, want nil", err)
		}
	})
	return ch
}

func next(t *testing.T, ch <-chan store.Change) store.Change {
	t.Helper()
	select {
	case c := <-ch:
		return c
	case <-time.After(wait):
		t.Fatalf("no change heard in %v", wait)
		return store.Change{}
	}
}

func TestBroadcastReachesOtherReplica(t *testing.T) {
	ctx := context.Background()
	a, b := replicas(t)
	heard := listen(t, b)
	if c := next(t, heard); c.Kind != store.ChangeResync {
		t.Fatalf("first change heard = %+v, want %s", c, store.ChangeResync)
	}
	long := make([]string, 1000)
	for i := range long {
		long[i] = fmt.Sprintf("device-%04d", i)
	}
	for _, tt := range []struct {
		name string
		send store.Change
		want store.Change
	}{
		{"with keys", store.Change{Kind: store.ChangeDevices, Keys: []string{"d1", "d2"}, Origin: "a"},
			store.Change{Kind: store.ChangeDevices, Keys: []string{"d1", "d2"}, Origin: "a"}},
		{"no keys", store.Change{Kind: store.ChangeBuilds, Origin: "a"}, store.Change{Kind: store.ChangeBuilds, Origin: "a"}},
		{"keys too long for a notification mean any", store.Change{Kind: store.ChangeDocuments, Keys: long, Origin: "a"},
			store.Change{Kind: store.ChangeDocuments, Origin: "a"}},
	} {
		if err := a.Broadcast(ctx, tt.send); err != nil {
			t.Fatalf("%s: Broadcast = %v", tt.name, err)
		}
		if diff := cmp.Diff(tt.want, next(t, heard)); diff != "" {
			t.Errorf("%s: change heard mismatch (-want +got):\n%s", tt.name, diff)
		}
	}
}

// A listener whose connection is lost says so (ChangeResync) once it
// listens again, and hears what is broadcast after.
func TestListenReconnects(t *testing.T) {
	ctx := context.Background()
	a, b := replicas(t)
	heard := listen(t, b)
	if c := next(t, heard); c.Kind != store.ChangeResync {
		t.Fatalf("first change heard = %+v, want %s", c, store.ChangeResync)
	}
	var killed int
	err := a.PoolForTest().QueryRow(ctx, `
		SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = current_database() AND query = 'LISTEN ' || quote_ident($1)`, b.ChannelForTest()).Scan(&killed)
	if err != nil || killed != 1 {
		t.Fatalf("terminate the listening connection: %d, %v, want 1", killed, err)
	}
	if c := next(t, heard); c.Kind != store.ChangeResync {
		t.Fatalf("change heard after the connection was lost = %+v, want %s", c, store.ChangeResync)
	}
	if err := a.Broadcast(ctx, store.Change{Kind: store.ChangeEvents}); err != nil {
		t.Fatal(err)
	}
	if c := next(t, heard); c.Kind != store.ChangeEvents {
		t.Errorf("change heard after reconnecting = %+v, want %s", c, store.ChangeEvents)
	}
}

// lead runs s.Lead(name) and delivers its outcome.
type leadResult struct {
	ctx     context.Context
	release func()
	err     error
}

func leadAsync(ctx context.Context, s *postgres.Store, name string) <-chan leadResult {
	ch := make(chan leadResult, 1)
	go func() {
		lctx, release, err := s.Lead(ctx, name)
		ch <- leadResult{lctx, release, err}
	}()
	return ch
}

// waitLock waits until the advisory lock key has a holder (granted) or a
// waiter (not granted), and returns the backend's pid.
func waitLock(t *testing.T, s *postgres.Store, key int64, granted bool) int {
	t.Helper()
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		var pid int
		err := s.PoolForTest().QueryRow(context.Background(), `
			SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1
			AND classid::bigint = $1 AND objid::bigint = $2 AND granted = $3`,
			int64(uint32(uint64(key)>>32)), int64(uint32(uint64(key))), granted).Scan(&pid)
		if err == nil {
			return pid
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("lock %d (granted %v) not seen in %v", key, granted, wait)
	return 0
}

func TestLeadOneAtATime(t *testing.T) {
	ctx := context.Background()
	a, b := replicas(t)
	actx, releaseA, err := a.Lead(ctx, "scheduler")
	if err != nil {
		t.Fatalf("Lead(a) = %v", err)
	}
	// Another name is another leadership.
	_, releaseOther, err := b.Lead(ctx, "other")
	if err != nil {
		t.Fatalf("Lead(b, other) = %v", err)
	}
	releaseOther()

	bc := leadAsync(ctx, b, "scheduler")
	waitLock(t, a, a.LeadKeyForTest("scheduler"), false) // b waits in the database
	select {
	case r := <-bc:
		t.Fatalf("Lead(b) returned (%v) while a leads", r.err)
	default:
	}
	releaseA()
	releaseA() // a second release is harmless
	if actx.Err() == nil {
		t.Error("a's leadership context not cancelled by release")
	}
	select {
	case r := <-bc:
		if r.err != nil {
			t.Fatalf("Lead(b) after a released = %v", r.err)
		}
		r.release()
	case <-time.After(wait):
		t.Fatalf("b did not lead within %v of a's release", wait)
	}
}

// A leader whose connection is killed (as when its process is killed
// outright) loses its leadership context, and the waiting replica leads.
func TestLeadTakenOverWhenLeaderDies(t *testing.T) {
	ctx := context.Background()
	a, b := replicas(t)
	actx, releaseA, err := a.Lead(ctx, "scheduler")
	if err != nil {
		t.Fatalf("Lead(a) = %v", err)
	}
	defer releaseA()
	bc := leadAsync(ctx, b, "scheduler")
	key := a.LeadKeyForTest("scheduler")
	waitLock(t, a, key, false)
	pid := waitLock(t, a, key, true)
	if err := exec(a, `SELECT pg_terminate_backend($1)`, pid); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-bc:
		if r.err != nil {
			t.Fatalf("Lead(b) after a died = %v", r.err)
		}
		defer r.release()
	case <-time.After(wait):
		t.Fatalf("b did not lead within %v of a's death", wait)
	}
	select {
	case <-actx.Done():
	case <-time.After(wait):
		t.Errorf("a's leadership context not cancelled within %v of its connection's end", wait)
	}
}

// Lead gives up when its context ends while it waits.
func TestLeadCancelled(t *testing.T) {
	a, b := replicas(t)
	_, releaseA, err := a.Lead(context.Background(), "scheduler")
	if err != nil {
		t.Fatal(err)
	}
	defer releaseA()
	ctx, cancel := context.WithCancel(context.Background())
	bc := leadAsync(ctx, b, "scheduler")
	waitLock(t, a, a.LeadKeyForTest("scheduler"), false)
	cancel()
	select {
	case r := <-bc:
		if r.err == nil {
			r.release()
			t.Fatal("Lead(cancelled) = nil error, want one")
		}
	case <-time.After(wait):
		t.Fatalf("Lead did not return within %v of its context's end", wait)
	}
}

// A notification that is not a change (someone else's NOTIFY on the
// channel) is taken as "changes may have been missed".
func TestListenForeignNotification(t *testing.T) {
	a, b := replicas(t)
	heard := listen(t, b)
	next(t, heard) // the first resync
	if err := exec(a, `SELECT pg_notify($1, 'not json')`, a.ChannelForTest()); err != nil {
		t.Fatal(err)
	}
	if c := next(t, heard); c.Kind != store.ChangeResync {
		t.Errorf("change heard for a foreign notification = %+v, want %s", c, store.ChangeResync)
	}
}

// A replica whose waiting connection is lost connects again and still
// leads once the leader lets go.
func TestLeadWaitSurvivesLostConnection(t *testing.T) {
	ctx := context.Background()
	a, b := replicas(t)
	_, releaseA, err := a.Lead(ctx, "scheduler")
	if err != nil {
		t.Fatal(err)
	}
	bc := leadAsync(ctx, b, "scheduler")
	key := a.LeadKeyForTest("scheduler")
	waiter := waitLock(t, a, key, false)
	if err := exec(a, `SELECT pg_terminate_backend($1)`, waiter); err != nil {
		t.Fatal(err)
	}
	// b waits again, on a new connection.
	deadline := time.Now().Add(wait)
	for waitLock(t, a, key, false) == waiter {
		if time.Now().After(deadline) {
			t.Fatalf("b did not wait again within %v", wait)
		}
		time.Sleep(20 * time.Millisecond)
	}
	releaseA()
	select {
	case r := <-bc:
		if r.err != nil {
			t.Fatalf("Lead(b) = %v", r.err)
		}
		r.release()
	case <-time.After(wait):
		t.Fatalf("b did not lead within %v of a's release", wait)
	}
}
