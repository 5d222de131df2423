package storecopy_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/store"
	"github.com/drover-dev/drover/internal/store/postgres/pgtest"
	"github.com/drover-dev/drover/internal/store/sqlite"
	"github.com/drover-dev/drover/internal/store/storecopy"
)

var (
	ctx = context.Background()
	// Not UTC, and with nanoseconds: a copy keeps the instant exactly.
	t0 = time.Date(2026, 3, 14, 15, 9, 26, 535897932, time.FixedZone("CET", 3600))
)

// fill writes records of every kind into s through the store contract,
// as a server that ran a while would have: the oldest events pruned, some
// left in the outbox.
func fill(t *testing.T, s store.Store) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for i, tags := range [][]string{{"linux", "amd64"}, {"linux", "arm64"}, nil} {
		m, _ := json.Marshal(map[string]any{"build": i})
		sum := sha256.Sum256(m)
		must(s.PutBuild(ctx, api.Build{Coordinate: fmt.Sprintf("org.a:app:1.%d.0", i), Tags: tags, Digest: hex.EncodeToString(sum[:]),
			Install: api.InstallPrefix, Files: i + 1, Size: int64(100 * i), Pushed: t0.Add(time.Duration(i) * time.Minute)}, m))
	}
	for i := range 3 {
		id := fmt.Sprintf("dev-%d", i)
		d := api.Device{ID: id, Tags: []string{"linux"}, Labels: map[string]string{"site": "berlin"}, LastSeen: t0.Add(time.Duration(i) * time.Second),
			Installed: []api.InstalledApp{{Name: "org.a:app", Version: "1.0.0", Tags: []string{}, Install: api.InstallPrefix}}, Health: "ok"}
		_, err := s.Commit(ctx, store.Write{Device: &d, Desired: []api.DesiredState{{ID: id, Apps: []api.DesiredApp{{Name: "org.a:app", Version: "^1", Tags: []string{}}}}}})
		must(err)
	}
	_, err := s.Commit(ctx, store.Write{Documents: []api.Document{{Kind: api.DocGroup, Group: "web", Selector: "site=berlin",
		Apps: []api.DesiredApp{{Name: "org.a:app", Version: "^1.2", Tags: []string{}, Params: map[string]any{"port": float64(80)}}}, Set: t0, SetBy: "admin"}}})
	must(err)
	must(s.SetParamValues(ctx, "", "org.a:app", map[string]any{"port": float64(8080), "hosts": []any{"a", "b"}}))
	must(s.SetParamValues(ctx, "dev-1", "org.a:app", map[string]any{"port": float64(8081)}))
	must(s.SetParamValues(ctx, "dev-1", "org.a:db", map[string]any{"size": "big"}))
	_, err = s.SaveRollout(ctx, api.Rollout{RolloutSpec: api.RolloutSpec{Name: "r1", Waves: []string{"100%"}}, Phase: api.RolloutRunning,
		Created: t0, Updated: t0}, true, []api.Event{{Time: t0, Kind: "rollout-started", Message: "r1"}})
	must(err)
	must(s.PutTrustFiles(ctx, []store.TrustFile{{Role: "root", Version: 1, Data: []byte("r1")}, {Role: "timestamp", Version: 1, Data: []byte("t1")}}))
	must(s.PutTrustFiles(ctx, []store.TrustFile{{Role: "root", Version: 2, Data: []byte("r2")}, {Role: "timestamp", Version: 2, Data: []byte("t2")}, {Role: "bins-3a", Version: 4, Data: []byte("b")}}))

	evs := make([]api.Event, 12)
	for i := range evs {
		evs[i] = api.Event{Time: t0.Add(time.Duration(i) * time.Second), Device: "dev-1", Kind: api.KindLog, Message: fmt.Sprint(i), Payload: json.RawMessage(`{ "n": 1 }`)}
	}
	_, err = s.AppendEvents(ctx, evs[:4]) // pruned below: the oldest
	must(err)
	s.SetOutbox(true)
	_, err = s.AppendEvents(ctx, evs[4:10])
	must(err)
	s.SetOutbox(false)
	_, err = s.AppendEvents(ctx, evs[10:])
	must(err)
	if _, err := s.PruneEvents(ctx, t0.Add(3*time.Second), 0); err != nil {
		t.Fatal(err)
	}
}

