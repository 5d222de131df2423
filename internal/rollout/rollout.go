package rollout

import (
	"fmt"
	"strings"
	"time"

	"github.com/drover-dev/drover/internal/api"
)

// Health of a device's health checks as a rollout sees it.
const (
	HealthNone        = ""            // the device has no health checks
	HealthHealthy     = "healthy"     // every check passes
	HealthUnhealthy   = "unhealthy"   // a check fails
	HealthUnknown     = "unknown"     // no verdict yet: waited for, within the wave timeout
	HealthTerminating = "terminating" // a check asks for termination, or it runs
)

// States of the services of a device's changed apps, taken together.
const (
	ServicesOK      = "ok"      // each runs and is healthy (or runs and has no health command)
	ServicesWaiting = "waiting" // one is not running yet, or has no verdict yet
	ServicesBad     = "bad"     // one failed, or its health command fails
)

// Observation is what the server knows of one device of a begun wave.
type Observation struct {
	// Converged: the device reported it applied the state the rollout
	// gives it, without error.
	Converged bool
	// StepError is the error of its last try of that state; "" if none.
	StepError string
	Health    string // a Health constant
	Services  string // a Services constant
	// Reason says what is wrong with its health or services ("service
	// web.web unhealthy: exit 1").
	Reason string
}

func (o Observation) ready() bool {
	return o.Converged && o.StepError == "" && (o.Health == HealthNone || o.Health == HealthHealthy) && o.Services == ServicesOK
}

// badVerdict is a failure at once: a verdict, not a wait.
func (o Observation) badVerdict() bool {
	return o.Health == HealthUnhealthy || o.Health == HealthTerminating || o.Services == ServicesBad
}

// why says what keeps o from being ready.
func (o Observation) why() string {
	var parts []string
	if !o.Converged {
		parts = append(parts, "not converged")
	}
	switch o.Health {
	case HealthNone, HealthHealthy:
	default:
		parts = append(parts, "health "+o.Health)
	}
	if o.Services != ServicesOK {
		s := "services " + o.Services
		if o.Services == "" {
			s = "services not reported"
		}
		parts = append(parts, s)
	}
	if o.Reason != "" {
		parts = append(parts, o.Reason)
	}
	return strings.Join(parts, ", ")
}

// Note is an event the driver emits for a transition.
type Note struct {
	Kind     string
	Level    string
	Priority string
	Message  string
}

// Event kinds of rollouts (api.KindRollout*).
const (
	KindStarted = api.KindRolloutStarted
	KindWave    = api.KindRolloutWave
	KindPaused  = api.KindRolloutPaused
	KindResumed = api.KindRolloutResumed
	KindFailed  = api.KindRolloutFailed
	KindDone    = api.KindRolloutDone
	KindAborted = api.KindRolloutAborted
)

// Result is what a transition asks the driver to do.
type Result struct {
	// Changed: the rollout must be stored again.
	Changed bool
	Notes   []Note
	// Admit are devices that now get the rollout's documents; Revert
	// devices that get their previous state back.
	Admit  []string
	Revert []string
	// Done: the last wave passed; the documents become the stored state.
	Done bool
	// Next is when Step must look again even without a new observation
	// (the end of a soak or of a wave timeout); zero when only a report
	// can change anything.
	Next time.Time
}

func (res *Result) note(kind, level, prio, format string, args ...any) {
	res.Notes = append(res.Notes, Note{Kind: kind, Level: level, Priority: prio, Message: fmt.Sprintf(format, args...)})
}

// Started is the note of a new rollout.
func Started(r *api.Rollout) Note {
	return Note{Kind: KindStarted, Level: api.LevelInfo, Priority: api.PriorityMedium,
		Message: fmt.Sprintf("rollout %s started by %s: %d devices in %d waves (%s), soak %v",
			r.Name, r.CreatedBy, len(r.Devices), len(r.Stages), strings.Join(r.Waves, ","), time.Duration(r.Soak))}
}

