package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/hook"
	"github.com/drover-dev/drover/internal/publish"
	"github.com/drover-dev/drover/internal/store"
)

// Event kinds the server adds for its own event machinery.
const (
	// KindHook is a server hook that failed or hung. Hooks never run for
	// it, so a failing hook of this kind cannot loop.
	KindHook = "hook"
	// KindOutbox is a warning about the AMQP outbox: past its warning
	// threshold, or full and giving up on its oldest events.
	KindOutbox = "outbox"
)

// EventsConfig holds the settings of the event machinery: retention,
// AMQP publishing, hooks and live followers.
type EventsConfig struct {
	// AMQPURL, when set, publishes every event to a topic exchange.
	AMQPURL string
	// AMQPExchange is the exchange; default "drover.events".
	AMQPExchange string
	// AMQPSendPrefix goes before the routing key of `send` events;
	// default "send".
	AMQPSendPrefix string
	// Retention removes events older than this; 0 keeps them by age.
	Retention time.Duration
	// Keep keeps at most this many events; 0 = no limit by count.
	Keep int
	// OutboxMax bounds the outbox; past it the oldest queued events are
	// given up on (they stay stored) with an error event. A warning
	// event is emitted past 80% of it. Default 1,000,000.
	OutboxMax int64
	// HookDir holds <kind>-post.d hook directories; "" = no hooks.
	HookDir string
	// HookTimeout bounds each hook; default 30s.
	HookTimeout time.Duration
	// FollowWriteTimeout is how long a live follower may take to accept
	// a batch of events before it is dropped as too slow; default 10s.
	FollowWriteTimeout time.Duration
	// FollowHeartbeat is how often an idle follower is sent a comment
	// line, so that proxies and NATs keep its connection; default 5s.
	FollowHeartbeat time.Duration
}

// eventsState is the server's event machinery.
type eventsState struct {
	cfg   EventsConfig
	pub   *publish.Publisher
	hooks *hook.Queue
	reg   *prometheus.Registry

	stored        *prometheus.CounterVec
	published     prometheus.Counter
	hookFailures  prometheus.Counter
	followers     prometheus.Gauge
	followDropped prometheus.Counter
	planDuration  prometheus.Histogram
	httpDuration  *prometheus.HistogramVec

	mu         sync.Mutex
	planStart  map[string]time.Time // device -> time of its last plan event
	outboxWarn bool
}

// newEvents sets up the event machinery of s from s.cfg.Events.
func (s *Server) newEvents(ctx context.Context) (*eventsState, error) {
	cfg := s.cfg.Events
	if cfg.OutboxMax <= 0 {
		cfg.OutboxMax = 1_000_000
	}
	if cfg.FollowWriteTimeout <= 0 {
		cfg.FollowWriteTimeout = 10 * time.Second
	}
	if cfg.FollowHeartbeat <= 0 {
		cfg.FollowHeartbeat = 5 * time.Second
	}
	e := &eventsState{cfg: cfg, reg: prometheus.NewRegistry(), planStart: map[string]time.Time{}}
	if cfg.AMQPURL != "" {
		pub, err := publish.New(publish.Config{
			URL: cfg.AMQPURL, Exchange: cfg.AMQPExchange, SendPrefix: cfg.AMQPSendPrefix,
			Logger: s.log.With("component", "amqp"),
			Published: func(evs []api.Event) {
				e.published.Add(float64(len(evs)))
			},
		}, s.store)
		if err != nil {
			return nil, err
		}
		e.pub = pub
		s.store.SetOutbox(true)
	} else {
		s.store.SetOutbox(false)
	}
	if cfg.HookDir != "" {
		r := hook.New(hook.Config{Dir: cfg.HookDir, Timeout: cfg.HookTimeout, Ignored: s.hookIgnored,
			Logger: s.log.With("component", "hooks")})
		e.hooks = hook.NewQueue(r, 10000, func(ev api.Event, res []hook.Result) { s.hookDone(ev, res) })
	}
	e.register(s)
	return e, nil
}

