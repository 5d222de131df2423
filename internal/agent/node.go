package agent

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/health"
	"github.com/drover-dev/drover/internal/local"
)

// NodeConfig holds the settings of the node-local verbs and the health
// checks (DESIGN §4, Jetpack).
type NodeConfig struct {
	// ServerAddr is shown by `drover config server.addr`.
	ServerAddr string
	// HealthInterval is how often the checks in
	// <home>/config/healthcheck.d run; default 60s.
	HealthInterval time.Duration
	// HealthTimeout bounds one check; default 30s.
	HealthTimeout time.Duration
	// HealthStartDelay: results are ignored this long after the agent
	// starts and after each install.
	HealthStartDelay time.Duration
	// HealthConsecutive equal results in a row change the health state;
	// default 1.
	HealthConsecutive int
}

// MaxSend bounds the body of `drover send`.
const MaxSend = 1 << 20

// maxLog bounds the message of `drover log`.
const maxLog = 64 << 10

// nodeState is the agent's state for the node-local verbs.
type nodeState struct {
	convergeMu sync.Mutex // one convergence at a time: the loop's or `drover converge`

	mu        sync.Mutex
	runCtx    context.Context
	taps      map[int]func(api.Event)
	nextTap   int
	keepalive *pendingKeepalive // to send when the server is back
}

// healthLoop is the machine's health checks (healthcheck.d), run by
// runHealth: its own type and lock.
type healthLoop struct {
	mu      sync.Mutex
	machine *health.Machine
	report  api.HealthReport
	// skipped and last belong to the loop's goroutine: no lock.
	skipped map[string]bool // files skipped last run, warned about once
	last    map[string]api.HealthCheck
}

// hold holds results back after an install (the start delay).
func (h *healthLoop) hold(now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.machine != nil {
		h.machine.Hold(now)
	}
}

type pendingKeepalive struct {
	req api.KeepaliveRequest
	at  time.Time
}

func (a *Agent) nodeDefaults() {
	c := &a.cfg.Node
	if c.HealthInterval <= 0 {
		c.HealthInterval = 60 * time.Second
	}
	if c.HealthTimeout <= 0 {
		c.HealthTimeout = 30 * time.Second
	}
	if c.HealthConsecutive < 1 {
		c.HealthConsecutive = 1
	}
}

// localNodeRoutes registers config, converge, keepalive, log and send.
func (a *Agent) localNodeRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/config", a.handleConfig)
	mux.HandleFunc("POST /v1/converge", a.handleConverge)
	mux.HandleFunc("PUT /v1/keepalive", a.handleKeepalive)
	mux.HandleFunc("POST /v1/log", a.handleLog)
	mux.HandleFunc("POST /v1/send", a.handleSend)
	mux.HandleFunc("GET /v1/health", func(w http.ResponseWriter, r *http.Request) {
		local.WriteJSON(w, http.StatusOK, a.healthReport())
	})
}

// tapEvent hands ev to the callers of `drover converge` and holds health
// results back after an install.
func (a *Agent) tapEvent(ev api.Event) {
	if ev.Kind == api.KindStepDone {
		a.checks.hold(a.now())
	}
	n := &a.node
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, fn := range n.taps {
		fn(ev)
	}
}

func (a *Agent) tap(fn func(api.Event)) (untap func()) {
	n := &a.node
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.taps == nil {
		n.taps = map[int]func(api.Event){}
	}
	id := n.nextTap
	n.nextTap++
	n.taps[id] = fn
	return func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		delete(n.taps, id)
	}
}

// runCtx is the agent's own context: work a local caller starts (a
// convergence) must not stop half-way because the caller went away.
func (a *Agent) runCtx(fallback context.Context) context.Context {
	a.node.mu.Lock()
	defer a.node.mu.Unlock()
	if a.node.runCtx != nil {
		return a.node.runCtx
	}
	return context.WithoutCancel(fallback)
}

