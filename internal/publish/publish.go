// Package publish drains the store's event outbox to an AMQP 0-9-1 topic
// exchange, in ID order, with publisher confirms: an event leaves the
// outbox only after the broker confirmed it, so nothing stored is lost.
// While the broker is away the publisher reconnects with exponential
// backoff and jitter, and the outbox grows; when it returns, the outbox
// drains. A batch interrupted half-way is published again from its first
// unconfirmed event, so a consumer may see an event twice (AMQP's
// at-least-once) but never out of order once it drops IDs it has seen.
package publish

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/drover-dev/drover/internal/api"
)

// Outbox is what the publisher needs of the store.
type Outbox interface {
	OutboxNext(ctx context.Context, after int64, limit int) ([]api.Event, error)
	OutboxDelete(ctx context.Context, upTo int64) (int64, error)
}

// Config holds the publisher's settings.
type Config struct {
	// URL is the broker, amqp://user:pass@host:port/vhost.
	URL string
	// Exchange is the topic exchange; default "drover.events". It is
	// declared durable.
	Exchange string
	// SendPrefix goes before the routing key a `send` names; default
	// "send".
	SendPrefix string
	// Batch is how many events are published before waiting for their
	// confirms; default 500.
	Batch int
	// MinBackoff and MaxBackoff bound the reconnect delay; defaults
	// 200ms and 30s.
	MinBackoff, MaxBackoff time.Duration
	// ConfirmTimeout bounds the wait for a batch's confirms; default 30s.
	ConfirmTimeout time.Duration
	// Published, if set, is called after each confirmed batch with its
	// events (for metrics and tests); it must not block.
	Published func(evs []api.Event)
	Logger    *slog.Logger
}

// Publisher publishes the outbox. Create it with New, start Run, and call
// Wake after new events are stored.
type Publisher struct {
	cfg  Config
	log  *slog.Logger
	box  Outbox
	wake chan struct{}

	connected atomic.Bool
	published atomic.Int64
	mu        sync.Mutex
	lastErr   error
}

