package publish

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/drover-dev/drover/internal/api"
)

// memOutbox is an in-memory outbox for the publisher's tests.
type memOutbox struct {
	mu  sync.Mutex
	evs []api.Event
}

func (m *memOutbox) add(evs ...api.Event) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.evs = append(m.evs, evs...)
}

func (m *memOutbox) OutboxNext(ctx context.Context, after int64, limit int) ([]api.Event, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []api.Event
	for _, e := range m.evs {
		if e.ID > after && len(out) < limit {
			out = append(out, e)
		}
	}
	return out, nil
}

func (m *memOutbox) OutboxDelete(ctx context.Context, upTo int64) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for n < len(m.evs) && m.evs[n].ID <= upTo {
		n++
	}
	m.evs = m.evs[n:]
	return int64(n), nil
}

func (m *memOutbox) depth() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.evs)
}

func TestRoutingKey(t *testing.T) {
	tests := []struct {
		ev   api.Event
		want string
	}{
		{api.Event{Kind: "step-done", Device: "dev-1"}, "step-done.dev-1"},
		{api.Event{Kind: "package"}, "package.-"},
		{api.Event{Kind: "send", Device: "dev-1", Payload: []byte(`{"routing_key":"billing.usage"}`)}, "app.billing.usage"},
		{api.Event{Kind: "send", Device: "dev-1"}, "app.dev-1"},
		{api.Event{Kind: "send", Device: "dev-1", Payload: []byte(`not json`)}, "app.dev-1"},
	}
	for _, tt := range tests {
		if got := RoutingKey(tt.ev, "app"); got != tt.want {
			t.Errorf("RoutingKey(%+v) = %q, want %q", tt.ev, got, tt.want)
		}
	}
}

func TestNewRefusesBadURL(t *testing.T) {
	for _, u := range []string{"", "http://x", "amqp://host:notaport/"} {
		if _, err := New(Config{URL: u}, &memOutbox{}); err == nil {
			t.Errorf("New(%q) = nil error, want one", u)
		}
	}
}

// TestBrokerUnreachable: nothing listens there; the publisher keeps
// retrying and never deletes from the outbox.
func TestBrokerUnreachable(t *testing.T) {
	box := &memOutbox{}
	box.add(api.Event{ID: 1, Kind: "log"})
	p, err := New(Config{URL: "amqp://guest:guest@127.0.0.1:1/", MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}, box)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := p.Run(ctx); err != nil {
		t.Errorf("Run = %v, want nil when stopped", err)
	}
	if p.Connected() || box.depth() != 1 {
		t.Errorf("after an unreachable broker: connected %v, outbox %d; want false, 1", p.Connected(), box.depth())
	}
}

// amqpURL returns the test broker or skips.
func amqpURL(t *testing.T) string {
	u := os.Getenv("DROVER_TEST_AMQP")
	if u == "" {
		t.Skip("set DROVER_TEST_AMQP (e.g. amqp://guest:guest@127.0.0.1:5672/) to run tests against RabbitMQ")
	}
	return u
}

// consumer binds a fresh exclusive queue to exchange with key.
func consumer(t *testing.T, url, exchange, key string) <-chan amqp.Delivery {
	t.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.ExchangeDeclare(exchange, "topic", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if c, err := amqp.Dial(url); err == nil {
			if ch, err := c.Channel(); err == nil {
				_ = ch.ExchangeDelete(exchange, false, false)
			}
			c.Close()
		}
	})
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(q.Name, key, exchange, false, nil); err != nil {
		t.Fatal(err)
	}
	d, err := ch.Consume(q.Name, "", true, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestPublishInOrderWithConfirms(t *testing.T) {
	url := amqpURL(t)
	exchange := fmt.Sprintf("drover.test.%d", time.Now().UnixNano())
	deliveries := consumer(t, url, exchange, "#")
	box := &memOutbox{}
	const n = 1200 // more than two batches
	for i := int64(1); i <= n; i++ {
		box.add(api.Event{ID: i, Kind: "step-progress", Device: "dev-1", Level: "info", Priority: "low"})
	}
	p, err := New(Config{URL: url, Exchange: exchange, Batch: 500}, box)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	timeout := time.After(20 * time.Second)
	for want := int64(1); want <= n; want++ {
		select {
		case d := <-deliveries:
			var ev api.Event
			if err := json.Unmarshal(d.Body, &ev); err != nil {
				t.Fatalf("delivery body: %v", err)
			}
			if ev.ID != want || d.MessageId != fmt.Sprint(want) || d.RoutingKey != "step-progress.dev-1" {
				t.Fatalf("delivery = id %d (message id %s, key %s), want id %d, key step-progress.dev-1", ev.ID, d.MessageId, d.RoutingKey, want)
			}
			if d.DeliveryMode != amqp.Persistent {
				t.Errorf("delivery mode = %d, want persistent", d.DeliveryMode)
			}
		case <-timeout:
			t.Fatalf("only %d of %d events arrived", want-1, n)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for box.depth() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if box.depth() != 0 || p.Published() != n {
		t.Errorf("after delivery: outbox %d, published %d; want 0, %d", box.depth(), p.Published(), n)
	}
	// New events are picked up on Wake.
	box.add(api.Event{ID: n + 1, Kind: "send", Device: "dev-1", Payload: []byte(`{"routing_key":"x.y"}`)})
	p.Wake()
	select {
	case d := <-deliveries:
		if d.RoutingKey != "send.x.y" {
			t.Errorf("send routing key = %q, want send.x.y", d.RoutingKey)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("event after Wake did not arrive")
	}
}
