package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/client"
)

func eventsCmd(e *env) *cobra.Command {
	var (
		conn   connFlags
		q      client.EventQuery
		follow bool
		format string
	)
	c := &cobra.Command{
		Use:   "events [--follow] [--device ID] [--min-priority low|medium|high]",
		Short: "Print stored events, oldest first; --follow keeps printing new ones",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(format, outText, outJSON); err != nil {
				return err
			}
			if q.MinPriority != "" && api.PriorityRank(q.MinPriority) == 0 {
				return usagef("--min-priority %q: want low, medium or high", q.MinPriority)
			}
			cl, err := conn.client()
			if err != nil {
				return err
			}
			defer cl.Close()
			ctx := cmd.Context()
			for {
				q.Wait = follow
				evs, err := cl.Events(ctx, q)
				if err != nil {
					if ctx.Err() != nil {
						return nil
					}
					return err
				}
				for _, ev := range evs {
					if format == outJSON {
						if err := printAs(e.stdout, outJSON, ev); err != nil {
							return err
						}
					} else {
						printEvent(e, ev)
					}
					q.After = ev.ID
				}
				if !follow && len(evs) < 1000 {
					return nil
				}
			}
		},
	}
	conn.register(c)
	c.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new events")
	c.Flags().StringVar(&q.Device, "device", "", "only this device's events")
	c.Flags().StringVar(&q.Kind, "kind", "", "only events of this kind")
	c.Flags().StringVar(&q.MinPriority, "min-priority", "", "hide events below this priority: low, medium or high")
	c.Flags().Int64Var(&q.After, "after", 0, "only events after this id")
	addOutputFlag(c, &format, outText)
	return c
}

func printEvent(e *env, ev api.Event) {
	dev := ev.Device
	if dev == "" {
		dev = "-"
	}
	fmt.Fprintf(e.stdout, "%d %s %-5s %-6s %-12s %s %s\n", ev.ID, ev.Time.Local().Format(time.DateTime), ev.Level, ev.Priority, ev.Kind, dev, ev.Message)
}