func (a *Agent) handleConfig(w http.ResponseWriter, r *http.Request) {
	labels := a.cfg.Labels
	if labels == nil {
		labels = map[string]string{}
	}
	cfg := map[string]any{
		"device": map[string]any{"id": a.cfg.Device, "labels": labels, "tags": a.tags},
		"facts":  a.facts,
		"agent": map[string]any{
			"version": Version, "home": a.cfg.Home, "software_root": a.cfg.SoftwareRoot,
			"runtime_root": a.cfg.RuntimeRoot, "root": a.cfg.Root,
			"health_interval": a.cfg.Node.HealthInterval.String(),
		},
		"health": a.healthReport(),
	}
	server := map[string]any{"addr": a.cfg.Node.ServerAddr}
	// Parameter values are the server's (fleet < device < desired-state
	// entry): ask it; without it, say so rather than guess.
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	params := map[string]any{}
	if res, err := a.srv.Desired(ctx, a.cfg.Device, "", 0); err != nil {
		server["reachable"] = false
		server["error"] = err.Error()
	} else {
		server["reachable"] = true
		for _, app := range res.Apps {
			key := app.Name
			if app.Instance != "" {
				key += "@" + app.Instance
			}
			p := map[string]any{}
			var decls map[string]api.Param
			if m, err := a.engine.Manifest(app.Digest); err == nil {
				decls = m.Params
			}
			for k, v := range app.Params {
				if decls[k].Secret {
					v = "***" // secrets are never shown
				} else if str, ok := v.(string); ok {
					v = a.svc.secrets.mask(str)
				}
				p[k] = v
			}
			params[key] = p
		}
	}
	cfg["server"] = server
	cfg["params"] = params
	local.WriteJSON(w, http.StatusOK, cfg)
}

func (a *Agent) handleConverge(w http.ResponseWriter, r *http.Request) {
	lines := make(chan ConvergeLine, 1024)
	done := make(chan ConvergeLine, 1)
	ctx := a.runCtx(r.Context())
	go func() {
		// After a run of the agent's own loop in progress, if any: this
		// run's steps only.
		a.node.convergeMu.Lock()
		defer a.node.convergeMu.Unlock()
		untap := a.tap(func(ev api.Event) {
			l := ConvergeLine{Kind: ev.Kind, Level: ev.Level, Package: ev.Package, Message: ev.Message}
			switch ev.Kind {
			case api.KindPlan, api.KindStepStart, api.KindStepDone, api.KindStepFailed,
				api.KindInitStart, api.KindInitDone, api.KindInitFailed:
			case KindStepProgress:
				var p Progress
				if json.Unmarshal(ev.Payload, &p) != nil {
					return
				}
				l.Progress = &p
			default:
				return
			}
			select {
			case lines <- l:
			default: // a stuck reader must not stall the install
			}
		})
		defer untap()
		// `drover converge` is an explicit retry: skip the backoff of a
		// failed state.
		a.mu.Lock()
		a.fail.next = time.Time{}
		a.mu.Unlock()
		a.convergeLocked(ctx, nil)
		_, lastErr := a.Status()
		done <- ConvergeLine{Done: true, Converged: lastErr == "", Error: a.svc.secrets.mask(lastErr)}
	}()
	sw := local.NewStreamWriter(w)
	for {
		select {
		case l := <-lines:
			if sw.Send(l) != nil {
				return // the caller went away; the run goes on
			}
		case last := <-done:
			for drained := false; !drained; {
				select {
				case l := <-lines:
					_ = sw.Send(l)
				default:
					drained = true
				}
			}
			_ = sw.Send(last)
			return
		case <-r.Context().Done():
			return
		}
	}
}