// Active reports whether r still runs or may run again (running or
// paused): its documents are held.
func Active(r *api.Rollout) bool {
	return r.Phase == api.RolloutRunning || r.Phase == api.RolloutPaused
}

// admitted reports whether a device outcome means it holds the rollout's
// documents.
func admitted(outcome string) bool {
	switch outcome {
	case api.OutcomeUpdating, api.OutcomeSoaking, api.OutcomePassed, api.OutcomeFailed:
		return true
	}
	return false
}

// Staged returns the devices to which r gives its documents now: those
// of begun waves, until r reverts them or ends done (then the documents
// are the stored state). An aborted rollout leaves its devices where it
// stopped them.
func Staged(r *api.Rollout) []string {
	if r.Phase == api.RolloutDone || r.Phase == api.RolloutFailed {
		return nil
	}
	var out []string
	for _, d := range r.Devices {
		if admitted(d.Outcome) {
			out = append(out, d.ID)
		}
	}
	return out
}

// NeedsGate reports whether r's current wave is to begin: the driver runs
// the gate hooks, then calls Begin (or GateRefused).
func NeedsGate(r *api.Rollout) bool {
	return r.Phase == api.RolloutRunning && r.Wave < len(r.Stages) &&
		r.Stages[r.Wave].Started.IsZero() && r.Stages[r.Wave].Size > 0
}

// Begin begins r's current wave at now: its devices get the new state.
func Begin(r *api.Rollout, now time.Time) Result {
	var res Result
	if r.Phase != api.RolloutRunning || r.Wave >= len(r.Stages) || !r.Stages[r.Wave].Started.IsZero() {
		return res
	}
	st := &r.Stages[r.Wave]
	st.Started = now.UTC()
	for i := range r.Devices {
		if d := &r.Devices[i]; d.Wave == r.Wave && d.Outcome == api.OutcomePending {
			d.Outcome = api.OutcomeUpdating
			res.Admit = append(res.Admit, d.ID)
		}
	}
	res.Changed = true
	res.note(KindWave, api.LevelInfo, api.PriorityMedium, "rollout %s: wave %d/%d began: %s",
		r.Name, r.Wave+1, len(r.Stages), devicesText(st.Devices))
	res.Next = now.Add(time.Duration(r.WaveTimeout))
	r.Updated = now.UTC()
	return res
}

func devicesText(ids []string) string {
	const show = 5
	if len(ids) <= show {
		return fmt.Sprintf("%d devices (%s)", len(ids), strings.Join(ids, ", "))
	}
	return fmt.Sprintf("%d devices (%s, ...)", len(ids), strings.Join(ids[:show], ", "))
}

// Step moves r on at now with obs, the observations of the devices of its
// current wave (a device without one is not converged). It fails devices,
// starts and ends the soak, passes waves and stops r when a wave has more
// failures than allowed. Only a running rollout moves.
func Step(r *api.Rollout, now time.Time, obs map[string]Observation) Result {
	var res Result
	for r.Phase == api.RolloutRunning && r.Wave < len(r.Stages) {
		st := &r.Stages[r.Wave]
		if st.Started.IsZero() {
			if st.Size > 0 {
				return res // the gate first
			}
			// A wave that adds no device passes at once.
			st.Started, st.Passed = now.UTC(), now.UTC()
			res.Changed = true
			advance(r, now, &res)
			continue
		}
		if !stepWave(r, st, now, obs, &res) {
			return res
		}
		advance(r, now, &res)
	}
	return res
}

