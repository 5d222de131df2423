package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/drover-dev/drover/internal/api"
)

// pgSchema gives the test a fresh schema in the PostgreSQL database of
// DROVER_TEST_POSTGRES and returns the URL of it for --db, or skips.
func pgSchema(t *testing.T) string {
	t.Helper()
	base := os.Getenv("DROVER_TEST_POSTGRES")
	if base == "" {
		t.Skip("set DROVER_TEST_POSTGRES (e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable) to run the replica tests")
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("connect %s: %v", base, err)
	}
	defer conn.Close(ctx)
	schema := fmt.Sprintf("drover_e2e_%d", time.Now().UnixNano())
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), base)
		if err != nil {
			return
		}
		defer c.Close(context.Background())
		_, _ = c.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
	})
	sep := "?"
	if strings.Contains(base, "?") {
		sep = "&"
	}
	return base + sep + "search_path=" + schema
}

// newReplicaPair starts two server processes, A and B, on one
// PostgreSQL schema and one blob folder, each with its own data folder;
// they share the PKI and the admin certificate.
func newReplicaPair(t *testing.T, db string, extra ...string) (a, b *fleet) {
	t.Helper()
	dir := t.TempDir()
	pki := filepath.Join(dir, "pki")
	runOK := func(args ...string) {
		if r := runBin(t, nil, "", args...); r.code != 0 {
			t.Fatalf("drover %s: %s", strings.Join(args, " "), r.stderr)
		}
	}
	runOK("pki", "init", "--dir", pki)
	runOK("pki", "issue", "--dir", pki, "--server", "localhost")
	runOK("pki", "issue", "--dir", pki, "--admin", "ops")
	mk := func(name string) *fleet {
		args := append([]string{"--db", db, "--blobs", filepath.Join(dir, "blobs"), "--data", filepath.Join(dir, "data-"+name), "--log-level", "debug"}, extra...)
		f := &fleet{t: t, dir: dir, pki: pki, serverArgs: args}
		f.startServer()
		return f
	}
	return mk("a"), mk("b")
}

// follow runs `drover events --follow -o json` against f and returns the
// events it printed so far, on every call.
func follow(t *testing.T, f *fleet) func() []api.Event {
	t.Helper()
	cmd := exec.Command(droverBin, "events", "--follow", "-o", "json")
	cmd.Env = append(os.Environ(), f.adminEnv()...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	var mu sync.Mutex
	var evs []api.Event
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var ev api.Event
			if json.Unmarshal(sc.Bytes(), &ev) == nil {
				mu.Lock()
				evs = append(evs, ev)
				mu.Unlock()
			}
		}
	}()
	return func() []api.Event {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(evs)
	}
}

// TestReplicas runs two replicas on one PostgreSQL database: a change
// through replica B reaches an agent waiting on replica A within two
// seconds (not at its next report, a minute away), and an event follower
// on A sees the events B stores.
func TestReplicas(t *testing.T) {
	db := pgSchema(t)
	a, b := newReplicaPair(t, db)
	files := buildFleetPackages(t, a)
	b.op(append([]string{"pkg", "push"}, files...)...)
	// Reports a minute apart: only the replicas' notifications can make
	// this agent converge in seconds.
	ag := a.newAgent("alpha", "--report-interval", "60s")
	ag.start()
	a.waitFor("alpha", "reported", func(d deviceJSON) bool { return len(d.SystemTags) > 0 })
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent log:\n%s\nreplica A log:\n%s\nreplica B log:\n%s", tail(ag.logs.String(), 3000), tail(a.logs.String(), 3000), tail(b.logs.String(), 3000))
		}
	})
	events := follow(t, a)

	for _, version := range []string{"1.0.0", "1.1.0"} {
		var last int64
		if evs := storedEvents(t, b); len(evs) > 0 {
			last = evs[len(evs)-1].ID
		}
		b.op("state", "set", "-f", writeState(t, b, "alpha", "id: alpha\napps:\n  - name: com.example:tool\n    version: "+version+"\n"))
		set := time.Now()
		want := []string{"com.example:tool=" + version}
		if version == "1.1.0" {
			want = []string{"com.example:lib=1.0.0", "com.example:tool=1.1.0"}
		}
		a.waitConverged("alpha", want...)
		// The agent's plan event is its first act on the new state.
		var plan time.Time
		for _, ev := range storedEvents(t, b) {
			if ev.Kind == api.KindPlan && ev.Device == "alpha" && ev.ID > last && plan.IsZero() {
				plan = ev.Time
			}
		}
		if plan.IsZero() {
			t.Fatalf("no plan event of alpha after the state set of %s", version)
		}
		lag := plan.Sub(set)
		t.Logf("state set of %s through B: alpha on A planned after %v, converged after %v", version, lag.Round(time.Millisecond), time.Since(set).Round(time.Millisecond))
		if lag > 2*time.Second {
			t.Errorf("alpha on replica A started on the state set through B after %v, want within 2s", lag)
		}
	}

	// The follower on A saw the state events B stored, in id order.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var states []int64
		got := events()
		for _, ev := range got {
			if ev.Kind == api.KindState {
				states = append(states, ev.ID)
			}
		}
		ids := eventIDs(got)
		if !slices.IsSorted(ids) {
			t.Fatalf("follower on A: ids out of order: %v", ids)
		}
		if len(states) >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("follower on A saw %d state events of B's, want 2; it saw %d events", len(states), len(got))
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Documents removed through A are gone on B too (its resolution
	// cache dropped them).
	a.op("state", "rm", "alpha")
	if out := runBin(t, b.adminEnv(), "", "state", "get", "alpha"); out.code == 0 {
		t.Errorf("state get alpha on B after state rm on A: exit 0, want not found\n%s", out.stdout)
	}
}

