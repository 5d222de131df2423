package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/spf13/cobra"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/pki"
)

// eventQuery is what `drover events` asks the server for.
type eventQuery struct {
	after                     int64
	since                     time.Time
	device, kind, minPriority string
}

func (q eventQuery) values(follow bool) url.Values {
	v := url.Values{}
	if q.after > 0 {
		v.Set("after", strconv.FormatInt(q.after, 10))
	}
	if !q.since.IsZero() {
		v.Set("since", q.since.UTC().Format(time.RFC3339Nano))
	}
	for k, x := range map[string]string{"device": q.device, "kind": q.kind, "min_priority": q.minPriority} {
		if x != "" {
			v.Set(k, x)
		}
	}
	if follow {
		v.Set("follow", "1")
	}
	return v
}

func eventsCmd(e *env) *cobra.Command {
	var (
		conn   connFlags
		q      eventQuery
		since  string
		follow bool
		format string
	)
	c := &cobra.Command{
		Use:   "events [--follow] [--device ID] [--kind K] [--min-priority P] [--since ID|DURATION] [-o json]",
		Short: "Print stored events, oldest first; --follow streams new ones live",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(format, outText, outYAML, outJSON); err != nil {
				return err
			}
			if q.minPriority != "" && api.PriorityRank(q.minPriority) == 0 {
				return usagef("--min-priority %q: want low, medium or high", q.minPriority)
			}
			if since != "" {
				if n, err := strconv.ParseInt(since, 10, 64); err == nil && n >= 0 {
					q.after = max(q.after, n)
				} else if d, err := parseDays(since); err == nil && d > 0 {
					q.since = time.Now().Add(-d)
				} else {
					return usagef("--since %q: want an event id or a duration like 10m, 2h or 3d", since)
				}
			}
			st, err := newEventStream(&conn)
			if err != nil {
				return err
			}
			defer st.http.CloseIdleConnections()
			out := newEventPrinter(e, format, follow && q.device != "")
			defer out.close()
			ctx := cmd.Context()
			if !follow {
				return st.list(ctx, q, out.print)
			}
			err = st.follow(ctx, q, out.print, func(msg string) { fmt.Fprintln(e.stderr, msg) })
			if ctx.Err() != nil {
				return nil
			}
			return err
		},
	}
	conn.register(c)
	c.Flags().BoolVarP(&follow, "follow", "f", false, "keep streaming new events; resumes by itself after a dropped connection")
	c.Flags().StringVar(&q.device, "device", "", "only this device's events")
	c.Flags().StringVar(&q.kind, "kind", "", "only events of this kind")
	c.Flags().StringVar(&q.minPriority, "min-priority", "", "hide events below this priority: low, medium or high")
	c.Flags().StringVar(&since, "since", "", "only events after this id, or of the last DURATION (10m, 2h, 3d)")
	c.Flags().Int64Var(&q.after, "after", 0, "only events after this id")
	_ = c.Flags().MarkHidden("after")
	addOutputFlag(c, &format, outText)
	return c
}

// eventStream reads /v1/events, as a list or as a live stream.
type eventStream struct {
	base string
	http *http.Client
}

func newEventStream(f *connFlags) (*eventStream, error) {
	addr := orEnv(f.addr, "DROVER_ADDR", defaultAddr)
	ca := orEnv(f.caCert, "DROVER_CACERT", "")
	cert := orEnv(f.clientCert, "DROVER_CLIENT_CERT", "")
	key := orEnv(f.clientKey, "DROVER_CLIENT_KEY", "")
	if ca == "" || cert == "" || key == "" {
		return nil, usagef("the server needs mTLS: give --ca-cert, --client-cert and --client-key (or DROVER_CACERT, DROVER_CLIENT_CERT, DROVER_CLIENT_KEY)")
	}
	u, err := url.Parse(addr)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, usagef("server address %q: want https://HOST:PORT", addr)
	}
	tlsCfg, err := pki.ClientTLSConfig(cert, key, ca)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:     tlsCfg,
		TLSHandshakeTimeout: 10 * time.Second,
		ForceAttemptHTTP2:   true,
	}
	return &eventStream{base: strings.TrimSuffix(u.String(), "/"), http: &http.Client{Transport: tr}}, nil
}

