package main

import (
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/drover-dev/drover/internal/server"
)

// eventFlags are the event flags of `drover server`.
type eventFlags struct {
	amqpURL, amqpExchange, amqpSendPrefix string
	retention                             string
	keep                                  int
	outboxMax                             int64
	hookTimeout                           time.Duration
}

func (f *eventFlags) register(c *cobra.Command) {
	fl := c.Flags()
	fl.StringVar(&f.amqpURL, "amqp-url", "", "publish every event to this AMQP broker (amqp://user:pass@host:5672/vhost)")
	fl.StringVar(&f.amqpExchange, "amqp-exchange", "drover.events", "AMQP topic exchange for events")
	fl.StringVar(&f.amqpSendPrefix, "amqp-send-prefix", "send", "routing-key prefix of the messages of drover send")
	fl.StringVar(&f.retention, "event-retention", "30d", "remove events older than this (e.g. 30d, 12h; 0 = keep by age)")
	fl.IntVar(&f.keep, "event-keep", 1_000_000, "keep at most this many events, the newest (0 = no limit by count)")
	fl.Int64Var(&f.outboxMax, "outbox-max", 1_000_000, "most events waiting for the AMQP broker; a warning event is emitted past 80%")
	fl.DurationVar(&f.hookTimeout, "hook-timeout", 30*time.Second, "time limit of each hook in <data>/hooks/<kind>-post.d/")
}

func (f *eventFlags) config(data string) (server.EventsConfig, error) {
	ret, err := parseDays(f.retention)
	if err != nil {
		return server.EventsConfig{}, usagef("--event-retention %q: want a duration like 30d or 12h", f.retention)
	}
	if f.keep < 0 || f.outboxMax < 1 || f.hookTimeout <= 0 {
		return server.EventsConfig{}, usagef("--event-keep must be >= 0, --outbox-max >= 1 and --hook-timeout > 0")
	}
	if f.amqpURL != "" && !strings.HasPrefix(f.amqpURL, "amqp://") && !strings.HasPrefix(f.amqpURL, "amqps://") {
		return server.EventsConfig{}, usagef("--amqp-url %s: want amqp://user:pass@host:port/vhost", redact(f.amqpURL))
	}
	return server.EventsConfig{
		AMQPURL: f.amqpURL, AMQPExchange: f.amqpExchange, AMQPSendPrefix: f.amqpSendPrefix,
		Retention: ret, Keep: f.keep, OutboxMax: f.outboxMax,
		HookDir: server.HookDir(data), HookTimeout: f.hookTimeout,
	}, nil
}

// parseDays parses a Go duration, or a whole number of days like "30d".
func parseDays(s string) (time.Duration, error) {
	if s == "" || s == "0" {
		return 0, nil
	}
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(d)
		if err != nil || n < 0 {
			return 0, strconv.ErrSyntax
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, strconv.ErrSyntax
	}
	return d, nil
}