var leadingRe = regexp.MustCompile(`leading: this replica`)

// TestReplicasLeaderKilled kills the leading replica with SIGKILL in the
// middle of a rollout while events flow to RabbitMQ: the other replica
// takes the lead within ten seconds, the rollout goes on to done, and
// every stored event reaches the broker's consumer in id order.
func TestReplicasLeaderKilled(t *testing.T) {
	db := pgSchema(t)
	url := os.Getenv("DROVER_TEST_AMQP")
	if url == "" {
		t.Skip("set DROVER_TEST_AMQP (e.g. amqp://guest:guest@127.0.0.1:5672/) to run the leader takeover test")
	}
	exchange, queue, setup := testQueue(t, url)
	conn, ch := setup()
	defer conn.Close()

	a, b := newReplicaPair(t, db, "--amqp-url", url, "--amqp-exchange", exchange)
	// One of them leads (A most likely: it started first); the other
	// waits. The agent and the operator use the other one.
	leads := func(f *fleet) bool { return leadingRe.MatchString(f.logs.String()) }
	deadline := time.Now().Add(10 * time.Second)
	for !leads(a) && !leads(b) {
		if time.Now().After(deadline) {
			t.Fatalf("no replica leads after 10s:\nA log:\n%s\nB log:\n%s", tail(a.logs.String(), 2000), tail(b.logs.String(), 2000))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if leads(a) && leads(b) {
		t.Fatalf("both replicas lead:\nA log:\n%s\nB log:\n%s", tail(a.logs.String(), 2000), tail(b.logs.String(), 2000))
	}
	if leads(b) {
		a, b = b, a
	}
	waitLog := func(f *fleet, what string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !leads(f) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: no 'leading' in its log within 10s:\n%s", what, tail(f.logs.String(), 3000))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	files := buildFleetPackages(t, b)
	b.op(append([]string{"pkg", "push"}, files...)...)
	ag := b.newAgent("alpha")
	ag.start()
	b.waitFor("alpha", "reported", func(d deviceJSON) bool { return len(d.SystemTags) > 0 })
	b.op("state", "set", "-f", writeState(t, b, "alpha", "id: alpha\napps:\n  - name: com.example:tool\n    version: 1.0.0\n"))
	b.waitConverged("alpha", "com.example:tool=1.0.0")

	// A rollout with a soak long enough to outlive its leader.
	b.op("rollout", "start", "-f", writeState(t, b, "alpha-next", "id: alpha\napps:\n  - name: com.example:tool\n    version: 1.1.0\n"),
		"--name", "next", "--waves", "1", "--soak", "4s", "--wave-timeout", "60s")
	b.waitRollout("next", "soaking", func(v rolloutView) bool {
		return len(v.Stages) > 0 && !v.Stages[0].Soaking.IsZero()
	})
	_ = a.server.Process.Kill()
	_ = a.server.Wait()
	killed := time.Now()
	waitLog(b, "the other replica after the leader was killed")
	t.Logf("the other replica leads %v after the leader was killed", time.Since(killed).Round(time.Millisecond))

	if v := b.waitRollout("next", "done after the takeover", func(v rolloutView) bool { return v.Phase != api.RolloutRunning }); v.Phase != api.RolloutDone {
		t.Fatalf("rollout after the takeover: %+v", v)
	}
	b.waitConverged("alpha", "com.example:lib=1.0.0", "com.example:tool=1.1.0")

	stored := storedEvents(t, b)
	want := eventIDs(stored)
	got, dups := consumeEvents(t, ch, queue, want, b.logs.String)
	if !slices.IsSorted(got) {
		t.Errorf("consumer ids (duplicates dropped) out of order: %v", got)
	}
	t.Logf("%d events stored, all published in order across the takeover (%d duplicates)", len(want), dups)
}
