package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/proc"
	"github.com/drover-dev/drover/internal/store"
)

// maxKeepalive bounds a timed keepalive; longer is `forever`.
const maxKeepalive = 10 * 365 * 24 * time.Hour

// nodeServer is the server's state for health, termination and
// keepalive. The state itself lives in the device record; this only
// serializes its read-modify-write and wakes a held termination when its
// keepalive lapses.
type nodeServer struct {
	locks  sync.Map // device id -> *sync.Mutex
	mu     sync.Mutex
	timers map[string]*time.Timer
}

// lockDevice serializes changes to one device's record between reports,
// keepalives and the termination hook; it returns the unlock, or the
// error of sharedLock (then nothing is locked and nothing may change).
func (s *Server) lockDevice(ctx context.Context, id string) (func(), error) {
	m, _ := s.node.locks.LoadOrStore(id, &sync.Mutex{})
	mu := m.(*sync.Mutex)
	mu.Lock()
	// Another replica may change the same record (a keepalive there, a
	// report here).
	unlock, err := s.sharedLock(ctx, "device/"+id)
	if err != nil {
		mu.Unlock()
		return nil, err
	}
	return func() {
		unlock()
		mu.Unlock()
	}, nil
}

// nodeRoutes registers health, termination and keepalive calls.
func (s *Server) nodeRoutes(mux *http.ServeMux) {
	// The device itself (`drover keepalive` on the machine) or an operator.
	mux.HandleFunc("PUT /v1/devices/{id}/keepalive", s.deviceOrAdmin(s.handleKeepalive))
}

// nodeReport carries the server-owned fields (keepalive, termination)
// across a report, takes the health from it and moves the termination on.
// It returns the events to emit and whether the termination hook must
// run. The caller holds lockDevice(d.ID).
func (s *Server) nodeReport(old api.Device, d *api.Device, rep api.Report) ([]api.Event, bool) {
	d.Keepalive, d.Termination = old.Keepalive, old.Termination
	d.Health, d.HealthChecks = old.Health, old.HealthChecks
	if rep.Health != nil {
		d.Health, d.HealthChecks = rep.Health.Status, rep.Health.Checks
	}
	return s.terminationStep(d)
}

// terminationStep decides what a device's health and keepalive mean for
// its termination now, updates d and returns the events and whether the
// hook must run (d is then marked terminating).
func (s *Server) terminationStep(d *api.Device) ([]api.Event, bool) {
	now := s.now().UTC()
	t := d.Termination
	ev := func(kind, level, prio, msg string) api.Event {
		return api.Event{Device: d.ID, Kind: kind, Level: level, Priority: prio, Message: msg}
	}
	var evs []api.Event
	switch {
	case d.Health == api.HealthTerminate:
		if t == nil {
			t = &api.Termination{State: api.TerminationRequested, Requested: now, Updated: now}
			d.Termination = t
			evs = append(evs, ev(api.KindTerminateRequested, api.LevelWarn, api.PriorityHigh,
				fmt.Sprintf("device %s asks to be terminated (a health check exited 254)", d.ID)))
		}
		if t.State != api.TerminationRequested {
			return evs, false
		}
		if d.Keepalive.Holds(now) {
			if !t.Delayed {
				t.Delayed, t.Updated = true, now
				until := "forever (until `drover keepalive --cancel`)"
				if !d.Keepalive.Forever {
					until = "until " + d.Keepalive.Until.Format(time.RFC3339)
				}
				evs = append(evs, ev(api.KindTerminateDelayed, api.LevelInfo, api.PriorityMedium,
					fmt.Sprintf("termination of %s delayed by a keepalive %s", d.ID, until)))
			}
			if !d.Keepalive.Forever {
				s.wakeAt(d.ID, d.Keepalive.Until)
			}
			return evs, false
		}
		t.State, t.Delayed, t.Updated = api.TerminationTerminating, false, now
		return evs, true
	case t != nil && (d.Health == api.HealthHealthy || d.Health == "") &&
		(t.State == api.TerminationRequested || t.State == api.TerminationHookFailed):
		d.Termination = nil
		evs = append(evs, ev(api.KindTerminateCleared, api.LevelInfo, api.PriorityMedium,
			fmt.Sprintf("device %s is %s again: termination cleared", d.ID, healthName(d.Health))))
	}
	return evs, false
}

func healthName(h string) string {
	if h == "" {
		return "without health checks"
	}
	return h
}

