package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/drover-dev/drover/internal/api"
)

// newFleetWith is newFleet with extra server flags.
func newFleetWith(t *testing.T, serverArgs ...string) *fleet {
	t.Helper()
	f := &fleet{t: t, dir: t.TempDir(), serverArgs: serverArgs}
	f.pki = filepath.Join(f.dir, "pki")
	f.mustOK(nil, "pki", "init", "--dir", f.pki)
	f.mustOK(nil, "pki", "issue", "--dir", f.pki, "--server", "localhost")
	f.mustOK(nil, "pki", "issue", "--dir", f.pki, "--admin", "ops")
	f.startServer()
	return f
}

// storedEvents returns every stored event, as `drover events -o json`
// prints them (one JSON document per event).
func storedEvents(t *testing.T, f *fleet) []api.Event {
	t.Helper()
	out := f.op("events", "-o", "json")
	dec := jsonArray(t, out)
	var evs []api.Event
	for dec.More() {
		var ev api.Event
		if err := dec.Decode(&ev); err != nil {
			t.Fatalf("events -o json: %v\n%s", err, out)
		}
		evs = append(evs, ev)
	}
	return evs
}

func eventIDs(evs []api.Event) []int64 {
	out := make([]int64, len(evs))
	for i, e := range evs {
		out[i] = e.ID
	}
	return out
}

// setEmptyState makes the server store one "state" event.
func setEmptyState(t *testing.T, f *fleet, id string) {
	t.Helper()
	f.op("state", "set", "-f", writeState(t, f, id, "id: "+id+"\napps: []\n"))
}