func (s *eventStream) get(ctx context.Context, v url.Values, lastID int64) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.base+"/v1/events?"+v.Encode(), nil)
	if err != nil {
		return nil, err
	}
	if lastID > 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatInt(lastID, 10))
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reach the server at %s: %w", s.base, unwrapURLError(err))
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		var ae api.Error
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(body, &ae) == nil && ae.Message != "" {
			return nil, &ae
		}
		return nil, fmt.Errorf("server answered %s", resp.Status)
	}
	return resp, nil
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// list prints stored events, page by page.
func (s *eventStream) list(ctx context.Context, q eventQuery, print func(api.Event) error) error {
	for {
		v := q.values(false)
		v.Set("limit", "1000")
		resp, err := s.get(ctx, v, 0)
		if err != nil {
			return err
		}
		var evs []api.Event
		err = json.NewDecoder(resp.Body).Decode(&evs)
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("read events: %w", err)
		}
		for _, ev := range evs {
			if err := print(ev); err != nil {
				return err
			}
			q.after = ev.ID
		}
		if len(evs) < 1000 {
			return nil
		}
	}
}

// follow streams events, and after a dropped connection resumes from the
// last id it printed (sent as Last-Event-ID), so nothing is missed or
// printed twice. It returns on a refusal (bad input, no permission) or
// when ctx is done.
func (s *eventStream) follow(ctx context.Context, q eventQuery, print func(api.Event) error, note func(string)) error {
	delay := 250 * time.Millisecond
	for {
		resp, err := s.get(ctx, q.values(true), q.after)
		if err != nil {
			var ae *api.Error
			if errors.As(err, &ae) || ctx.Err() != nil {
				return err
			}
			note(fmt.Sprintf("events: %v; retrying from id %d in %v", err, q.after, delay))
		} else {
			got, err := readSSE(resp.Body, func(ev api.Event) error {
				if ev.ID <= q.after {
					return nil // never print an event twice
				}
				if err := print(ev); err != nil {
					return err
				}
				q.after = ev.ID
				return nil
			})
			resp.Body.Close()
			if ctx.Err() != nil {
				return nil
			}
			var pe printError
			if errors.As(err, &pe) {
				return pe.err
			}
			if got {
				delay = 250 * time.Millisecond
			}
			note(fmt.Sprintf("events: stream ended (%v); resuming from id %d", orEOF(err), q.after))
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		delay = min(delay*2, 10*time.Second)
	}
}

func orEOF(err error) error {
	if err == nil {
		return io.EOF
	}
	return err
}

// printError marks an error of the printer, which ends following.
type printError struct{ err error }

func (e printError) Error() string { return e.err.Error() }

// readSSE reads Server-Sent Events from r and calls fn with each event's
// data; it reports whether it got any event.
func readSSE(r io.Reader, fn func(api.Event) error) (bool, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	var (
		data  strings.Builder
		event string
		got   bool
	)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if data.Len() > 0 {
				if event == "error" {
					return got, fmt.Errorf("server: %s", data.String())
				}
				var ev api.Event
				if err := json.Unmarshal([]byte(data.String()), &ev); err != nil {
					return got, fmt.Errorf("bad event from the server: %w", err)
				}
				got = true
				if err := fn(ev); err != nil {
					return got, printError{err}
				}
			}
			data.Reset()
			event = ""
		case strings.HasPrefix(line, ":"):
		case strings.HasPrefix(line, "data:"):
			if data.Len() > 0 {
				data.WriteByte('\n')
			}
			data.WriteString(strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " "))
		case strings.HasPrefix(line, "event:"):
			event = strings.TrimSpace(strings.TrimPrefix(line, "event:"))
		}
	}
	return got, sc.Err()
}

