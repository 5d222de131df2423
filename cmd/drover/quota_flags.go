package main

import (
	"time"

	"github.com/spf13/cobra"

	"github.com/drover-dev/drover/internal/server"
)

// quotaFlags are the per-device quota flags of `drover server`.
type quotaFlags struct {
	events, reports, maxEvent int
	eventBytes                int64
	window                    time.Duration
}

func (f *quotaFlags) register(c *cobra.Command) {
	fl := c.Flags()
	fl.IntVar(&f.events, "quota-events", 1000, "most events one device may post per quota window")
	fl.Int64Var(&f.eventBytes, "quota-event-bytes", 8_000_000, "most bytes of events (messages and payloads) one device may post per quota window")
	fl.IntVar(&f.maxEvent, "quota-max-event", 64<<10, "most bytes of one event: a longer message is cut, a larger payload dropped")
	fl.IntVar(&f.reports, "quota-reports", 120, "most reports one device may send per quota window")
	fl.DurationVar(&f.window, "quota-window", time.Minute, "the period quotas are counted over")
}

func (f *quotaFlags) config() (server.QuotaConfig, error) {
	if f.events < 1 || f.eventBytes < 1 || f.maxEvent < 1 || f.reports < 1 || f.window <= 0 {
		return server.QuotaConfig{}, usagef("--quota-events, --quota-event-bytes, --quota-max-event, --quota-reports and --quota-window must be positive")
	}
	c := server.QuotaConfig{Events: f.events, EventBytes: f.eventBytes, MaxEvent: f.maxEvent, Reports: f.reports, Window: f.window}
	if err := c.Validate(); err != nil {
		return server.QuotaConfig{}, usagef("--quota-event-bytes: %v", err)
	}
	return c, nil
}
