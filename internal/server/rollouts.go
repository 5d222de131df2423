package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/hook"
	"github.com/drover-dev/drover/internal/rollout"
	"github.com/drover-dev/drover/internal/store"
)

// gateDir is the directory of rollout gate hooks under the hook directory.
const gateDir = "rollout-gate"

// rollouts is the server's state of rollouts: the active ones (running or
// paused) and the aborted ones that still give devices their documents,
// indexed by device and by held document. The store has the truth; this
// is loaded from it at start and kept in step with every save.
type rollouts struct {
	// op serializes every change of a rollout (start, pause, resume,
	// abort, the driver's steps) from its read to its save.
	op sync.Mutex

	mu     sync.Mutex
	byName map[string]*api.Rollout
	staged map[string][]string // device -> rollouts giving it documents, oldest first
	wake   chan struct{}       // the driver looks again
	gate   *hook.Runner        // nil: no gate hooks
	// finishing names the rollout whose documents are being stored as
	// it ends done: it no longer holds them against that write.
	finishing string
}

func (s *Server) initRollouts(ctx context.Context) error {
	rs := &s.ro
	rs.byName = map[string]*api.Rollout{}
	rs.staged = map[string][]string{}
	rs.wake = make(chan struct{}, 1)
	if dir := s.cfg.Events.HookDir; dir != "" {
		rs.gate = hook.New(hook.Config{Dir: dir, Timeout: s.cfg.Events.HookTimeout, Ignored: s.hookIgnored,
			Logger: s.log.With("component", "rollout-gate")})
	}
	list, err := s.store.Rollouts(ctx, api.RolloutRunning, api.RolloutPaused, api.RolloutAborted)
	if err != nil {
		return fmt.Errorf("load rollouts: %w", err)
	}
	for i := range list {
		s.keepRollout(&list[i])
	}
	return nil
}

// keepRollout puts r (a fresh copy the caller no longer touches) in the
// index, or takes it out when it gives no device anything any more.
func (s *Server) keepRollout(r *api.Rollout) {
	rs := &s.ro
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if old := rs.byName[r.Name]; old != nil {
		for _, id := range rollout.Staged(old) {
			rs.staged[id] = slices.DeleteFunc(rs.staged[id], func(n string) bool { return n == r.Name })
			if len(rs.staged[id]) == 0 {
				delete(rs.staged, id)
			}
		}
		delete(rs.byName, r.Name)
	}
	staged := rollout.Staged(r)
	if !rollout.Active(r) && len(staged) == 0 {
		return
	}
	rs.byName[r.Name] = r
	for _, id := range staged {
		rs.staged[id] = append(rs.staged[id], r.Name)
		slices.SortStableFunc(rs.staged[id], func(a, b string) int { return rs.byName[a].Created.Compare(rs.byName[b].Created) })
	}
}

// stagedDocuments returns the documents rollouts give device id in place
// of the stored documents with the same Key (or beside them, when no
// stored document has that key), and the name of the newest such
// rollout. The resolver calls it for every device resolution. A device
// gets a rollout's documents from the start of its wave until the
// rollout reverts it or ends done; after an abort without --revert until
// the document is set again.
func (s *Server) stagedDocuments(id string) (docs []api.Document, name string) {
	rs := &s.ro
	rs.mu.Lock()
	names := slices.Clone(rs.staged[id])
	var list []*api.Rollout
	for _, n := range names {
		list = append(list, rs.byName[n])
	}
	rs.mu.Unlock()
	byKey := map[string]int{}
	for _, r := range list {
		for _, d := range r.Documents {
			if r.Phase == api.RolloutAborted && s.setSince(d.Key(), r.Updated) {
				continue // set again after the abort: the stored one rules
			}
			if i, ok := byKey[d.Key()]; ok {
				docs[i] = d
			} else {
				byKey[d.Key()] = len(docs)
				docs = append(docs, d)
			}
			name = r.Name
		}
	}
	return docs, name
}

