package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/publish"
	"github.com/drover-dev/drover/internal/store/sqlite"
)

// EventsConfig sets up the events benchmark.
type EventsConfig struct {
	URL    string // AMQP broker
	Events int    // events in the throughput run
	Probes int    // single events timed from store to consumer
	Dir    string // where the SQLite store goes (default: temp)
	Out    io.Writer
}

// Events measures the outbox to RabbitMQ: events per second from a full
// outbox to a consumer, then the delay from AppendEvents (the state
// change's commit) to a consumer receiving the event, one at a time.
func Events(ctx context.Context, cfg EventsConfig) error {
	dir, err := os.MkdirTemp(cfg.Dir, "drover-bench-events-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	st, err := sqlite.Open(ctx, filepath.Join(dir, "drover.db"), nil)
	if err != nil {
		return err
	}
	defer st.Close()
	st.SetOutbox(true)
	exchange := fmt.Sprintf("drover.bench.%d", time.Now().UnixNano())
	conn, err := amqp.Dial(cfg.URL)
	if err != nil {
		return fmt.Errorf("dial broker: %w", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	defer ch.ExchangeDelete(exchange, false, false)
	if err := ch.ExchangeDeclare(exchange, "topic", true, false, false, false, nil); err != nil {
		return err
	}
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		return err
	}
	if err := ch.QueueBind(q.Name, "#", exchange, false, nil); err != nil {
		return err
	}
	msgs, err := ch.Consume(q.Name, "", true, true, false, false, nil)
	if err != nil {
		return err
	}
	// Fill the outbox first, then time draining it.
	batch := make([]api.Event, 0, 500)
	for i := 0; i < cfg.Events; i++ {
		batch = append(batch, api.Event{Time: time.Now(), Device: fmt.Sprintf("dev-%d", i%100), Kind: "step-progress",
			Payload: []byte(`{"bytes_done":1,"bytes_total":2}`)})
		if len(batch) == cap(batch) || i == cfg.Events-1 {
			if _, err := st.AppendEvents(ctx, batch); err != nil {
				return err
			}
			batch = batch[:0]
		}
	}
	pub, err := publish.New(publish.Config{URL: cfg.URL, Exchange: exchange}, st)
	if err != nil {
		return err
	}
	pctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	start := time.Now()
	go func() { pub.Run(pctx); close(done) }()
	defer func() { cancel(); <-done }()
	for range cfg.Events {
		select {
		case <-msgs:
		case <-time.After(30 * time.Second):
			return fmt.Errorf("events benchmark: consumer stalled")
		}
	}
	took := time.Since(start)
	fmt.Fprintf(cfg.Out, "throughput: %d events in %s = %.0f events/s (outbox in SQLite, confirms, one consumer)\n",
		cfg.Events, secs(took), float64(cfg.Events)/took.Seconds())
	var delays []time.Duration
	for i := range cfg.Probes {
		t0 := time.Now()
		if _, err := st.AppendEvents(ctx, []api.Event{{Time: t0, Device: "probe", Kind: "log", Message: fmt.Sprint(i)}}); err != nil {
			return err
		}
		pub.Wake()
		select {
		case d := <-msgs:
			var ev api.Event
			_ = json.Unmarshal(d.Body, &ev)
			delays = append(delays, time.Since(t0))
		case <-time.After(10 * time.Second):
			return fmt.Errorf("events benchmark: probe %d not delivered", i)
		}
	}
	slices.Sort(delays)
	p99 := delays[min(len(delays)-1, len(delays)*99/100)]
	fmt.Fprintf(cfg.Out, "delay store commit -> consumer: median %s, p99 %s (%d probes)\n",
		fmt.Sprintf("%.1fms", float64(median(delays).Microseconds())/1000), fmt.Sprintf("%.1fms", float64(p99.Microseconds())/1000), len(delays))
	return nil
}
