package main

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/drover-dev/drover/internal/agent"
	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/client"
	"github.com/drover-dev/drover/internal/output"
)

func eventsCmd(e *env) *cobra.Command {
	var (
		conn   connFlags
		q      client.EventQuery
		since  string
		follow bool
		format string
	)
	c := &cobra.Command{
		Use:   "events [--follow] [--device ID] [--kind K] [--min-priority P] [--since ID|DURATION] [-o text|yaml|json]",
		Short: "Print stored events, oldest first; --follow streams new ones live",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(format, outText, outYAML, outJSON); err != nil {
				return err
			}
			if q.MinPriority != "" && api.PriorityRank(q.MinPriority) == 0 {
				return usagef("--min-priority %q: want low, medium or high", q.MinPriority)
			}
			if since != "" {
				if n, err := strconv.ParseInt(since, 10, 64); err == nil && n >= 0 {
					q.After = max(q.After, n)
				} else if d, err := parseDays(since); err == nil && d > 0 {
					q.Since = time.Now().Add(-d)
				} else {
					return usagef("--since %q: want an event id or a duration like 10m, 2h or 3d", since)
				}
			}
			cl, err := conn.client()
			if err != nil {
				return err
			}
			defer cl.Close()
			out, err := newEventPrinter(e, format, follow, follow && q.Device != "")
			if err != nil {
				return err
			}
			defer out.close()
			ctx := cmd.Context()
			if !follow {
				if err := cl.EachEvent(ctx, q, out.print); err != nil {
					return err
				}
				return out.flush()
			}
			return cl.FollowEvents(ctx, q, out.print, func(msg string) { fmt.Fprintln(e.stderr, msg) })
		},
	}
	conn.register(c)
	c.Flags().BoolVarP(&follow, "follow", "f", false, "keep streaming new events; resumes by itself after a dropped connection")
	c.Flags().StringVar(&q.Device, "device", "", "only this device's events")
	c.Flags().StringVar(&q.Kind, "kind", "", "only events of this kind")
	c.Flags().StringVar(&q.MinPriority, "min-priority", "", "hide events below this priority: low, medium or high")
	c.Flags().StringVar(&since, "since", "", "only events after this id, or of the last DURATION (10m, 2h, 3d)")
	c.Flags().Int64Var(&q.After, "after", 0, "only events after this id")
	_ = c.Flags().MarkHidden("after")
	addOutputFlag(c, &format, outText)
	return c
}

// eventPrinter prints events: a table (a list) or lines under a header (a
// stream) as text, one JSON array or YAML list (a list), JSON Lines or
// YAML documents (a stream); on a terminal, step-progress events of one
// device followed show as progress bars.
type eventPrinter struct {
	e      *env
	format string
	table  *output.Table
	list   []any
	stream *output.Stream
	bars   *output.Bars
}

func newEventPrinter(e *env, format string, follow, barsWanted bool) (*eventPrinter, error) {
	p := &eventPrinter{e: e, format: format}
	switch {
	case format != outText && follow:
		st, err := output.NewStream(e.stdout, format)
		if err != nil {
			return nil, usageError{err}
		}
		p.stream = st
	case format == outText && !follow:
		p.table = output.NewTable(e.stdout, eventHeader...)
	case format == outText:
		if barsWanted && output.IsTerminal(e.stdout) {
			p.bars = output.NewBars(e.stdout)
		}
		if err := p.line(fmt.Sprintf(eventLineFormat, toAny(eventHeader)...)); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// eventHeader names the columns of events as text.
var eventHeader = []string{"ID", "TIME", "LEVEL", "PRIORITY", "KIND", "DEVICE", "MESSAGE"}

// eventLineFormat aligns a followed stream's columns, which a table
// cannot: rows come one at a time.
const eventLineFormat = "%-6s  %-19s  %-5s  %-8s  %-12s  %-12s  %s"

func toAny(xs []string) []any {
	out := make([]any, len(xs))
	for i, x := range xs {
		out[i] = x
	}
	return out
}

func (p *eventPrinter) line(s string) error {
	if p.bars != nil {
		return p.bars.Println(s)
	}
	_, err := fmt.Fprintln(p.e.stdout, s)
	return err
}

func (p *eventPrinter) print(ev api.Event) error {
	switch {
	case p.stream != nil:
		return p.stream.Write(eventView(ev, p.format))
	case p.format != outText:
		p.list = append(p.list, eventView(ev, p.format))
		return nil
	case p.table != nil:
		p.table.Row(eventCells(ev)...)
		return nil
	}
	if p.bars != nil {
		switch ev.Kind {
		case agent.KindStepProgress:
			var pr agent.Progress
			if json.Unmarshal(ev.Payload, &pr) == nil && pr.BytesTotal > 0 {
				p.bars.Update(ev.Package, pr.Phase, pr.BytesDone, pr.BytesTotal)
				return nil
			}
		case api.KindStepDone, api.KindStepFailed:
			p.bars.Finish(ev.Package, ev.Kind == api.KindStepDone)
		}
	}
	return p.line(fmt.Sprintf(eventLineFormat, toAny(eventCells(ev))...))
}

// flush prints what a list gathered.
func (p *eventPrinter) flush() error {
	if p.table != nil {
		return p.table.Flush()
	}
	if p.format != outText && p.stream == nil {
		if p.list == nil {
			p.list = []any{}
		}
		return printAs(p.e.stdout, p.format, p.list)
	}
	return nil
}

func (p *eventPrinter) close() {
	if p.bars != nil {
		p.bars.Close()
	}
}

// eventView is an event as JSON prints it, or for YAML with its payload
// decoded, so it reads as YAML too.
func eventView(ev api.Event, format string) any {
	if format != outYAML {
		return ev
	}
	var payload any
	if len(ev.Payload) > 0 {
		_ = json.Unmarshal(ev.Payload, &payload)
	}
	return struct {
		api.Event `yaml:",inline"`
		Payload   any `yaml:"payload,omitempty"`
	}{ev, payload}
}

func eventCells(ev api.Event) []string {
	msg := ev.Message
	if ev.Kind == agent.KindStepProgress && msg == "" {
		var pr agent.Progress
		if json.Unmarshal(ev.Payload, &pr) == nil {
			msg = fmt.Sprintf("%s %s %d/%d files, %s of %s", ev.Package, pr.Phase, pr.FilesDone, pr.FilesTotal, output.Bytes(pr.BytesDone), output.Bytes(pr.BytesTotal))
		}
	}
	return []string{strconv.FormatInt(ev.ID, 10), ev.Time.Local().Format(time.DateTime), ev.Level, ev.Priority, ev.Kind, orNone(ev.Device), oneLineText(msg)}
}

func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// oneLineText keeps a message from forging rows.
func oneLineText(s string) string {
	return strings.NewReplacer("\n", " ", "\r", " ", "\t", " ").Replace(s)
}