// wakeAt looks at a device's termination again at t, when its keepalive
// lapses, so it does not wait for the device's next report.
func (s *Server) wakeAt(id string, at time.Time) {
	s.node.mu.Lock()
	defer s.node.mu.Unlock()
	if s.node.timers == nil {
		s.node.timers = map[string]*time.Timer{}
	}
	if old := s.node.timers[id]; old != nil {
		old.Stop()
	}
	s.node.timers[id] = time.AfterFunc(at.Sub(s.now())+50*time.Millisecond, func() {
		s.node.mu.Lock()
		delete(s.node.timers, id)
		s.node.mu.Unlock()
		s.reconsider(id)
	})
}

// resumeTerminations looks again at every device whose termination was
// requested when the server (re)starts: the keepalive timers of the
// server before it lived in memory and are gone. A timed keepalive that
// lapsed while the server was down lets the termination proceed at once;
// one that still holds is timed again; without this, such a device would
// wait for its next report, which a machine that has gone bad may never
// send.
func (s *Server) resumeTerminations(ctx context.Context) {
	devs, err := s.store.Devices(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error("resume pending terminations", "err", err)
		}
		return
	}
	for _, d := range devs {
		if ctx.Err() != nil {
			return
		}
		if d.Termination != nil && d.Termination.State == api.TerminationRequested {
			s.reconsider(d.ID)
		}
	}
}

// stopTimers stops the keepalive timers when the server stops, so none
// fires into a store that is being closed.
func (s *Server) stopTimers() {
	s.node.mu.Lock()
	defer s.node.mu.Unlock()
	for id, t := range s.node.timers {
		t.Stop()
		delete(s.node.timers, id)
	}
}

// reconsider moves a device's termination on outside any request.
func (s *Server) reconsider(id string) {
	ctx := context.Background()
	unlock, err := s.lockDevice(ctx, id)
	if err != nil {
		// The next report or keepalive moves the termination on.
		return
	}
	d, err := s.store.Device(ctx, id)
	if err != nil {
		unlock()
		return
	}
	evs, hook := s.terminationStep(&d)
	if len(evs) == 0 && !hook {
		unlock()
		return
	}
	err = s.commit(ctx, store.Write{Device: &d, Events: evs})
	unlock()
	if err != nil {
		s.log.Error("store termination", "device", id, "err", err)
		return
	}
	if hook {
		s.startHook(d)
	}
}

func (s *Server) handleKeepalive(w http.ResponseWriter, r *http.Request, p peer) error {
	ctx := r.Context()
	id := r.PathValue("id")
	var req api.KeepaliveRequest
	if err := readJSON(r, 4096, &req); err != nil {
		return err
	}
	n := 0
	for _, b := range []bool{req.Seconds != 0, req.Forever, req.Cancel} {
		if b {
			n++
		}
	}
	if n != 1 || req.Seconds < 0 || time.Duration(req.Seconds) > maxKeepalive/time.Second {
		return api.Errorf(api.EINVALID, "keepalive: want one of seconds (up to 10 years), forever or cancel")
	}
	unlock, err := s.lockDevice(ctx, id)
	if err != nil {
		return err
	}
	d, err := s.store.Device(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		unlock()
		return api.Errorf(api.ENOTFOUND, fmt.Sprintf("no device %q: it has not reported yet", id))
	}
	if err != nil {
		unlock()
		return err
	}
	now := s.now().UTC()
	var msg string
	switch {
	case req.Cancel:
		d.Keepalive = nil
		msg = fmt.Sprintf("keepalive of %s cancelled by %s", id, p.name)
	case req.Forever:
		d.Keepalive = &api.Keepalive{Forever: true, Set: now}
		msg = fmt.Sprintf("keepalive of %s set forever by %s: no termination until it is cancelled", id, p.name)
	default:
		until := now.Add(time.Duration(req.Seconds) * time.Second)
		d.Keepalive = &api.Keepalive{Until: until, Set: now}
		msg = fmt.Sprintf("keepalive of %s until %s set by %s", id, until.Format(time.RFC3339), p.name)
	}
	if d.Termination != nil {
		d.Termination.Delayed = false // say again what holds it now
	}
	evs, hook := s.terminationStep(&d)
	evs = append([]api.Event{{Device: id, Kind: api.KindKeepalive, Level: api.LevelInfo, Priority: api.PriorityMedium, Message: msg}}, evs...)
	err = s.commit(ctx, store.Write{Device: &d, Events: evs})
	unlock()
	if err != nil {
		return err
	}
	if hook {
		s.startHook(d) // after the keepalive's events
	}
	writeJSON(w, http.StatusOK, api.KeepaliveResponse{Keepalive: d.Keepalive, Termination: d.Termination})
	return nil
}