func (e *eventsState) register(s *Server) {
	e.stored = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "drover_events_stored_total", Help: "Events stored, by kind.",
	}, []string{"kind"})
	e.published = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "drover_events_published_total", Help: "Events the AMQP broker confirmed.",
	})
	e.hookFailures = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "drover_hook_failures_total", Help: "Server hooks that failed or timed out.",
	})
	e.followers = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "drover_event_followers", Help: "Live event streams open now.",
	})
	e.followDropped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "drover_event_followers_dropped_total", Help: "Live event streams dropped for being too slow.",
	})
	e.planDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "drover_plan_duration_seconds", Help: "From a device's plan event to its converged or step-failed event.",
		Buckets: prometheus.ExponentialBuckets(0.05, 2, 16),
	})
	e.httpDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "drover_http_request_duration_seconds", Help: "Wire API requests by route, method and status (long-polls and streams included).",
		Buckets: prometheus.DefBuckets,
	}, []string{"route", "method", "code"})
	outbox := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "drover_outbox_depth", Help: "Events waiting for the AMQP broker's confirmation.",
	}, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		n, err := s.store.OutboxDepth(ctx)
		if err != nil {
			return -1
		}
		return float64(n)
	})
	connected := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "drover_amqp_connected", Help: "1 while the server holds a connection to the AMQP broker.",
	}, func() float64 {
		if e.pub != nil && e.pub.Connected() {
			return 1
		}
		return 0
	})
	// An idle agent holds one connection and handshakes once: a count
	// of handshakes that grows with an idle fleet means agents reconnect
	// (a load balancer's idle timeout shorter than the poll's, say).
	handshakes := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "drover_server_tls_handshakes_total", Help: "TLS handshakes completed: connections opened by agents and operators.",
	}, func() float64 { return float64(s.tlsCounts.done.Load()) })
	resumed := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "drover_server_tls_handshakes_resumed_total", Help: "TLS handshakes that resumed a session (no certificate chain verified again).",
	}, func() float64 { return float64(s.tlsCounts.resumed.Load()) })
	// Connections accepted whose handshake waits for one of the bounded
	// handshake slots (listen.go): above zero for long, the server is
	// short of CPU for the connections it is asked to take.
	waiting := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "drover_server_tls_handshakes_waiting", Help: "Accepted connections waiting for their TLS handshake to start.",
	}, func() float64 { return float64(s.tlsCounts.waiting.Load()) })
	parked := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "drover_server_polls_parked", Help: "Agents' long-polls waiting on this server with no goroutine (HTTP/1.1).",
	}, func() float64 { return float64(s.parkedCount()) })
	e.reg.MustRegister(e.stored, e.published, e.hookFailures, e.followers, e.followDropped, e.planDuration,
		e.httpDuration, outbox, connected, handshakes, resumed, waiting, parked, &deviceCollector{s: s},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
}

// deviceCollector counts devices by state at each scrape.
type deviceCollector struct{ s *Server }

var devicesDesc = prometheus.NewDesc("drover_devices", "Devices by state: converged, pending (not yet converged) or error.", []string{"state"}, nil)

func (c *deviceCollector) Describe(ch chan<- *prometheus.Desc) { ch <- devicesDesc }

func (c *deviceCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	devs, err := c.s.store.Devices(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(devicesDesc, err)
		return
	}
	n := map[string]float64{"converged": 0, "pending": 0, "error": 0}
	for _, d := range devs {
		d, err := c.s.withStatus(ctx, d)
		switch {
		case err != nil || d.Error != "":
			n["error"]++
		case d.Converged:
			n["converged"]++
		default:
			n["pending"]++
		}
	}
	for state, v := range n {
		ch <- prometheus.MustNewConstMetric(devicesDesc, prometheus.GaugeValue, v, state)
	}
}

// eventRoutes registers the metrics endpoint. The event stream itself is
// GET /v1/events?follow=1 (handleEvents hands it to followEvents).
func (s *Server) eventRoutes(mux *http.ServeMux) {
	h := promhttp.HandlerFor(s.ev.reg, promhttp.HandlerOpts{})
	mux.HandleFunc("GET /metrics", s.admin(func(w http.ResponseWriter, r *http.Request, p peer) error {
		h.ServeHTTP(w, r)
		return nil
	}))
}

// observeHTTP records one request's latency.
func (s *Server) observeHTTP(r *http.Request, status int, d time.Duration) {
	route := r.Pattern
	if route == "" {
		route = "unmatched"
	}
	s.ev.httpDuration.WithLabelValues(route, r.Method, strconv.Itoa(status)).Observe(d.Seconds())
}