// TestEventsFollowResumes: `events --follow` keeps streaming across a
// server restart, resuming from its last id with no gap and no
// duplicate.
func TestEventsFollowResumes(t *testing.T) {
	f := newFleet(t)
	setEmptyState(t, f, "d1")
	cmd := exec.Command(droverBin, "events", "--follow", "-o", "json")
	cmd.Env = append(os.Environ(), f.adminEnv()...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	var (
		mu  sync.Mutex
		got []api.Event
	)
	go func() {
		dec := json.NewDecoder(bufio.NewReader(stdout))
		for {
			var ev api.Event
			if err := dec.Decode(&ev); err != nil {
				return
			}
			mu.Lock()
			got = append(got, ev)
			mu.Unlock()
		}
	}()
	waitCount := func(n int) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			mu.Lock()
			c := len(got)
			mu.Unlock()
			if c >= n {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("follower printed %d events, want %d; stderr:\n%s", len(got), n, stderr.String())
	}
	waitCount(1)
	setEmptyState(t, f, "d2")
	waitCount(2)
	f.restartServer() // drops the stream
	for i := range 3 {
		setEmptyState(t, f, fmt.Sprintf("d%d", 3+i))
	}
	waitCount(5)
	time.Sleep(200 * time.Millisecond) // a duplicate would show up here
	mu.Lock()
	gotIDs := eventIDs(got)
	mu.Unlock()
	want := eventIDs(storedEvents(t, f))
	if !slices.Equal(gotIDs, want) {
		t.Errorf("followed ids = %v, want every stored id once, in order: %v", gotIDs, want)
	}
	if !strings.Contains(stderr.String(), "resuming from id") {
		t.Errorf("follower did not say it resumed; stderr:\n%s", stderr.String())
	}
}

// TestEventsAMQPBrokerRestart converges a device with the server
// publishing to the real RabbitMQ, stops the broker's application in the
// middle and starts it again, and checks every stored event reached a
// consumer, in id order, duplicates only as at-least-once allows.
func TestEventsAMQPBrokerRestart(t *testing.T) {
	url := os.Getenv("DROVER_TEST_AMQP")
	if url == "" {
		t.Skip("set DROVER_TEST_AMQP (e.g. amqp://guest:guest@127.0.0.1:5672/) to run the RabbitMQ test")
	}
	if _, err := exec.LookPath("rabbitmqctl"); err != nil {
		t.Skip("rabbitmqctl not found: the broker restart test needs it")
	}
	exchange, queue, setup := testQueue(t, url)
	t.Cleanup(func() { _ = exec.Command("rabbitmqctl", "start_app").Run() }) // never leave the shared broker down (runs before the queue is removed)

	f := newFleetWith(t, "--amqp-url", url, "--amqp-exchange", exchange)
	files := buildFleetPackages(t, f)
	f.op(append([]string{"pkg", "push"}, files...)...)
	a := f.newAgent("alpha")
	a.start()
	f.waitFor("alpha", "reported", func(d deviceJSON) bool { return len(d.SystemTags) > 0 })
	f.op("state", "set", "-f", writeState(t, f, "alpha", "id: alpha\napps:\n  - name: com.example:tool\n    version: 1.0.0\n"))
	f.waitConverged("alpha", "com.example:tool=1.0.0")

	if out, err := exec.Command("rabbitmqctl", "stop_app").CombinedOutput(); err != nil {
		t.Fatalf("rabbitmqctl stop_app: %v\n%s", err, out)
	}
	// The server keeps working while the broker is down.
	f.op("state", "set", "-f", writeState(t, f, "alpha", "id: alpha\napps:\n  - name: com.example:tool\n    version: 1.1.0\n"))
	f.waitConverged("alpha", "com.example:lib=1.0.0", "com.example:tool=1.1.0")
	if out, err := exec.Command("rabbitmqctl", "start_app").CombinedOutput(); err != nil {
		t.Fatalf("rabbitmqctl start_app: %v\n%s", err, out)
	}
	stored := storedEvents(t, f)
	want := eventIDs(stored)
	kinds := map[string]bool{}
	for _, e := range stored {
		kinds[e.Kind] = true
	}
	for _, k := range []string{"package", "device-seen", "state", "plan", "step-start", "step-done", "converged"} {
		if !kinds[k] {
			t.Errorf("no %s event stored; kinds: %v", k, kinds)
		}
	}

	c, ch := setup()
	defer c.Close()
	got, dups := consumeEvents(t, ch, queue, want, f.logs.String)
	// New events (hooks, the agent's reports) may have arrived since we
	// listed: compare the prefix we listed.
	if !slices.Equal(got[:len(want)], want) {
		t.Errorf("consumer ids (duplicates dropped) = %v, want stored ids in order %v", got, want)
	}
	t.Logf("%d events, %d duplicates", len(want), dups)
}

// testQueue declares, on the broker at url, a durable topic exchange and
// a durable queue bound to all of it (persistent messages survive a
// broker restart), both removed when the test ends; setup connects.
func testQueue(t *testing.T, url string) (exchange, queue string, setup func() (*amqp.Connection, *amqp.Channel)) {
	t.Helper()
	suffix := fmt.Sprint(time.Now().UnixNano())
	exchange, queue = "drover.test."+suffix, "drover-test-"+suffix
	setup = func() (*amqp.Connection, *amqp.Channel) {
		conn, err := amqp.Dial(url)
		if err != nil {
			t.Fatalf("dial %s: %v", url, err)
		}
		ch, err := conn.Channel()
		if err != nil {
			t.Fatal(err)
		}
		return conn, ch
	}
	conn, ch := setup()
	defer conn.Close()
	if err := ch.ExchangeDeclare(exchange, "topic", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(queue, "#", exchange, false, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c, ch := setup()
		defer c.Close()
		_, _ = ch.QueueDelete(queue, false, false, false)
		_ = ch.ExchangeDelete(exchange, false, false)
	})
	return exchange, queue, setup
}

// consumeEvents reads the queue until it has every event of want (30 s
// at most), checking that each message carries its event's id and
// routing key, and returns the ids in the order they came, duplicates
// dropped, and how many duplicates there were.
func consumeEvents(t *testing.T, ch *amqp.Channel, queue string, want []int64, serverLog func() string) (got []int64, dups int) {
	t.Helper()
	msgs, err := ch.Consume(queue, "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int64]bool{}
	deadline := time.After(30 * time.Second)
	for !containsAll(seen, want) {
		select {
		case d := <-msgs:
			var ev api.Event
			if err := json.Unmarshal(d.Body, &ev); err != nil || ev.ID == 0 || d.MessageId != fmt.Sprint(ev.ID) {
				t.Fatalf("message without its event id: %v %q", err, d.Body)
			}
			if key := ev.Kind + "." + orDash(ev.Device); d.RoutingKey != key {
				t.Errorf("event %d routing key = %q, want %q", ev.ID, d.RoutingKey, key)
			}
			if seen[ev.ID] {
				dups++
				continue
			}
			seen[ev.ID] = true
			got = append(got, ev.ID)
		case <-deadline:
			var missing []int64
			for _, id := range want {
				if !seen[id] {
					missing = append(missing, id)
				}
			}
			t.Fatalf("after 30s the consumer misses events %v of %d stored\nserver log:\n%s", missing, len(want), tail(serverLog(), 3000))
		}
	}
	return got, dups
}

func containsAll(seen map[int64]bool, ids []int64) bool {
	for _, id := range ids {
		if !seen[id] {
			return false
		}
	}
	return true
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