// eventPrinter prints events as lines or JSON, and on a terminal shows
// step-progress events of one device as progress bars.
type eventPrinter struct {
	e      *env
	format string
	bars   *mpb.Progress
	byPkg  map[string]*mpb.Bar
}

func newEventPrinter(e *env, format string, barsWanted bool) *eventPrinter {
	p := &eventPrinter{e: e, format: format, byPkg: map[string]*mpb.Bar{}}
	if barsWanted && format == outText && isTerminal(e.stdout) {
		p.bars = mpb.New(mpb.WithOutput(e.stdout), mpb.WithWidth(40))
	}
	return p
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}

// progress is the payload of a step-progress event.
type progress struct {
	BytesDone  int64  `json:"bytes_done"`
	BytesTotal int64  `json:"bytes_total"`
	FilesDone  int64  `json:"files_done"`
	FilesTotal int64  `json:"files_total"`
	Phase      string `json:"phase"`
}

func (p *eventPrinter) print(ev api.Event) error {
	if p.format == outYAML {
		// A stream of YAML documents, one an event, payload included.
		var payload any
		if len(ev.Payload) > 0 {
			_ = json.Unmarshal(ev.Payload, &payload)
		}
		fmt.Fprintln(p.e.stdout, "---")
		return printAs(p.e.stdout, outYAML, struct {
			api.Event `yaml:",inline"`
			Payload   any `yaml:"payload,omitempty"`
		}{ev, payload})
	}
	if p.format == outJSON {
		return printAs(p.e.stdout, outJSON, ev)
	}
	if p.bars != nil {
		switch ev.Kind {
		case "step-progress":
			var pr progress
			if json.Unmarshal(ev.Payload, &pr) == nil && pr.BytesTotal > 0 {
				b := p.byPkg[ev.Package]
				if b == nil {
					b = p.bars.AddBar(pr.BytesTotal,
						mpb.PrependDecorators(decor.Name(ev.Package, decor.WCSyncSpaceR)),
						mpb.AppendDecorators(decor.CountersKibiByte("% .1f / % .1f"), decor.Percentage(decor.WCSyncSpace)))
					p.byPkg[ev.Package] = b
				}
				b.SetTotal(pr.BytesTotal, false)
				b.SetCurrent(pr.BytesDone)
				return nil
			}
		case api.KindStepDone, api.KindStepFailed:
			if b := p.byPkg[ev.Package]; b != nil {
				if ev.Kind == api.KindStepDone {
					b.SetTotal(-1, true)
				} else {
					b.Abort(false)
				}
				delete(p.byPkg, ev.Package)
			}
		}
		_, err := fmt.Fprint(p.bars, eventLine(ev))
		return err
	}
	_, err := fmt.Fprint(p.e.stdout, eventLine(ev))
	return err
}

func (p *eventPrinter) close() {
	if p.bars != nil {
		for _, b := range p.byPkg {
			b.Abort(false)
		}
		p.bars.Wait()
	}
}

func eventLine(ev api.Event) string {
	dev := ev.Device
	if dev == "" {
		dev = "-"
	}
	msg := ev.Message
	if ev.Kind == "step-progress" {
		var pr progress
		if json.Unmarshal(ev.Payload, &pr) == nil {
			msg = fmt.Sprintf("%s %d/%d bytes, %d/%d files", ev.Package, pr.BytesDone, pr.BytesTotal, pr.FilesDone, pr.FilesTotal)
		}
	}
	return fmt.Sprintf("%d %s %-5s %-6s %-12s %s %s\n", ev.ID, ev.Time.Local().Format(time.DateTime), ev.Level, ev.Priority, ev.Kind, dev, msg)
}