// eventsStored is called by emit with the events just stored: counters,
// plan durations, hooks, and a nudge to the publisher.
func (s *Server) eventsStored(evs []api.Event) {
	e := s.ev
	for _, ev := range evs {
		e.stored.WithLabelValues(metricKind(ev.Kind)).Inc()
		switch ev.Kind {
		case api.KindPlan:
			e.mu.Lock()
			e.planStart[ev.Device] = ev.Time
			e.mu.Unlock()
		case api.KindConverged, api.KindStepFailed:
			e.mu.Lock()
			start, ok := e.planStart[ev.Device]
			delete(e.planStart, ev.Device)
			e.mu.Unlock()
			if ok {
				e.planDuration.Observe(ev.Time.Sub(start).Seconds())
			}
		}
		if e.hooks != nil && ev.Kind != KindHook {
			if !e.hooks.Add(ev) {
				s.log.Warn("hook queue full: hooks skipped", "event", ev.ID, "kind", ev.Kind)
			}
		}
	}
	if e.pub != nil {
		e.pub.Wake()
	}
}

// metricKinds are the event kinds with a series of their own in
// drover_events_stored_total; any other kind (devices choose theirs) is
// counted as "other", so a device cannot grow the server's memory with
// one series per made-up kind.
var metricKinds = map[string]bool{
	api.KindDeviceSeen: true, api.KindState: true, api.KindPackage: true, api.KindPlan: true,
	api.KindStepStart: true, api.KindStepDone: true, api.KindStepFailed: true, api.KindConverged: true,
	api.KindLog: true, api.KindSend: true, api.KindHealth: true, api.KindHealthCheck: true,
	api.KindKeepalive: true, api.KindTerminateRequested: true, api.KindTerminateDelayed: true,
	api.KindTerminating: true, api.KindTerminated: true, api.KindHookFailed: true,
	api.KindTerminateCleared: true, KindHook: true, KindOutbox: true, "step-progress": true,
	api.KindServiceExited: true, api.KindServiceRestarted: true,
}

func metricKind(kind string) string {
	if metricKinds[kind] {
		return kind
	}
	return "other"
}

// hookDone turns failed hooks into events.
func (s *Server) hookDone(ev api.Event, res []hook.Result) {
	var out []api.Event
	for _, r := range res {
		if r.Err == nil {
			continue
		}
		s.ev.hookFailures.Inc()
		payload, _ := json.Marshal(map[string]any{
			"hook": r.Path, "event_id": ev.ID, "event_kind": ev.Kind, "error": r.Err.Error(),
			"output": string(r.Output), "timed_out": errors.Is(r.Err, hook.ErrTimeout),
			"duration_ms": r.Duration.Milliseconds(),
		})
		out = append(out, api.Event{Device: ev.Device, Kind: KindHook, Level: api.LevelError, Priority: api.PriorityMedium,
			Message: fmt.Sprintf("hook %s for event %d (%s): %v", r.Name, ev.ID, ev.Kind, r.Err), Payload: payload})
	}
	if len(out) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.emit(ctx, out...); err != nil {
		s.log.Error("store hook failure event", "err", err)
	}
}

// hookIgnored makes a file in a hook directory that never runs a warning
// event, once per file for the life of the server. Hooks never run for
// it (it is a hook event), so it cannot loop.
func (s *Server) hookIgnored(path, reason string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ev := api.Event{Kind: KindHook, Level: api.LevelWarn, Priority: api.PriorityMedium,
		Message: fmt.Sprintf("%s: %s", reason, path), Payload: mustMarshal(map[string]string{"hook": path, "ignored": reason})}
	if err := s.emit(ctx, ev); err != nil {
		s.log.Error("store hook warning event", "err", err)
	}
}

// runHooks runs the hook queue until ctx is done: every replica runs the
// hooks of the events it stores.
func (s *Server) runHooks(ctx context.Context) {
	if s.ev.hooks != nil {
		s.ev.hooks.Run(ctx)
	}
}

