package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/hook"
	"github.com/drover-dev/drover/internal/plan"
)

// Agent hook phases: <home>/config/hooks/<phase>-post.d/ runs after each.
const (
	PhaseInstall      = "install"
	PhaseUpgrade      = "upgrade" // also downgrade and reinstall
	PhaseRemove       = "remove"
	PhaseServiceStart = "service-start"
	PhaseServiceStop  = "service-stop"
)

// KindHook is the event of an agent hook that failed or hung.
const KindHook = "hook"

// defaultHookTimeout bounds each agent hook unless Config.HookTimeout
// says otherwise.
const defaultHookTimeout = 60 * time.Second

// agentEvents is the agent's hook runner, progress sender and metrics,
// made by New. The hook runner's goroutine starts in New and stops when
// Run returns (stopHooks).
type agentEvents struct {
	hooks *hook.Queue
	reg   *prometheus.Registry
	m     agentMetrics
	prog  *progressSender

	stop     context.CancelFunc
	stopped  chan struct{} // closed when the hook runner returned
	stopOnce sync.Once
}

// initEvents makes the hook runner, progress sender and metrics, and
// starts the hook runner. Called by New.
func (a *Agent) initEvents() {
	e := &a.ev
	timeout := a.cfg.HookTimeout
	if timeout <= 0 {
		timeout = defaultHookTimeout
	}
	r := hook.New(hook.Config{Dir: filepath.Join(a.cfg.Home, "config", "hooks"), Timeout: timeout,
		Env:     []string{"DROVER_HOME=" + a.cfg.Home, "DROVER_DEVICE=" + a.cfg.Device},
		Ignored: a.hookIgnored, Logger: a.log.With("component", "hooks")})
	e.hooks = hook.NewQueue(r, 1000, a.hookDone)
	e.reg = prometheus.NewRegistry()
	e.m = newAgentMetrics(e.reg, a)
	e.prog = newProgressSender(a)
	ctx, cancel := context.WithCancel(context.Background())
	e.stop, e.stopped = cancel, make(chan struct{})
	go func() {
		defer close(e.stopped)
		e.hooks.Run(ctx)
	}()
}

// stopHooks stops the hook runner and waits for it.
func (e *agentEvents) stopHooks() {
	e.stopOnce.Do(func() {
		e.stop()
		<-e.stopped
	})
}

func (a *Agent) events() *agentEvents { return &a.ev }

// runHooks runs the hooks of phase for ev in the background, in the
// order they were asked for; a failing or hanging hook (killed after its
// timeout) becomes a "hook" event and never blocks the agent. Phases:
// PhaseInstall, PhaseUpgrade, PhaseRemove, PhaseServiceStart,
// PhaseServiceStop. ev's Kind is replaced by the phase for the hooks'
// DROVER_EVENT_KIND; its other fields are kept.
func (a *Agent) runHooks(phase string, ev api.Event) {
	if ev.Time.IsZero() {
		ev.Time = a.now().UTC()
	}
	ev.Device = a.cfg.Device
	ev.Kind = phase
	if !a.events().hooks.Add(ev) {
		a.log.Warn("hook queue full: hooks skipped", "phase", phase)
	}
}

// stepHooks runs the hooks of a finished step's phase.
func (a *Agent) stepHooks(s plan.Step, ev api.Event) {
	switch s.Action {
	case plan.Install:
		a.runHooks(PhaseInstall, ev)
	case plan.Upgrade, plan.Downgrade, plan.Reinstall:
		a.runHooks(PhaseUpgrade, ev)
	case plan.Remove:
		a.runHooks(PhaseRemove, ev)
	}
}

func (a *Agent) hookDone(ev api.Event, res []hook.Result) {
	for _, r := range res {
		if r.Err == nil {
			continue
		}
		a.events().m.hookFailures.Inc()
		payload, _ := json.Marshal(map[string]any{"hook": r.Path, "phase": ev.Kind, "error": r.Err.Error(),
			"output": string(r.Output), "timed_out": errors.Is(r.Err, hook.ErrTimeout),
			"duration_ms": r.Duration.Milliseconds()})
		a.event(api.Event{Kind: KindHook, Level: api.LevelError, Priority: api.PriorityMedium, Package: ev.Package,
			Message: fmt.Sprintf("%s hook %s: %v", ev.Kind, r.Name, r.Err), Payload: payload})
	}
}

// hookIgnored makes a file in a hook directory that never runs (a bad
// name, not executable) a warning event, once per file for the life of
// the agent: otherwise the operator would wonder why the hook is silent.
func (a *Agent) hookIgnored(path, reason string) {
	payload, _ := json.Marshal(map[string]any{"hook": path, "ignored": reason})
	a.event(api.Event{Kind: KindHook, Level: api.LevelWarn, Priority: api.PriorityMedium,
		Message: fmt.Sprintf("%s: %s", reason, path), Payload: payload})
}