// stepWave moves the current, begun wave on; it reports whether it passed.
func stepWave(r *api.Rollout, st *api.RolloutWave, now time.Time, obs map[string]Observation, res *Result) bool {
	soaking := !st.Soaking.IsZero()
	timedOut := !soaking && !now.Before(st.Started.Add(time.Duration(r.WaveTimeout)))
	fail := func(d *api.RolloutDevice, why string) {
		d.Outcome, d.Reason = api.OutcomeFailed, why
		res.Changed = true
	}
	failures, live, ready := 0, 0, 0
	for i := range r.Devices {
		d := &r.Devices[i]
		if d.Wave != r.Wave {
			continue
		}
		if d.Outcome == api.OutcomeUpdating || d.Outcome == api.OutcomeSoaking {
			o := obs[d.ID]
			switch {
			case o.StepError != "":
				fail(d, "step failed: "+o.StepError)
			case soaking && (o.Health == HealthUnhealthy || o.Health == HealthTerminating || o.Services != ServicesOK):
				fail(d, "during the soak: "+o.why())
			case !soaking && o.Converged && o.badVerdict():
				fail(d, o.why())
			case timedOut && !o.ready():
				fail(d, fmt.Sprintf("not converged and healthy within %v: %s", time.Duration(r.WaveTimeout), o.why()))
			}
		}
		switch d.Outcome {
		case api.OutcomeFailed:
			failures++
		case api.OutcomeUpdating, api.OutcomeSoaking:
			live++
			if o := obs[d.ID]; o.ready() {
				ready++
			}
		}
	}
	if st.Failures != failures {
		st.Failures, res.Changed = failures, true
	}
	if res.Changed {
		r.Updated = now.UTC()
	}
	if failures > allowedFailures(r.MaxFailures, st.Size) {
		stop(r, now, res)
		return false
	}
	if !soaking {
		if ready < live {
			res.Next = st.Started.Add(time.Duration(r.WaveTimeout))
			return false
		}
		st.Soaking = now.UTC()
		for i := range r.Devices {
			if d := &r.Devices[i]; d.Wave == r.Wave && d.Outcome == api.OutcomeUpdating {
				d.Outcome = api.OutcomeSoaking
			}
		}
		res.Changed = true
	}
	end := st.Soaking.Add(time.Duration(r.Soak))
	if now.Before(end) {
		res.Next = end
		return false
	}
	st.Passed = now.UTC()
	for i := range r.Devices {
		if d := &r.Devices[i]; d.Wave == r.Wave && d.Outcome == api.OutcomeSoaking {
			d.Outcome = api.OutcomePassed
		}
	}
	res.Changed = true
	res.note(KindWave, api.LevelInfo, api.PriorityMedium, "rollout %s: wave %d/%d passed (%d failed of %d)",
		r.Name, r.Wave+1, len(r.Stages), failures, st.Size)
	return true
}

// advance moves r past its current, passed wave: to the next, or done.
func advance(r *api.Rollout, now time.Time, res *Result) {
	r.Updated = now.UTC()
	if r.Wave+1 < len(r.Stages) {
		r.Wave++
		return
	}
	r.Phase = api.RolloutDone
	res.Done = true
	res.note(KindDone, api.LevelInfo, api.PriorityMedium, "rollout %s done: %d devices in %d waves", r.Name, len(r.Devices), len(r.Stages))
}

// stop ends or pauses r after its current wave had too many failures.
func stop(r *api.Rollout, now time.Time, res *Result) {
	st := r.Stages[r.Wave]
	var failed []string
	for _, d := range r.Devices {
		if d.Wave == r.Wave && d.Outcome == api.OutcomeFailed {
			failed = append(failed, d.ID+": "+d.Reason)
		}
	}
	const show = 3
	more := ""
	if len(failed) > show {
		more = fmt.Sprintf("; and %d more", len(failed)-show)
		failed = failed[:show]
	}
	why := fmt.Sprintf("wave %d/%d: %d of %d devices failed (max %s): %s%s",
		r.Wave+1, len(r.Stages), st.Failures, st.Size, r.MaxFailures, strings.Join(failed, "; "), more)
	r.Reason = why
	r.Updated = now.UTC()
	res.Changed = true
	if r.OnFailure == api.OnFailureRevert {
		revert(r, res)
		r.Phase = api.RolloutFailed
		res.note(KindFailed, api.LevelError, api.PriorityHigh, "rollout %s failed, previous state given back to %d devices: %s",
			r.Name, len(res.Revert), why)
		return
	}
	r.Phase = api.RolloutPaused
	res.note(KindPaused, api.LevelWarn, api.PriorityHigh, "rollout %s paused: %s", r.Name, why)
}