// hookInput is what the termination hook reads on stdin.
type hookInput struct {
	ID     string            `json:"id"`
	Facts  map[string]string `json:"facts"`
	Labels map[string]string `json:"labels"`
	Tags   []string          `json:"tags"`
	Health []api.HealthCheck `json:"health_checks,omitempty"`
}

// startHook runs the operator's termination hook for d off the request
// path, with a timeout, and records and announces how it went.
func (s *Server) startHook(d api.Device) {
	go func() {
		ctx := context.Background()
		if s.cfg.TerminationHook == "" {
			_ = s.emit(ctx, api.Event{Device: d.ID, Kind: api.KindTerminating, Level: api.LevelWarn, Priority: api.PriorityHigh,
				Message: fmt.Sprintf("device %s is terminating, but no termination hook is configured (drover server --termination-hook): terminate it by hand", d.ID)})
			return
		}
		_ = s.emit(ctx, api.Event{Device: d.ID, Kind: api.KindTerminating, Level: api.LevelWarn, Priority: api.PriorityHigh,
			Message: fmt.Sprintf("device %s is terminating: running %s", d.ID, s.cfg.TerminationHook)})
		out, err := s.runHook(ctx, d)
		state, kind, level, msg := api.TerminationTerminated, api.KindTerminated, api.LevelInfo,
			fmt.Sprintf("device %s terminated by the termination hook", d.ID)
		if err != nil {
			state, kind, level = api.TerminationHookFailed, api.KindHookFailed, api.LevelError
			msg = fmt.Sprintf("termination hook for %s: %v", d.ID, err)
		}
		ev := api.Event{Device: d.ID, Kind: kind, Level: level, Priority: api.PriorityHigh, Message: msg,
			Payload: nodeJSON(map[string]any{"hook": s.cfg.TerminationHook, "output": out})}
		w := store.Write{Events: []api.Event{ev}}
		// The hook's outcome is not to be lost: its event is stored even
		// if the record cannot be locked, which is tried for a minute.
		unlock, lerr := s.lockDevice(ctx, d.ID)
		for try := 1; lerr != nil && try < 12; try++ {
			time.Sleep(5 * time.Second)
			unlock, lerr = s.lockDevice(ctx, d.ID)
		}
		if lerr != nil {
			s.log.Error("store termination: the device's record stays terminating", "device", d.ID, "err", lerr)
			unlock = func() {}
		}
		cur, gerr := s.store.Device(ctx, d.ID)
		if lerr == nil && gerr == nil && cur.Termination != nil && cur.Termination.State == api.TerminationTerminating {
			cur.Termination.State, cur.Termination.Updated = state, s.now().UTC()
			cur.Termination.Error = ""
			if err != nil {
				cur.Termination.Error = err.Error()
			}
			w.Device = &cur
		}
		if gerr := s.commit(ctx, w); gerr != nil {
			s.log.Error("store termination", "device", d.ID, "err", gerr)
		}
		unlock()
	}()
}

// runHook runs the hook with the device on stdin; its whole process group
// is killed at the timeout.
func (s *Server) runHook(ctx context.Context, d api.Device) (string, error) {
	in := hookInput{ID: d.ID, Facts: d.Facts, Labels: d.Labels, Tags: d.Tags, Health: d.HealthChecks}
	if in.Facts == nil {
		in.Facts = map[string]string{}
	}
	if in.Labels == nil {
		in.Labels = map[string]string{}
	}
	data, err := json.Marshal(in)
	if err != nil {
		return "", err
	}
	timeout := s.cfg.TerminationHookTimeout
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}
	var out hookOutput
	run, err := proc.Run(ctx, proc.Cmd{
		Path: s.cfg.TerminationHook, Args: []string{d.ID},
		Env:    append(os.Environ(), "DROVER_DEVICE="+d.ID),
		Stdin:  data,
		Stdout: &out, Stderr: &out,
		Timeout:   timeout,
		WaitDelay: 5 * time.Second, // a child left holding the output must not hang us
	})
	if run.TimedOut {
		err = fmt.Errorf("killed after %v", timeout)
	}
	if err != nil {
		if o := strings.TrimSpace(out.String()); o != "" {
			err = fmt.Errorf("%w: %s", err, hookLastLine(o))
		}
	}
	return out.String(), err
}

func hookLastLine(s string) string {
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}

// hookOutput keeps the last 64 KiB written to it.
type hookOutput struct {
	mu sync.Mutex
	b  []byte
}

func (t *hookOutput) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - 64<<10; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *hookOutput) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

func nodeJSON(v any) json.RawMessage {
	data, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	return data
}