// runLeaderEvents runs the publisher, the outbox watch and retention
// until ctx is done, on the one replica that leads.
func (s *Server) runLeaderEvents(ctx context.Context) {
	e := s.ev
	var wg sync.WaitGroup
	if e.pub != nil {
		wg.Go(func() { e.pub.Run(ctx) })
		wg.Go(func() { s.watchOutbox(ctx) })
	}
	if e.cfg.Retention > 0 || e.cfg.Keep > 0 {
		wg.Go(func() { s.retain(ctx) })
	}
	wg.Wait()
}

// retain applies event retention now and then every minute.
func (s *Server) retain(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		var before time.Time
		if s.ev.cfg.Retention > 0 {
			before = s.now().Add(-s.ev.cfg.Retention)
		}
		n, err := s.store.PruneEvents(ctx, before, s.ev.cfg.Keep)
		if err != nil && ctx.Err() == nil {
			s.log.Warn("event retention", "err", err)
		} else if n > 0 {
			s.log.Info("event retention removed old events", "count", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// watchOutbox bounds the outbox: a warning event past 80% of OutboxMax,
// and past OutboxMax the oldest queued events are given up on, with an
// error event naming them (they stay stored and readable).
func (s *Server) watchOutbox(ctx context.Context) {
	e := s.ev
	t := time.NewTicker(time.Second)
	defer t.Stop()
	warnAt := e.cfg.OutboxMax * 8 / 10
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		depth, err := s.store.OutboxDepth(ctx)
		if err != nil {
			continue
		}
		var evs []api.Event
		e.mu.Lock()
		switch {
		case depth > warnAt && !e.outboxWarn:
			e.outboxWarn = true
			evs = append(evs, api.Event{Kind: KindOutbox, Level: api.LevelWarn, Priority: api.PriorityHigh,
				Message: fmt.Sprintf("AMQP outbox holds %d events (limit %d): is the broker down?", depth, e.cfg.OutboxMax)})
		case depth < warnAt/2:
			e.outboxWarn = false
		}
		e.mu.Unlock()
		if over := depth - e.cfg.OutboxMax; over > 0 {
			// One more than the excess, so the error event itself fits:
			// else it would overflow the outbox again at the next tick,
			// and give up on one more event with one more error, forever.
			old, err := s.store.OutboxNext(ctx, 0, int(min(over+1, depth)))
			if err == nil && len(old) > 0 {
				first, last := old[0].ID, old[len(old)-1].ID
				if _, err := s.store.OutboxDelete(ctx, last); err == nil {
					evs = append(evs, api.Event{Kind: KindOutbox, Level: api.LevelError, Priority: api.PriorityHigh,
						Message: fmt.Sprintf("AMQP outbox full (%d events, limit %d): gave up on %d events, ids %d to %d: they will not be published; read them with drover events --since %d",
							depth, e.cfg.OutboxMax, len(old), first, last, first-1),
						Payload: mustMarshal(map[string]int64{"first_id": first, "last_id": last, "count": int64(len(old))})})
				}
			}
		}
		if len(evs) > 0 {
			if err := s.emit(ctx, evs...); err != nil {
				s.log.Error("store outbox event", "err", err)
			}
		}
	}
}

// followBatch is how many events one read of a follower's stream takes.
const followBatch = 500

// followEvents streams events matching f as Server-Sent Events: stored
// ones after f.After (or the Last-Event-ID header), then live ones as they
// are stored. Each event is "id: ID", "event: KIND", "data: JSON". It reads
// from the store, never from a per-follower queue, so a follower costs one
// batch of memory however far behind it is; one that does not take a
// batch within FollowWriteTimeout is dropped (it resumes from its last id).
func (s *Server) followEvents(w http.ResponseWriter, r *http.Request, p peer, f store.EventFilter) error {
	return s.streamEvents(w, r, p.name, f, true)
}

// streamEvents is followEvents for any reader: who names it in logs, and
// named writes each event's kind as its SSE event name (the fleet page's
// script reads unnamed messages only).
func (s *Server) streamEvents(w http.ResponseWriter, r *http.Request, who string, f store.EventFilter, named bool) error {
	if v := r.Header.Get("Last-Event-ID"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return api.Errorf(api.EINVALID, fmt.Sprintf("Last-Event-ID %q: want an event id", v))
		}
		f.After = max(f.After, n)
	}
	ctx := r.Context()
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	s.ev.followers.Inc()
	defer s.ev.followers.Dec()
	timeout := s.ev.cfg.FollowWriteTimeout
	send := func(write func() error) bool {
		start := time.Now()
		_ = rc.SetWriteDeadline(start.Add(timeout))
		err := write()
		if err == nil {
			err = rc.Flush()
		}
		if err == nil {
			// The deadline bounds this send only: left set, it would
			// end an idle stream at the next heartbeat.
			err = rc.SetWriteDeadline(time.Time{})
		}
		if err == nil {
			return true
		}
		// Too slow is told by the deadline, not by the request's context:
		// net/http closes the connection on a failed write (over TLS that
		// may take a few seconds more), which cancels the context before
		// the write returns here.
		if errors.Is(err, os.ErrDeadlineExceeded) || time.Since(start) >= timeout {
			s.ev.followDropped.Inc()
			s.log.Warn("event follower dropped: too slow; it may resume from its last id",
				"peer", who, "last_id", f.After, "timeout", timeout, "err", err)
		} else if ctx.Err() == nil {
			s.log.Debug("event follower gone", "peer", who, "last_id", f.After, "err", err)
		}
		return false
	}
	if !send(func() error { _, err := fmt.Fprint(w, "retry: 1000\n: drover events\n\n"); return err }) {
		return nil
	}
	heartbeat := time.NewTicker(s.ev.cfg.FollowHeartbeat)
	defer heartbeat.Stop()
	f.Limit = followBatch
	for {
		wake, _ := s.hub.wait(eventsKey)
		evs, err := s.store.Events(ctx, f)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			send(func() error {
				_, err := fmt.Fprintf(w, "event: error\ndata: %s\n\n", mustMarshal(map[string]string{"error": err.Error()}))
				return err
			})
			return nil
		}
		if len(evs) > 0 {
			ok := send(func() error {
				for _, ev := range evs {
					name := ""
					if named {
						name = "event: " + sseField(ev.Kind) + "\n"
					}
					if _, err := fmt.Fprintf(w, "id: %d\n%sdata: %s\n\n", ev.ID, name, mustMarshal(ev)); err != nil {
						return err
					}
				}
				return nil
			})
			if !ok {
				return nil
			}
			f.After = evs[len(evs)-1].ID
			if len(evs) == followBatch {
				continue
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		case <-heartbeat.C:
			if !send(func() error { _, err := fmt.Fprint(w, ": ping\n\n"); return err }) {
				return nil
			}
		}
	}
}

// sseField keeps a device-given kind from breaking the stream's framing.
func sseField(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' {
			return -1
		}
		return r
	}, s)
}

func mustMarshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		return []byte(`{}`)
	}
	return b
}

// HookDir returns the server's hook directory under its data folder.
func HookDir(data string) string { return filepath.Join(data, "hooks") }

func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request, p peer) error {
	q := r.URL.Query()
	f := store.EventFilter{Device: q.Get("device"), Kind: q.Get("kind"), MinPriority: q.Get("min_priority")}
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return api.Errorf(api.EINVALID, fmt.Sprintf("after %q: want an event id", v))
		}
		f.After = n
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10000 {
			return api.Errorf(api.EINVALID, fmt.Sprintf("limit %q: want 1 to 10000", v))
		}
		f.Limit = n
	}
	if f.MinPriority != "" && api.PriorityRank(f.MinPriority) == 0 {
		return api.Errorf(api.EINVALID, fmt.Sprintf("min_priority %q: want low, medium or high", f.MinPriority))
	}
	if v := q.Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return api.Errorf(api.EINVALID, fmt.Sprintf("since %q: want an RFC 3339 time", v))
		}
		f.Since = t
	}
	if q.Get("follow") == "1" {
		return s.followEvents(w, r, p, f)
	}
	wait := q.Get("wait") == "1"
	timer := time.NewTimer(s.cfg.PollTimeout)
	defer timer.Stop()
	for {
		ch, _ := s.hub.wait(eventsKey)
		evs, err := s.store.Events(r.Context(), f)
		if err != nil {
			return err
		}
		if len(evs) > 0 || !wait {
			if evs == nil {
				evs = []api.Event{}
			}
			writeJSON(w, http.StatusOK, evs)
			return nil
		}
		select {
		case <-ch:
		case <-timer.C:
			writeJSON(w, http.StatusOK, []api.Event{})
			return nil
		case <-r.Context().Done():
			return r.Context().Err()
		}
	}
}