func (a *Agent) handleLog(w http.ResponseWriter, r *http.Request) {
	var req LogRequest
	if err := readLocal(w, r, maxLog+4096, &req); err != nil {
		local.WriteError(w, err)
		return
	}
	if strings.TrimSpace(req.Message) == "" {
		local.WriteError(w, api.Errorf(api.EINVALID, "log: the message is empty"))
		return
	}
	if len(req.Message) > maxLog {
		local.WriteError(w, api.Errorf(api.EINVALID, fmt.Sprintf("log: message of %d bytes is over %d", len(req.Message), maxLog)))
		return
	}
	ev := api.Event{Kind: api.KindLog, Level: req.Level, Priority: req.Priority, Message: req.Message}
	if err := ev.Normalize(); err != nil {
		local.WriteError(w, api.Errorf(api.EINVALID, "log: "+err.Error()))
		return
	}
	a.event(ev)
	local.WriteJSON(w, http.StatusOK, a.deliver(r.Context()))
}

func (a *Agent) handleSend(w http.ResponseWriter, r *http.Request) {
	var req SendRequest
	// base64 grows a body by a third; JSON escapes by more: allow for it.
	if err := readLocal(w, r, 8*MaxSend, &req); err != nil {
		local.WriteError(w, err)
		return
	}
	body := []byte(req.Body)
	if req.Encoding == "base64" {
		var err error
		if body, err = base64.StdEncoding.DecodeString(req.Body); err != nil {
			local.WriteError(w, api.Errorf(api.EINVALID, "send: body is not base64"))
			return
		}
	} else if req.Encoding != "" {
		local.WriteError(w, api.Errorf(api.EINVALID, fmt.Sprintf("send: unknown encoding %q", req.Encoding)))
		return
	}
	if len(body) > MaxSend {
		local.WriteError(w, api.Errorf(api.EINVALID, fmt.Sprintf("send: message of %d bytes is over the limit of %d (1 MiB)", len(body), MaxSend)))
		return
	}
	if err := ValidRoutingKey(req.RoutingKey); err != nil {
		local.WriteError(w, api.Errorf(api.EINVALID, "send: "+err.Error()))
		return
	}
	payload := map[string]any{"routing_key": req.RoutingKey, "size": len(body)}
	msg := ""
	if utf8.Valid(body) {
		payload["body"] = string(body)
		msg = string(body)
		if len(msg) > 1024 {
			msg = msg[:1024] + "..."
		}
	} else {
		payload["body"] = base64.StdEncoding.EncodeToString(body)
		payload["encoding"] = "base64"
		msg = fmt.Sprintf("%d bytes of binary data", len(body))
	}
	if req.RoutingKey != "" {
		msg = "[" + req.RoutingKey + "] " + msg
	}
	a.event(api.Event{Kind: api.KindSend, Level: api.LevelInfo, Priority: api.PriorityMedium, Message: msg, Payload: mustJSON(payload)})
	local.WriteJSON(w, http.StatusOK, a.deliver(r.Context()))
}

// ValidRoutingKey checks a routing key: at most 255 bytes (AMQP's limit),
// printable, no spaces.
func ValidRoutingKey(k string) error {
	if len(k) > 255 {
		return fmt.Errorf("routing key of %d bytes is over 255", len(k))
	}
	for _, c := range k {
		if unicode.IsSpace(c) || !unicode.IsPrint(c) {
			return fmt.Errorf("routing key %q: no spaces or control characters", k)
		}
	}
	return nil
}

// deliver sends the queued events now; what the server does not take
// stays queued for the next report.
func (a *Agent) deliver(ctx context.Context) Delivery {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	a.flushEvents(ctx)
	if a.q.len() == 0 {
		return Delivery{Sent: true}
	}
	return Delivery{Error: "the server is unreachable; the agent sends it when the server is back"}
}