// documentsStored is told, after a state set or rm committed, which
// document keys it changed: the devices an aborted rollout still gives
// one of them resolve again, from the stored documents now. (The change's
// own evaluation ran before the commit, with the staged ones.)
func (s *Server) documentsStored(keys []string) {
	rs := &s.ro
	rs.mu.Lock()
	var wake []string
	for _, r := range rs.byName {
		if r.Phase != api.RolloutAborted || !slices.ContainsFunc(r.Documents, func(d api.Document) bool { return slices.Contains(keys, d.Key()) }) {
			continue
		}
		wake = append(wake, rollout.Staged(r)...)
	}
	rs.mu.Unlock()
	s.invalidateDevices(wake)
}

// setSince reports whether the stored document of key was set after t.
func (s *Server) setSince(key string, t time.Time) bool {
	d, err := s.store.Document(context.Background(), key)
	return err == nil && d.Set.After(t)
}

// rolloutHolds reports whether a running or paused rollout holds one of
// these document keys, and which: state set and state rm of a held
// document are refused.
func (s *Server) rolloutHolds(keys []string) (name string, held bool) {
	rs := &s.ro
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for _, r := range rs.byName {
		if !rollout.Active(r) || r.Name == rs.finishing {
			continue
		}
		for _, d := range r.Documents {
			if slices.Contains(keys, d.Key()) && (name == "" || r.Name < name) {
				name = r.Name
			}
		}
	}
	return name, name != ""
}

// rolloutOf returns a copy of the indexed rollout of this name.
func (s *Server) rolloutOf(name string) (api.Rollout, bool) {
	rs := &s.ro
	rs.mu.Lock()
	defer rs.mu.Unlock()
	r, ok := rs.byName[name]
	if !ok {
		return api.Rollout{}, false
	}
	return cloneRollout(r), true
}

func cloneRollout(r *api.Rollout) api.Rollout {
	c := *r
	c.Stages = slices.Clone(r.Stages)
	c.Devices = slices.Clone(r.Devices)
	return c
}

// wakeRollouts makes the driver look again at once.
func (s *Server) wakeRollouts() {
	select {
	case s.ro.wake <- struct{}{}:
	default:
	}
}

// rolloutReport is told of every device report: a device of a rollout
// wakes the driver, so an unhealthy device stops its wave within seconds.
func (s *Server) rolloutReport(id string) {
	s.ro.mu.Lock()
	_, in := s.ro.staged[id]
	s.ro.mu.Unlock()
	if in {
		s.wakeRollouts()
	}
}