// New returns a publisher of box. It does not connect: Run does.
func New(cfg Config, box Outbox) (*Publisher, error) {
	if cfg.URL == "" {
		return nil, errors.New("publish: no broker URL")
	}
	if _, err := amqp.ParseURI(cfg.URL); err != nil {
		return nil, fmt.Errorf("broker URL: %w", err)
	}
	if cfg.Exchange == "" {
		cfg.Exchange = "drover.events"
	}
	if cfg.SendPrefix == "" {
		cfg.SendPrefix = "send"
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 500
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 200 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	if cfg.ConfirmTimeout <= 0 {
		cfg.ConfirmTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Publisher{cfg: cfg, log: cfg.Logger, box: box, wake: make(chan struct{}, 1)}, nil
}

// Wake tells the publisher new events are in the outbox. It never blocks.
func (p *Publisher) Wake() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Connected reports whether the publisher holds a broker connection now.
func (p *Publisher) Connected() bool { return p.connected.Load() }

// Published returns how many events the broker confirmed so far.
func (p *Publisher) Published() int64 { return p.published.Load() }

// RoutingKey is the key ev is published with: "<kind>.<device>" ("-"
// for events of no device); a send event uses "<prefix>.<key>" with the
// routing_key of its payload, or "<prefix>.<device>" when it gave none.
func RoutingKey(ev api.Event, sendPrefix string) string {
	dev := ev.Device
	if dev == "" {
		dev = "-"
	}
	if ev.Kind == api.KindSend {
		var p struct {
			RoutingKey string `json:"routing_key"`
		}
		_ = json.Unmarshal(ev.Payload, &p)
		key := strings.TrimSpace(p.RoutingKey)
		if key == "" {
			key = dev
		}
		return sendPrefix + "." + key
	}
	return ev.Kind + "." + dev
}

// Run publishes until ctx is done. It returns only then, with nil: a
// broker that is down is retried, never fatal.
func (p *Publisher) Run(ctx context.Context) error {
	delay := p.cfg.MinBackoff
	for ctx.Err() == nil {
		err := p.session(ctx)
		p.connected.Store(false)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errProgress) {
			delay = p.cfg.MinBackoff // it worked for a while: retry soon
			continue
		}
		p.mu.Lock()
		changed := p.lastErr == nil || p.lastErr.Error() != err.Error()
		p.lastErr = err
		p.mu.Unlock()
		// Full jitter over the upper half, so many servers do not
		// reconnect in step.
		d := delay/2 + rand.N(delay/2+1)
		if changed {
			p.log.Warn("amqp broker unavailable; events wait in the outbox", "err", err, "retry_in", d.Round(time.Millisecond))
		} else {
			p.log.Debug("amqp broker still unavailable", "err", err, "retry_in", d.Round(time.Millisecond))
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		delay = min(delay*2, p.cfg.MaxBackoff)
	}
	return nil
}

// errProgress marks a session that published something before it ended.
var errProgress = errors.New("connection lost after progress")

// session connects once and publishes until the connection fails or ctx
// is done.
func (p *Publisher) session(ctx context.Context) error {
	conn, err := amqp.DialConfig(p.cfg.URL, amqp.Config{
		Heartbeat: 10 * time.Second,
		Dial:      amqp.DefaultDial(5 * time.Second),
		Properties: amqp.Table{
			"connection_name": "drover server",
		},
	})
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open channel: %w", err)
	}
	defer ch.Close()
	if err := ch.ExchangeDeclare(p.cfg.Exchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare exchange %s: %w", p.cfg.Exchange, err)
	}
	if err := ch.Confirm(false); err != nil {
		return fmt.Errorf("confirm mode: %w", err)
	}
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	chClosed := ch.NotifyClose(make(chan *amqp.Error, 1))
	p.connected.Store(true)
	p.mu.Lock()
	if p.lastErr != nil {
		p.log.Info("amqp broker connected; draining the outbox", "exchange", p.cfg.Exchange)
		p.lastErr = nil
	}
	p.mu.Unlock()
	progressed := false
	poll := time.NewTicker(time.Second) // fallback for a lost Wake
	defer poll.Stop()
	for {
		n, err := p.drain(ctx, ch)
		if n > 0 {
			progressed = true
		}
		if err != nil {
			if progressed {
				p.log.Warn("amqp publish interrupted; resuming from the first unconfirmed event", "err", err)
				return errProgress
			}
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e := <-closed:
			if progressed {
				return errProgress
			}
			return fmt.Errorf("connection closed: %v", e)
		case e := <-chClosed:
			if progressed {
				return errProgress
			}
			return fmt.Errorf("channel closed: %v", e)
		case <-p.wake:
		case <-poll.C:
		}
	}
}

// drain publishes the outbox until it is empty, one confirmed batch at a
// time, and returns how many events it published.
func (p *Publisher) drain(ctx context.Context, ch *amqp.Channel) (int, error) {
	total := 0
	for {
		evs, err := p.box.OutboxNext(ctx, 0, p.cfg.Batch)
		if err != nil {
			return total, fmt.Errorf("read outbox: %w", err)
		}
		if len(evs) == 0 {
			return total, nil
		}
		if err := p.publishBatch(ctx, ch, evs); err != nil {
			return total, err
		}
		total += len(evs)
	}
}

// publishBatch publishes evs in order and waits for every confirm; only
// then are they deleted from the outbox. A confirmed prefix of a failed
// batch is deleted too, so the retry starts at the first unconfirmed one.
func (p *Publisher) publishBatch(ctx context.Context, ch *amqp.Channel, evs []api.Event) error {
	confs := make([]*amqp.DeferredConfirmation, 0, len(evs))
	for _, ev := range evs {
		body, err := json.Marshal(ev)
		if err != nil {
			return fmt.Errorf("encode event %d: %w", ev.ID, err)
		}
		id := strconv.FormatInt(ev.ID, 10)
		c, err := ch.PublishWithDeferredConfirmWithContext(ctx, p.cfg.Exchange, RoutingKey(ev, p.cfg.SendPrefix), false, false, amqp.Publishing{
			ContentType:  "application/json",
			DeliveryMode: amqp.Persistent,
			MessageId:    id,
			Timestamp:    ev.Time,
			Type:         ev.Kind,
			AppId:        "drover",
			Headers:      amqp.Table{"drover-event-id": ev.ID},
			Body:         body,
		})
		if err != nil {
			p.deleteConfirmed(ctx, evs, confs)
			return fmt.Errorf("publish event %d: %w", ev.ID, err)
		}
		confs = append(confs, c)
	}
	wctx, cancel := context.WithTimeout(ctx, p.cfg.ConfirmTimeout)
	defer cancel()
	for i, c := range confs {
		ok, err := c.WaitContext(wctx)
		if err != nil || !ok {
			p.deleteConfirmed(ctx, evs, confs[:i])
			if err == nil {
				err = errors.New("broker refused (nack)")
			}
			return fmt.Errorf("confirm of event %d: %w", evs[i].ID, err)
		}
	}
	if _, err := p.box.OutboxDelete(ctx, evs[len(evs)-1].ID); err != nil {
		return fmt.Errorf("delete confirmed events: %w", err)
	}
	p.published.Add(int64(len(evs)))
	if p.cfg.Published != nil {
		p.cfg.Published(evs)
	}
	return nil
}

// deleteConfirmed deletes the longest prefix of evs whose confirms in
// confs are acks.
func (p *Publisher) deleteConfirmed(ctx context.Context, evs []api.Event, confs []*amqp.DeferredConfirmation) {
	n := 0
	for _, c := range confs {
		if !c.Acked() {
			break
		}
		n++
	}
	if n == 0 {
		return
	}
	if _, err := p.box.OutboxDelete(ctx, evs[n-1].ID); err != nil {
		p.log.Warn("delete confirmed events", "err", err)
		return
	}
	p.published.Add(int64(n))
	if p.cfg.Published != nil {
		p.cfg.Published(evs[:n])
	}
}