func (a *Agent) handleKeepalive(w http.ResponseWriter, r *http.Request) {
	var req api.KeepaliveRequest
	if err := readLocal(w, r, 4096, &req); err != nil {
		local.WriteError(w, err)
		return
	}
	if n := btoi(req.Forever) + btoi(req.Cancel) + btoi(req.Seconds != 0); n != 1 || req.Seconds < 0 {
		local.WriteError(w, api.Errorf(api.EINVALID, "keepalive: want one of a positive number of seconds, forever or cancel"))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	resp, err := a.srv.Keepalive(ctx, a.cfg.Device, req)
	var ae *api.Error
	if err == nil || (errors.As(err, &ae) && ae.Code != api.ENOTFOUND) {
		a.node.mu.Lock()
		a.node.keepalive = nil // this one supersedes a queued one
		a.node.mu.Unlock()
		if err != nil {
			local.WriteError(w, err)
			return
		}
		local.WriteJSON(w, http.StatusOK, KeepaliveAnswer{Sent: true, Keepalive: resp.Keepalive, Termination: resp.Termination})
		return
	}
	// The server is away (or has not heard of this device yet): keep it
	// and retry from the health loop.
	a.node.mu.Lock()
	a.node.keepalive = &pendingKeepalive{req: req, at: a.now()}
	a.node.mu.Unlock()
	local.WriteJSON(w, http.StatusOK, KeepaliveAnswer{Error: fmt.Sprintf("%v; the agent retries until the server takes it", err)})
}

// retryKeepalive sends a keepalive queued while the server was away. A
// duration counts from when it was asked, not from when it is sent.
func (a *Agent) retryKeepalive(ctx context.Context) {
	a.node.mu.Lock()
	p := a.node.keepalive
	a.node.mu.Unlock()
	if p == nil {
		return
	}
	req := p.req
	if req.Seconds > 0 {
		left := time.Duration(req.Seconds)*time.Second - a.now().Sub(p.at)
		if left < time.Second {
			a.node.mu.Lock()
			if a.node.keepalive == p {
				a.node.keepalive = nil
			}
			a.node.mu.Unlock()
			return
		}
		req.Seconds = int64(left / time.Second)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := a.srv.Keepalive(ctx, a.cfg.Device, req)
	var ae *api.Error
	if err != nil && !(errors.As(err, &ae) && ae.Code != api.ENOTFOUND) {
		return // still away: next time
	}
	if err != nil {
		a.log.Warn("keepalive refused", "err", err)
	} else {
		a.log.Info("queued keepalive sent")
	}
	a.node.mu.Lock()
	if a.node.keepalive == p {
		a.node.keepalive = nil
	}
	a.node.mu.Unlock()
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// readLocal decodes a bounded JSON body of a local call.
func readLocal(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return api.Errorf(api.EINVALID, fmt.Sprintf("request over %d bytes", limit))
		}
		return api.Errorf(api.EINVALID, fmt.Sprintf("malformed request: %v", err))
	}
	return nil
}

// healthReport returns the health part of the report.
func (a *Agent) healthReport() *api.HealthReport {
	a.checks.mu.Lock()
	defer a.checks.mu.Unlock()
	h := a.checks.report
	if h.Status == "" && a.checks.machine == nil {
		h.Status = api.HealthStarting
	}
	h.Checks = append([]api.HealthCheck(nil), h.Checks...)
	return &h
}

// runHealth runs the health checks every interval until ctx is done, and
// sends a keepalive queued while the server was away.
func (a *Agent) runHealth(ctx context.Context) {
	a.node.mu.Lock()
	a.node.runCtx = ctx
	a.node.mu.Unlock()
	n := &a.checks
	n.mu.Lock()
	n.machine = health.NewMachine(health.MachineConfig{
		StartDelay: a.cfg.Node.HealthStartDelay, Consecutive: a.cfg.Node.HealthConsecutive,
	}, a.now())
	n.report = api.HealthReport{Status: api.HealthStarting, Since: a.now().UTC()}
	n.mu.Unlock()
	ticker := time.NewTicker(a.cfg.Node.HealthInterval)
	defer ticker.Stop()
	for {
		a.checkHealth(ctx)
		a.retryKeepalive(ctx)
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// checkHealth runs the checks once (unless within the start delay),
// emits events for what changed and reports a changed state at once.
func (a *Agent) checkHealth(ctx context.Context) {
	n := &a.checks
	n.mu.Lock()
	waiting := n.machine.Waiting(a.now())
	n.mu.Unlock()
	if waiting {
		return
	}
	results, skipped, err := health.RunAll(ctx, health.Config{
		Dir:     filepath.Join(a.cfg.Home, "config", "healthcheck.d"),
		LogDir:  filepath.Join(a.cfg.Home, "logs", "health"),
		Timeout: a.cfg.Node.HealthTimeout,
		Now:     a.now,
	})
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		results = append(results, api.HealthCheck{Name: "healthcheck.d", Status: api.HealthUnknown, ExitCode: -1, Output: err.Error(), Time: a.now().UTC()})
	}
	var evs []api.Event
	now := map[string]bool{}
	for _, s := range skipped {
		now[s.Name] = true
		if !n.skipped[s.Name] {
			evs = append(evs, api.Event{Kind: api.KindHealthCheck, Level: api.LevelWarn, Priority: api.PriorityMedium,
				Message: fmt.Sprintf("health check %s ignored: %s", s.Name, s.Reason)})
		}
	}
	n.skipped = now
	last := map[string]api.HealthCheck{}
	for _, r := range results {
		last[r.Name] = r
		prev, seen := n.last[r.Name]
		if r.Status != api.HealthUnknown || (seen && prev.Status == r.Status && prev.ExitCode == r.ExitCode) {
			continue
		}
		why := fmt.Sprintf("exit %d", r.ExitCode)
		if r.ExitCode < 0 {
			why = "did not finish"
		}
		evs = append(evs, api.Event{Kind: api.KindHealthCheck, Level: api.LevelWarn, Priority: api.PriorityMedium,
			Message: fmt.Sprintf("health check %s is unknown (%s): %s", r.Name, why, firstLine(r.Output)),
			Payload: mustJSON(map[string]any{"check": r.Name, "exit_code": r.ExitCode, "output": r.Output})})
	}
	n.last = last

	overall := health.Overall(results)
	n.mu.Lock()
	prev, _ := n.machine.State()
	state, changed := n.machine.Observe(a.now(), overall)
	_, since := n.machine.State()
	n.report = api.HealthReport{Status: state, Since: since.UTC(), Checks: results}
	n.mu.Unlock()
	if changed {
		ev := api.Event{Kind: api.KindHealth, Level: api.LevelInfo, Priority: api.PriorityMedium,
			Message: fmt.Sprintf("health %s (was %s)", orNone(state), orNone(prev))}
		switch state {
		case api.HealthTerminate:
			ev.Level, ev.Priority = api.LevelError, api.PriorityHigh
			ev.Message = "health checks ask for this machine to be terminated (exit 254)"
		case api.HealthUnknown:
			ev.Level = api.LevelWarn
		}
		evs = append(evs, ev)
	}
	for _, ev := range evs {
		a.event(ev)
	}
	if changed {
		a.log.Info("health changed", "health", orNone(state), "was", orNone(prev))
		if err := a.report(ctx); err != nil {
			a.log.Debug("report health", "err", err)
		}
	} else if len(evs) > 0 {
		a.deliver(ctx)
	}
}

func orNone(s string) string {
	if s == "" {
		return "none (no checks)"
	}
	return s
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i] + " ..."
	}
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

// eventBatch returns how many of evs to send in one call: at most 500,
// and few enough that the body stays well under the server's 16 MiB, so
// a queue holding large `drover send` messages never gets stuck.
func eventBatch(evs []api.Event) int {
	size := 0
	for i, ev := range evs {
		size += len(ev.Message) + len(ev.Payload) + 512
		if i > 0 && (i >= 500 || size > 8<<20) {
			return i
		}
	}
	return len(evs)
}