// runRollouts drives the running rollouts until ctx is done: one loop,
// woken by reports of their devices, by operators' changes and by a timer
// set to the next soak end or wave timeout.
func (s *Server) runRollouts(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		next := s.driveRollouts(ctx)
		if ctx.Err() != nil {
			return
		}
		wait := time.Minute // a fallback: nothing is lost if a wake is
		if !next.IsZero() {
			wait = min(wait, max(next.Sub(s.now())+10*time.Millisecond, 0))
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-s.ro.wake:
		case <-timer.C:
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// driveRollouts steps every running rollout once and returns when the
// driver must look again at the latest (zero: only when woken).
func (s *Server) driveRollouts(ctx context.Context) time.Time {
	s.ro.mu.Lock()
	var names []string
	for n, r := range s.ro.byName {
		if r.Phase == api.RolloutRunning {
			names = append(names, n)
		}
	}
	s.ro.mu.Unlock()
	slices.Sort(names)
	var next time.Time
	for _, n := range names {
		t, err := s.driveRollout(ctx, n)
		if err != nil {
			if ctx.Err() != nil {
				return next
			}
			s.log.Error("rollout", "rollout", n, "err", err)
			t = s.now().Add(5 * time.Second) // try again soon
		}
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	return next
}

// driveRollout moves one rollout on as far as it goes now: gates, wave
// beginnings, steps.
func (s *Server) driveRollout(ctx context.Context, name string) (time.Time, error) {
	for range 2 * 100 { // bounded: each pass begins or passes a wave, or returns
		r, ok := s.rolloutOf(name)
		if !ok || r.Phase != api.RolloutRunning {
			return time.Time{}, nil
		}
		if rollout.NeedsGate(&r) {
			wave := r.Wave
			why := s.runGate(ctx, r)
			if ctx.Err() != nil {
				return time.Time{}, ctx.Err()
			}
			if err := s.changeRollout(ctx, name, func(r *api.Rollout) (rollout.Result, error) {
				if !rollout.NeedsGate(r) || r.Wave != wave {
					return rollout.Result{}, nil
				}
				if why != "" {
					return rollout.GateRefused(r, s.now(), why), nil
				}
				return rollout.Begin(r, s.now()), nil
			}); err != nil {
				return time.Time{}, err
			}
			continue
		}
		obs, err := s.observe(ctx, &r)
		if err != nil {
			return time.Time{}, err
		}
		var next time.Time
		if err := s.changeRollout(ctx, name, func(r *api.Rollout) (rollout.Result, error) {
			res := rollout.Step(r, s.now(), obs)
			next = res.Next
			return res, nil
		}); err != nil {
			return time.Time{}, err
		}
		if r2, ok := s.rolloutOf(name); !ok || !rollout.NeedsGate(&r2) {
			return next, nil
		}
	}
	return s.now().Add(time.Second), nil
}

// changeRollout applies change to the current state of the named rollout
// and carries out its result: the documents stored when done, the save
// with its events, the index, and the devices woken.
func (s *Server) changeRollout(ctx context.Context, name string, change func(r *api.Rollout) (rollout.Result, error)) error {
	s.ro.op.Lock()
	defer s.ro.op.Unlock()
	// An operator may pause or abort it through another replica while
	// the leader steps it: both read the stored rollout under one lock.
	unlock, err := s.sharedLock(ctx, "rollout/"+name)
	if err != nil {
		return err
	}
	defer unlock()
	cur, ok := s.rolloutOf(name)
	if s.rep.shared != nil {
		ok = false
	}
	if !ok {
		stored, err := s.store.Rollout(ctx, name)
		if errors.Is(err, store.ErrNotFound) {
			return api.Errorf(api.ENOTFOUND, fmt.Sprintf("no rollout %q", name))
		}
		if err != nil {
			return err
		}
		cur = stored
	}
	before := rollout.Staged(&cur)
	res, err := change(&cur)
	if err != nil {
		return err
	}
	if !res.Changed {
		return nil
	}
	if res.Done {
		// The documents become the stored state, pinned as the rollout
		// rolled them; a crash before the save below only repeats this.
		s.ro.mu.Lock()
		s.ro.finishing = cur.Name
		s.ro.mu.Unlock()
		err := s.setDocumentsAt(ctx, cur.Documents, "rollout/"+cur.Name, rolloutCutoff(&cur))
		s.ro.mu.Lock()
		s.ro.finishing = ""
		s.ro.mu.Unlock()
		if err != nil {
			return fmt.Errorf("rollout %s done: store its documents: %w", cur.Name, err)
		}
	}
	if err := s.saveRollout(ctx, &cur, false, res.Notes); err != nil {
		return err
	}
	// Wake every device whose documents changed: admitted, reverted, and
	// at the end all it staged (their resolution comes from the store).
	wake := append(slices.Clone(res.Admit), res.Revert...)
	if res.Done || !rollout.Active(&cur) {
		wake = append(wake, before...)
	}
	slices.Sort(wake)
	s.invalidateDevices(slices.Compact(wake))
	return nil
}

// rolloutCutoff is when r's documents were pinned: their Set time.
func rolloutCutoff(r *api.Rollout) time.Time {
	for _, d := range r.Documents {
		if !d.Set.IsZero() {
			return d.Set
		}
	}
	return r.Created
}

// saveRollout stores r with the events of notes and updates the index.
func (s *Server) saveRollout(ctx context.Context, r *api.Rollout, create bool, notes []rollout.Note) error {
	now := s.now().UTC()
	r.Updated = now
	payload, _ := json.Marshal(map[string]any{"rollout": r.Name, "phase": r.Phase, "wave": r.Wave + 1, "waves": len(r.Stages)})
	evs := make([]api.Event, len(notes))
	for i, n := range notes {
		evs[i] = api.Event{Time: now, Kind: n.Kind, Level: n.Level, Priority: n.Priority, Message: n.Message, Payload: payload}
		if err := evs[i].Normalize(); err != nil {
			return fmt.Errorf("rollout %s: event: %w", r.Name, err)
		}
	}
	stored, err := s.store.SaveRollout(ctx, *r, create, evs)
	if errors.Is(err, store.ErrConflict) {
		return api.Errorf(api.ECONFLICT, fmt.Sprintf("a rollout named %q exists already", r.Name))
	}
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	c := cloneRollout(r)
	s.keepRollout(&c)
	s.rep.tell(store.ChangeRollouts, r.Name)
	if len(stored) > 0 {
		s.hub.notify(eventsKey)
		s.eventsStored(stored)
		s.rep.tell(store.ChangeEvents)
	}
	return nil
}

// runGate runs the gate hooks before r's current wave; it returns why the
// gate refused ("" when it did not).
func (s *Server) runGate(ctx context.Context, r api.Rollout) string {
	if s.ro.gate == nil {
		return ""
	}
	stdin, err := json.Marshal(r)
	if err != nil {
		return "gate: " + err.Error()
	}
	env := []string{"DROVER_ROLLOUT=" + r.Name, fmt.Sprintf("DROVER_ROLLOUT_WAVE=%d", r.Wave+1),
		fmt.Sprintf("DROVER_ROLLOUT_WAVES=%d", len(r.Stages))}
	for _, res := range s.ro.gate.RunDir(ctx, gateDir, stdin, env) {
		if res.Err != nil {
			why := fmt.Sprintf("gate hook %s refused wave %d/%d: %v", res.Name, r.Wave+1, len(r.Stages), res.Err)
			if tail := outputTail(res.Output); tail != "" {
				why += ": " + tail
			}
			return why
		}
	}
	return ""
}

// outputTail is the end of a hook's output: its last lines, at most 1 KiB.
func outputTail(out []byte) string {
	const maxTail = 1024
	t := strings.TrimSpace(string(out))
	if len(t) > maxTail {
		t = "..." + t[len(t)-maxTail:]
	}
	lines := strings.Split(t, "\n")
	if len(lines) > 10 {
		lines = append([]string{"..."}, lines[len(lines)-10:]...)
	}
	return strings.Join(lines, " | ")
}

// observe reports, for each device of r's current wave still in play,
// what the rollout needs to know: converged to what it gives, its step's
// error, its health and the services of its changed apps.
func (s *Server) observe(ctx context.Context, r *api.Rollout) (map[string]rollout.Observation, error) {
	if r.Wave >= len(r.Stages) {
		return nil, nil
	}
	started := r.Stages[r.Wave].Started
	obs := map[string]rollout.Observation{}
	for _, rd := range r.Devices {
		if rd.Wave != r.Wave || (rd.Outcome != api.OutcomeUpdating && rd.Outcome != api.OutcomeSoaking) {
			continue
		}
		d, err := s.store.Device(ctx, rd.ID)
		if errors.Is(err, store.ErrNotFound) {
			obs[rd.ID] = rollout.Observation{Reason: "device unknown (removed?)"}
			continue
		}
		if err != nil {
			return nil, err
		}
		res, err := s.res.get(ctx, rd.ID)
		if err != nil {
			return nil, err
		}
		obs[rd.ID] = s.observeDevice(ctx, d, rd, res.r, started)
	}
	return obs, nil
}

func (s *Server) observeDevice(ctx context.Context, d api.Device, rd api.RolloutDevice, res *api.Resolved, started time.Time) rollout.Observation {
	var o rollout.Observation
	// An error counts against the step when it is the step's: the
	// agent says so (ErrorDigest), or it says nothing (an older agent)
	// and has not applied the state yet. A device that applied it and
	// then could not reach the server (a server restart in the middle
	// of a soak) has not failed its step.
	stepErr := d.Error != "" && (d.ErrorDigest == res.Digest ||
		(d.ErrorDigest == "" && d.Applied != res.Digest && d.LastSeen.After(started)))
	switch {
	case res.Error != "":
		o.StepError = "desired state cannot be resolved: " + res.Error
	case stepErr:
		o.StepError = d.Error
	}
	o.Converged = !stepErr && res.Error == "" && !res.Unset && d.Applied == res.Digest
	switch {
	case d.Health == api.HealthTerminate ||
		(d.Termination != nil && (d.Termination.State == api.TerminationTerminating || d.Termination.State == api.TerminationTerminated)):
		o.Health = rollout.HealthTerminating
	case d.Health == api.HealthUnknown: // a check failed
		o.Health = rollout.HealthUnhealthy
	case d.Health == api.HealthStarting:
		o.Health = rollout.HealthUnknown
	case d.Health == api.HealthHealthy:
		o.Health = rollout.HealthHealthy
	default:
		o.Health = rollout.HealthNone
	}
	o.Services, o.Reason = s.servicesOf(ctx, d, rd, res)
	if o.Health == rollout.HealthUnhealthy {
		for _, c := range d.HealthChecks {
			if c.Status != api.HealthHealthy {
				o.Reason = strings.TrimSpace(o.Reason + "; health check " + c.Name + ": " + firstLineOf(c.Output))
				break
			}
		}
	}
	return o
}

func firstLineOf(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

// servicesOf says how the services of the device's changed apps stand, all
// taken together: bad if one failed or is unhealthy, waiting if one is not
// running yet or has no verdict, else ok; and what is wrong.
func (s *Server) servicesOf(ctx context.Context, d api.Device, rd api.RolloutDevice, res *api.Resolved) (string, string) {
	state, why := rollout.ServicesOK, ""
	worse := func(st, w string) {
		if st == rollout.ServicesBad && state != rollout.ServicesBad {
			state, why = st, w
		} else if st == rollout.ServicesWaiting && state == rollout.ServicesOK {
			state, why = st, w
		}
	}
	for _, step := range rd.Steps {
		if step.Kind == api.StepRemove {
			continue
		}
		var app *api.ResolvedApp
		for i := range res.Apps {
			if res.Apps[i].Name == step.Name && res.Apps[i].Instance == step.Instance {
				app = &res.Apps[i]
			}
		}
		if app == nil {
			continue
		}
		m, err := s.res.manifest(ctx, app.Digest)
		if err != nil {
			worse(rollout.ServicesWaiting, err.Error())
			continue
		}
		for _, svc := range m.Services {
			var ss *api.ServiceState
			for i := range d.Services {
				x := &d.Services[i]
				if x.Package == app.Name && x.Instance == app.Instance && x.Service == svc.Name && x.Version == app.Version {
					ss = x
				}
			}
			label := app.Name + " service " + svc.Name
			switch {
			case ss == nil:
				worse(rollout.ServicesWaiting, label+" not reported yet")
			case ss.State == api.ServiceFailed:
				worse(rollout.ServicesBad, label+" failed: "+firstLineOf(ss.Error))
			case ss.State != api.ServiceRunning:
				worse(rollout.ServicesWaiting, label+" "+ss.State)
			case ss.Health == api.ServiceUnhealthy:
				worse(rollout.ServicesBad, label+" unhealthy: "+firstLineOf(ss.HealthOutput))
			case ss.Unreachable():
				// Up locally, but its peers cannot reach it (network checks).
				worse(rollout.ServicesBad, label+" unreachable from its peers: "+firstLineOf(ss.NetworkError))
			case ss.Health == api.ServiceHealthy, svc.Health == "":
			default:
				worse(rollout.ServicesWaiting, label+" has no health verdict yet")
			}
		}
	}
	return state, why
}

// Wire calls of rollouts (operators only).

func (s *Server) rolloutRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/rollouts", s.admin(s.handleStartRollout))
	mux.HandleFunc("GET /v1/rollouts", s.admin(s.handleRollouts))
	mux.HandleFunc("GET /v1/rollouts/{name}", s.admin(s.handleRollout))
	mux.HandleFunc("POST /v1/rollouts/{name}/pause", s.admin(s.handleRolloutPause))
	mux.HandleFunc("POST /v1/rollouts/{name}/resume", s.admin(s.handleRolloutResume))
	mux.HandleFunc("POST /v1/rollouts/{name}/abort", s.admin(s.handleRolloutAbort))
}

// maxRolloutDocs bounds the documents of one rollout.
const maxRolloutDocs = 20000

func (s *Server) handleStartRollout(w http.ResponseWriter, r *http.Request, p peer) error {
	ctx := r.Context()
	var spec api.RolloutSpec
	if err := readJSON(r, maxStatesBody, &spec); err != nil {
		return err
	}
	dry := r.URL.Query().Get("dry_run") == "1"
	if err := rollout.Normalize(&spec); err != nil {
		return api.Errorf(api.EINVALID, err.Error())
	}
	if len(spec.Documents) == 0 || len(spec.Documents) > maxRolloutDocs {
		return api.Errorf(api.EINVALID, fmt.Sprintf("a rollout applies 1 to %d documents, got %d", maxRolloutDocs, len(spec.Documents)))
	}
	keys := map[string]bool{}
	var keyList []string
	for i, d := range spec.Documents {
		if d.Kind == "" {
			d.Kind = api.DocDevice
			if d.Group != "" {
				d.Kind = api.DocGroup
			}
			spec.Documents[i] = d
		}
		if err := store.CheckDocument(d); err != nil {
			return api.Errorf(api.EINVALID, fmt.Sprintf("document %d: %v", i+1, err))
		}
		if keys[d.Key()] {
			return api.Errorf(api.EINVALID, fmt.Sprintf("%s is given twice", d.Key()))
		}
		keys[d.Key()] = true
		keyList = append(keyList, d.Key())
	}
	s.ro.op.Lock()
	defer s.ro.op.Unlock()
	if name, held := s.rolloutHolds(keyList); held {
		return api.Errorf(api.ECONFLICT, fmt.Sprintf("rollout %s holds these documents: wait for it, or pause and abort it", name))
	}
	docs, err := s.pinDocuments(ctx, spec.Documents)
	if err != nil {
		return err
	}
	// pinDocuments set each document's Set to now: staged, they resolve
	// against the builds that exist now, as a document set now would.
	for i := range docs {
		docs[i].SetBy = p.name
	}
	spec.Documents = docs
	plan, err := s.planDocuments(ctx, docs)
	if err != nil {
		return err
	}
	if spec.Name == "" {
		spec.Name = "rollout-" + s.now().UTC().Format("20060102-150405")
	}
	steps := map[string][]api.PlanStep{}
	var devices, errs []string
	for _, dp := range plan.Devices {
		for _, e := range dp.Errors {
			errs = append(errs, dp.Device+": "+e)
		}
		for _, c := range dp.Conflicts {
			errs = append(errs, dp.Device+": file conflict: "+c)
		}
		if len(dp.Steps) > 0 {
			devices = append(devices, dp.Device)
			steps[dp.Device] = dp.Steps
		}
	}
	if len(errs) > 0 && !dry {
		more := ""
		if len(errs) > 5 {
			more = fmt.Sprintf(" (and %d more)", len(errs)-5)
			errs = errs[:5]
		}
		return api.Errorf(api.EINVALID, fmt.Sprintf("rollout refused: %s%s", strings.Join(errs, "; "), more))
	}
	ro, err := rollout.New(spec, devices, s.now(), p.name)
	if err != nil && (!dry || len(devices) > 0) {
		return api.Errorf(api.EINVALID, err.Error())
	}
	for i := range ro.Devices {
		ro.Devices[i].Steps = steps[ro.Devices[i].ID]
	}
	if dry {
		writeJSON(w, http.StatusOK, api.RolloutDryRun{Plan: plan, Rollout: ro})
		return nil
	}
	s.ro.mu.Lock()
	for _, id := range devices {
		for _, n := range s.ro.staged[id] {
			if x := s.ro.byName[n]; x != nil && rollout.Active(x) {
				s.ro.mu.Unlock()
				return api.Errorf(api.ECONFLICT, fmt.Sprintf("device %s is in rollout %s, which is %s: one rollout at a time per device", id, n, x.Phase))
			}
		}
	}
	s.ro.mu.Unlock()
	if err := s.saveRollout(ctx, &ro, true, []rollout.Note{rollout.Started(&ro)}); err != nil {
		return err
	}
	s.wakeRollouts()
	writeJSON(w, http.StatusCreated, ro)
	return nil
}

func (s *Server) handleRollouts(w http.ResponseWriter, r *http.Request, p peer) error {
	list, err := s.store.Rollouts(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, list)
	return nil
}

func (s *Server) handleRollout(w http.ResponseWriter, r *http.Request, p peer) error {
	ro, err := s.store.Rollout(r.Context(), r.PathValue("name"))
	if errors.Is(err, store.ErrNotFound) {
		return api.Errorf(api.ENOTFOUND, fmt.Sprintf("no rollout %q", r.PathValue("name")))
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, ro)
	return nil
}

func (s *Server) handleRolloutPause(w http.ResponseWriter, r *http.Request, p peer) error {
	return s.operateRollout(w, r, p, "pause")
}

func (s *Server) handleRolloutResume(w http.ResponseWriter, r *http.Request, p peer) error {
	return s.operateRollout(w, r, p, "resume")
}

func (s *Server) handleRolloutAbort(w http.ResponseWriter, r *http.Request, p peer) error {
	if r.URL.Query().Get("revert") == "1" {
		return s.operateRollout(w, r, p, "abort-revert")
	}
	return s.operateRollout(w, r, p, "abort")
}

// operateRollout applies an operator's action and answers the rollout.
func (s *Server) operateRollout(w http.ResponseWriter, r *http.Request, p peer, action string) error {
	name := r.PathValue("name")
	if err := s.rolloutAction(r.Context(), name, action, p.name); err != nil {
		return err
	}
	ro, err := s.store.Rollout(r.Context(), name)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, ro)
	return nil
}

// rolloutAction pauses, resumes or aborts a rollout ("pause", "resume",
// "abort", "abort-revert") for an operator, from the wire API or the
// fleet page alike.
func (s *Server) rolloutAction(ctx context.Context, name, action, by string) error {
	now := s.now()
	op := map[string]func(*api.Rollout) (rollout.Result, error){
		"pause":        func(r *api.Rollout) (rollout.Result, error) { return rollout.Pause(r, now, by) },
		"resume":       func(r *api.Rollout) (rollout.Result, error) { return rollout.Resume(r, now, by) },
		"abort":        func(r *api.Rollout) (rollout.Result, error) { return rollout.Abort(r, now, by, false) },
		"abort-revert": func(r *api.Rollout) (rollout.Result, error) { return rollout.Abort(r, now, by, true) },
	}[action]
	if op == nil {
		return api.Errorf(api.EINVALID, fmt.Sprintf("no rollout action %q", action))
	}
	err := s.changeRollout(ctx, name, func(r *api.Rollout) (rollout.Result, error) {
		res, err := op(r)
		if err != nil {
			return res, api.Errorf(api.ECONFLICT, err.Error())
		}
		return res, nil
	})
	if err == nil {
		s.wakeRollouts()
	}
	return err
}