// revert gives every admitted device its previous state back and marks
// the devices of waves not begun untouched.
func revert(r *api.Rollout, res *Result) {
	for i := range r.Devices {
		d := &r.Devices[i]
		switch {
		case admitted(d.Outcome):
			d.Outcome = api.OutcomeReverted
			res.Revert = append(res.Revert, d.ID)
		case d.Outcome == api.OutcomePending:
			d.Outcome = api.OutcomeUntouched
		}
	}
}

func untouch(r *api.Rollout) {
	for i := range r.Devices {
		if r.Devices[i].Outcome == api.OutcomePending {
			r.Devices[i].Outcome = api.OutcomeUntouched
		}
	}
}

// GateRefused pauses r before its current wave because a gate hook said
// no; why is the tail of its output.
func GateRefused(r *api.Rollout, now time.Time, why string) Result {
	var res Result
	if r.Phase != api.RolloutRunning {
		return res
	}
	r.Phase, r.Reason, r.Updated = api.RolloutPaused, why, now.UTC()
	res.Changed = true
	res.note(KindPaused, api.LevelWarn, api.PriorityMedium, "rollout %s paused before wave %d/%d: %s", r.Name, r.Wave+1, len(r.Stages), why)
	return res
}

// Pause pauses a running r at an operator's request: every device stays
// as it is.
func Pause(r *api.Rollout, now time.Time, by string) (Result, error) {
	var res Result
	if r.Phase != api.RolloutRunning {
		return res, fmt.Errorf("rollout %s is %s, not running", r.Name, r.Phase)
	}
	r.Phase, r.Reason, r.Updated = api.RolloutPaused, "paused by "+by, now.UTC()
	res.Changed = true
	res.note(KindPaused, api.LevelInfo, api.PriorityMedium, "rollout %s paused by %s in wave %d/%d", r.Name, by, r.Wave+1, len(r.Stages))
	return res, nil
}

// Resume runs a paused r again. Its current wave starts over: the gate
// runs again if the wave had not begun; if it had, its failed devices get
// another chance and its wave timeout and soak start again from now.
func Resume(r *api.Rollout, now time.Time, by string) (Result, error) {
	var res Result
	if r.Phase != api.RolloutPaused {
		return res, fmt.Errorf("rollout %s is %s, not paused", r.Name, r.Phase)
	}
	r.Phase, r.Reason, r.Updated = api.RolloutRunning, "", now.UTC()
	if st := &r.Stages[r.Wave]; !st.Started.IsZero() && st.Passed.IsZero() {
		st.Started, st.Soaking, st.Failures = now.UTC(), time.Time{}, 0
		for i := range r.Devices {
			d := &r.Devices[i]
			if d.Wave == r.Wave && (d.Outcome == api.OutcomeSoaking || d.Outcome == api.OutcomeFailed) {
				d.Outcome, d.Reason = api.OutcomeUpdating, ""
			}
		}
	}
	res.Changed = true
	res.note(KindResumed, api.LevelInfo, api.PriorityMedium, "rollout %s resumed by %s at wave %d/%d", r.Name, by, r.Wave+1, len(r.Stages))
	return res, nil
}

// Abort ends a running or paused r where it is; with revert, every device
// it gave the new state gets its previous state back.
func Abort(r *api.Rollout, now time.Time, by string, withRevert bool) (Result, error) {
	var res Result
	if !Active(r) {
		return res, fmt.Errorf("rollout %s is %s already", r.Name, r.Phase)
	}
	r.Phase, r.Updated = api.RolloutAborted, now.UTC()
	r.Reason = "aborted by " + by
	if withRevert {
		revert(r, &res)
		r.Reason += "; previous state given back"
	}
	untouch(r)
	res.Changed = true
	res.note(KindAborted, api.LevelWarn, api.PriorityMedium, "rollout %s %s in wave %d/%d", r.Name, r.Reason, r.Wave+1, len(r.Stages))
	return res, nil
}