func TestCopy(t *testing.T) {
	pgtest.Require(t)
	from, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "drover.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer from.Close()
	fill(t, from)
	to := pgtest.Open(t)

	r, err := storecopy.Copy(ctx, from, to)
	if err != nil {
		t.Fatalf("Copy = %v", err)
	}
	if m := r.Mismatches(); len(m) != 0 {
		t.Errorf("Copy mismatches %v: %+v", m, r)
	}
	for _, k := range storecopy.Kinds() {
		if r.Source.N[k] == 0 {
			t.Errorf("the source held no %s: the test copies nothing of them", k)
		}
	}

	// Every record reads back the same from both.
	for _, c := range []struct {
		name string
		read func(store.Store) (any, error)
	}{
		{"builds", func(s store.Store) (any, error) { return s.Builds(ctx, "") }},
		{"manifests", func(s store.Store) (any, error) {
			bs, err := s.Builds(ctx, "")
			var ms []string
			for _, b := range bs {
				m, err2 := s.Manifest(ctx, b.Digest)
				err = errors.Join(err, err2)
				ms = append(ms, string(m))
			}
			return ms, err
		}},
		{"devices", func(s store.Store) (any, error) { return s.Devices(ctx) }},
		{"documents", func(s store.Store) (any, error) { return s.Documents(ctx) }},
		{"fleet params", func(s store.Store) (any, error) { return s.AllParamValues(ctx, "") }},
		{"device params", func(s store.Store) (any, error) { return s.AllParamValues(ctx, "dev-1") }},
		{"rollouts", func(s store.Store) (any, error) { return s.Rollouts(ctx) }},
		{"events", func(s store.Store) (any, error) { return s.Events(ctx, store.EventFilter{}) }},
		{"outbox", func(s store.Store) (any, error) { return s.OutboxNext(ctx, 0, 0) }},
		{"trust files", func(s store.Store) (any, error) { return s.(store.Exporter).TrustFiles(ctx) }},
	} {
		want, err := c.read(from)
		if err != nil {
			t.Fatalf("%s of the source: %v", c.name, err)
		}
		got, err := c.read(to)
		if err != nil {
			t.Fatalf("%s of the copy: %v", c.name, err)
		}
		if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) })); diff != "" {
			t.Errorf("%s differ (-source +copy):\n%s", c.name, diff)
		}
	}

	// New events get IDs above every one the source ever gave.
	last, _ := from.LastEventID(ctx)
	evs, err := to.AppendEvents(ctx, []api.Event{{Time: t0, Kind: api.KindLog}})
	if err != nil || evs[0].ID <= last {
		t.Errorf("AppendEvents after the copy = %v, %v, want an ID above the source's last %d", evs, err, last)
	}

	// A second copy into the now non-empty target is refused, changing
	// nothing.
	before, _ := storecopy.Counts(ctx, to)
	if _, err := storecopy.Copy(ctx, from, to); !errors.Is(err, storecopy.ErrNotEmpty) {
		t.Errorf("Copy into a non-empty store = %v, want ErrNotEmpty", err)
	}
	if after, _ := storecopy.Counts(ctx, to); !cmp.Equal(before, after) {
		t.Errorf("a refused copy changed the target: %+v, then %+v", before, after)
	}
}

// A store whose only trace is used event IDs is not empty either: a copy
// into it could not keep the source's IDs above them.
func TestCopyRefusesUsedEventIDs(t *testing.T) {
	pgtest.Require(t)
	from, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "drover.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer from.Close()
	to := pgtest.Open(t)
	if _, err := to.AppendEvents(ctx, []api.Event{{Time: t0, Kind: api.KindLog}}); err != nil {
		t.Fatal(err)
	}
	if _, err := to.PruneEvents(ctx, t0.Add(time.Hour), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := storecopy.Copy(ctx, from, to); !errors.Is(err, storecopy.ErrNotEmpty) {
		t.Errorf("Copy into a store with used event IDs = %v, want ErrNotEmpty", err)
	}
}

// IDs of events pruned from the source are not handed out by the copy
// either: an agent's or a UI's cursor may be one of them.
func TestCopyKeepsPrunedIDs(t *testing.T) {
	pgtest.Require(t)
	from, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "drover.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer from.Close()
	evs, err := from.AppendEvents(ctx, []api.Event{{Time: t0, Kind: api.KindLog}, {Time: t0, Kind: api.KindLog}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := from.PruneEvents(ctx, t0.Add(time.Hour), 0); err != nil {
		t.Fatal(err)
	}
	to := pgtest.Open(t)
	r, err := storecopy.Copy(ctx, from, to)
	if err != nil || len(r.Mismatches()) != 0 || r.Target.LastEventID != evs[1].ID {
		t.Fatalf("Copy = %+v, %v, want no mismatch and last event ID %d", r, err, evs[1].ID)
	}
	more, err := to.AppendEvents(ctx, []api.Event{{Time: t0, Kind: api.KindLog}})
	if err != nil || more[0].ID <= evs[1].ID {
		t.Errorf("AppendEvents after the copy = %v, %v, want an ID above the pruned %d", more, err, evs[1].ID)
	}
}
