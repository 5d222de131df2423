package rollout

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/api"
)

var t0 = time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)

// sim drives a rollout as the server's driver does, with a fake clock and
// observations the test sets.
type sim struct {
	t       *testing.T
	r       api.Rollout
	now     time.Time
	obs     map[string]Observation
	staged  map[string]bool // devices that hold the new state
	ever    map[string]bool // devices that ever held it
	notes   []Note
	done    bool
	gate    func(wave int) string // "" lets the wave begin
	lastRes Result
}

var good = Observation{Converged: true, Health: HealthHealthy, Services: ServicesOK}

func newSim(t *testing.T, spec api.RolloutSpec, n int) *sim {
	t.Helper()
	spec.Name = "r1"
	r, err := New(spec, ids(n), t0, "admin")
	if err != nil {
		t.Fatal(err)
	}
	return &sim{t: t, r: r, now: t0, obs: map[string]Observation{}, staged: map[string]bool{}, ever: map[string]bool{}}
}

func (s *sim) apply(res Result) {
	s.lastRes = res
	s.notes = append(s.notes, res.Notes...)
	for _, id := range res.Admit {
		s.staged[id], s.ever[id] = true, true
	}
	for _, id := range res.Revert {
		delete(s.staged, id)
	}
	if res.Done {
		s.done = true
	}
}

// tick runs the driver once at the current time.
func (s *sim) tick() {
	for {
		if NeedsGate(&s.r) {
			if s.gate != nil {
				if why := s.gate(s.r.Wave); why != "" {
					s.apply(GateRefused(&s.r, s.now, why))
					return
				}
			}
			s.apply(Begin(&s.r, s.now))
		}
		s.apply(Step(&s.r, s.now, s.obs))
		if !NeedsGate(&s.r) {
			return
		}
	}
}

// converge makes every staged device converged and healthy.
func (s *sim) converge() {
	for id := range s.staged {
		s.obs[id] = good
	}
}

func (s *sim) advance(d time.Duration) { s.now = s.now.Add(d); s.tick() }

func (s *sim) outcome(id string) string {
	for _, d := range s.r.Devices {
		if d.ID == id {
			return d.Outcome
		}
	}
	return "none"
}

func (s *sim) kinds() []string {
	var out []string
	for _, n := range s.notes {
		out = append(out, n.Kind)
	}
	return out
}

func spec(waves string) api.RolloutSpec {
	ws, _ := ParseWaves(waves)
	return api.RolloutSpec{Waves: ws, Soak: api.Duration(time.Minute), WaveTimeout: api.Duration(10 * time.Minute)}
}

func TestGoodRolloutToDone(t *testing.T) {
	s := newSim(t, spec("1,10%,50%,100%"), 20)
	s.tick()
	if len(s.staged) != 1 || !s.staged["dev-0000"] || s.outcome("dev-0000") != api.OutcomeUpdating || s.outcome("dev-0001") != api.OutcomePending {
		t.Fatalf("after start: staged %v, outcomes %v", s.staged, s.r.Devices[:2])
	}
	// Not converged: nothing moves, and the driver is told when to look
	// again (the wave timeout).
	s.advance(30 * time.Second)
	if !s.r.Stages[0].Soaking.IsZero() || !s.lastRes.Next.Equal(t0.Add(10*time.Minute)) {
		t.Fatalf("soak began before convergence, next %v", s.lastRes.Next)
	}
	s.converge()
	s.tick()
	if s.r.Stages[0].Soaking != s.now || s.outcome("dev-0000") != api.OutcomeSoaking {
		t.Fatalf("soak did not begin: %+v", s.r.Stages[0])
	}
	if !s.lastRes.Next.Equal(s.now.Add(time.Minute)) {
		t.Errorf("next = %v, want the end of the soak", s.lastRes.Next)
	}
	s.advance(59 * time.Second)
	if s.r.Wave != 0 {
		t.Fatal("wave passed before its soak ended")
	}
	// Each later wave: soak ends, next begins; converge; soak.
	for wave := 1; wave < 4; wave++ {
		if wave == 1 {
			s.advance(time.Second)
		} else {
			s.advance(time.Minute)
		}
		if s.r.Wave != wave || s.r.Stages[wave].Started.IsZero() {
			t.Fatalf("wave %d not begun: %+v", wave, s.r.Stages)
		}
		s.converge()
		s.tick()
	}
	s.advance(time.Minute)
	if s.r.Phase != api.RolloutDone || !s.done {
		t.Fatalf("phase %s done %v, want done", s.r.Phase, s.done)
	}
	for _, d := range s.r.Devices {
		if d.Outcome != api.OutcomePassed {
			t.Errorf("%s: %s, want passed", d.ID, d.Outcome)
		}
	}
	want := []string{KindWave, KindWave, KindWave, KindWave, KindWave, KindWave, KindWave, KindWave, KindDone}
	if !slices.Equal(s.kinds(), want) {
		t.Errorf("notes %v, want %v", s.kinds(), want)
	}
	// 20 devices: 1, ceil(2)=2 -> 1 more, 10, 20.
	var sizes []int
	for _, st := range s.r.Stages {
		sizes = append(sizes, st.Size)
	}
	if !slices.Equal(sizes, []int{1, 1, 8, 10}) {
		t.Errorf("sizes %v", sizes)
	}
}

func TestFailures(t *testing.T) {
	unhealthy := Observation{Converged: true, Health: HealthHealthy, Services: ServicesBad, Reason: "service web unhealthy"}
	for _, tc := range []struct {
		name      string
		spec      func(*api.RolloutSpec)
		first     Observation   // of the first wave's device, after the start
		wait      time.Duration // before the check
		later     *Observation  // then, during the soak
		phase     string
		outcome   string
		reason    string
		kind      string
		priority  string
		reverted  bool
		untouched bool
	}{
		{name: "step fails", first: Observation{StepError: "postinst: exit 1"},
			phase: api.RolloutPaused, outcome: api.OutcomeFailed, reason: "step failed: postinst: exit 1",
			kind: KindPaused, priority: api.PriorityHigh},
		{name: "service unhealthy once converged", first: unhealthy,
			phase: api.RolloutPaused, outcome: api.OutcomeFailed, reason: "service web unhealthy", kind: KindPaused, priority: api.PriorityHigh},
		{name: "device unhealthy once converged", first: Observation{Converged: true, Health: HealthUnhealthy, Services: ServicesOK},
			phase: api.RolloutPaused, outcome: api.OutcomeFailed, reason: "health unhealthy", kind: KindPaused, priority: api.PriorityHigh},
		{name: "no verdict is waited for", first: Observation{Converged: true, Health: HealthUnknown, Services: ServicesWaiting},
			wait: 9 * time.Minute, phase: api.RolloutRunning, outcome: api.OutcomeUpdating},
		{name: "no verdict within the timeout", first: Observation{Converged: true, Health: HealthUnknown, Services: ServicesOK},
			wait: 10 * time.Minute, phase: api.RolloutPaused, outcome: api.OutcomeFailed, reason: "not converged and healthy within 10m0s: health unknown",
			kind: KindPaused, priority: api.PriorityHigh},
		{name: "not converged within the timeout", first: Observation{},
			wait: 10 * time.Minute, phase: api.RolloutPaused, outcome: api.OutcomeFailed, reason: "not converged",
			kind: KindPaused, priority: api.PriorityHigh},
		{name: "unhealthy during the soak", first: good, later: &unhealthy,
			phase: api.RolloutPaused, outcome: api.OutcomeFailed, reason: "during the soak: services bad, service web unhealthy",
			kind: KindPaused, priority: api.PriorityHigh},
		{name: "terminating during the soak", first: good, later: &Observation{Converged: true, Health: HealthTerminating, Services: ServicesOK},
			phase: api.RolloutPaused, outcome: api.OutcomeFailed, reason: "health terminating", kind: KindPaused, priority: api.PriorityHigh},
		{name: "service stopped during the soak", first: good, later: &Observation{Converged: true, Services: ServicesWaiting},
			phase: api.RolloutPaused, outcome: api.OutcomeFailed, reason: "services waiting", kind: KindPaused, priority: api.PriorityHigh},
		{name: "no health checks is healthy", first: Observation{Converged: true, Health: HealthNone, Services: ServicesOK},
			wait: time.Minute, phase: api.RolloutRunning, outcome: api.OutcomePassed},
		{name: "revert", spec: func(s *api.RolloutSpec) { s.OnFailure = api.OnFailureRevert }, first: unhealthy,
			phase: api.RolloutFailed, outcome: api.OutcomeReverted, reason: "service web unhealthy", kind: KindFailed, priority: api.PriorityHigh,
			reverted: true, untouched: true},
		{name: "allowed failure", spec: func(s *api.RolloutSpec) { s.MaxFailures = "1" }, first: unhealthy,
			wait: time.Minute, phase: api.RolloutRunning, outcome: api.OutcomeFailed, reason: "service web unhealthy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sp := spec("1,100%")
			if tc.spec != nil {
				tc.spec(&sp)
			}
			s := newSim(t, sp, 4)
			s.tick()
			s.obs["dev-0000"] = tc.first
			s.advance(0)
			if tc.later != nil {
				s.advance(30 * time.Second)
				s.obs["dev-0000"] = *tc.later
			}
			s.advance(tc.wait)
			if s.r.Phase != tc.phase {
				t.Fatalf("phase %s, want %s (reason %q)", s.r.Phase, tc.phase, s.r.Reason)
			}
			d := s.r.Devices[0]
			if d.Outcome != tc.outcome {
				t.Errorf("outcome %s, want %s", d.Outcome, tc.outcome)
			}
			if tc.reason != "" && !strings.Contains(d.Reason+" | "+s.r.Reason, tc.reason) {
				t.Errorf("reasons %q / %q, want %q", d.Reason, s.r.Reason, tc.reason)
			}
			if tc.kind != "" {
				last := s.notes[len(s.notes)-1]
				if last.Kind != tc.kind || last.Priority != tc.priority || !strings.Contains(last.Message, "dev-0000") {
					t.Errorf("last note %+v, want %s %s naming the device", last, tc.kind, tc.priority)
				}
			}
			// Only the first wave's device ever held the new state unless
			// the rollout goes on.
			if tc.phase != api.RolloutRunning && (len(s.ever) != 1 || !s.ever["dev-0000"]) {
				t.Errorf("devices that held the new state: %v", s.ever)
			}
			if tc.reverted != !s.staged["dev-0000"] && tc.phase != api.RolloutRunning {
				t.Errorf("reverted %v, staged %v", tc.reverted, s.staged)
			}
			if tc.untouched && s.outcome("dev-0003") != api.OutcomeUntouched {
				t.Errorf("dev-0003 %s, want untouched", s.outcome("dev-0003"))
			}
			if got := Staged(&s.r); tc.reverted && len(got) != 0 {
				t.Errorf("Staged after revert = %v", got)
			}
		})
	}
}

func TestMaxFailuresPercent(t *testing.T) {
	sp := spec("100%")
	sp.MaxFailures = "25%"
	s := newSim(t, sp, 8) // 2 may fail
	s.tick()
	s.converge()
	bad := Observation{StepError: "boom"}
	s.obs["dev-0001"], s.obs["dev-0002"] = bad, bad
	s.tick()
	if s.r.Phase != api.RolloutRunning || s.r.Stages[0].Failures != 2 || s.r.Stages[0].Soaking.IsZero() {
		t.Fatalf("with 2 of 8 failed: phase %s, stage %+v", s.r.Phase, s.r.Stages[0])
	}
	s.obs["dev-0003"] = bad
	s.tick()
	if s.r.Phase != api.RolloutPaused || s.r.Stages[0].Failures != 3 || !strings.Contains(s.r.Reason, "3 of 8 devices failed (max 25%)") {
		t.Fatalf("with 3 of 8 failed: phase %s, reason %q", s.r.Phase, s.r.Reason)
	}
}

func TestPauseResumeAbort(t *testing.T) {
	s := newSim(t, spec("1,100%"), 3)
	s.tick()
	if _, err := Resume(&s.r, s.now, "admin"); err == nil {
		t.Error("Resume of a running rollout succeeded")
	}
	s.converge()
	s.tick()
	res, err := Pause(&s.r, s.now, "admin")
	if err != nil {
		t.Fatal(err)
	}
	s.apply(res)
	if s.r.Phase != api.RolloutPaused || s.r.Reason != "paused by admin" {
		t.Fatalf("phase %s reason %q", s.r.Phase, s.r.Reason)
	}
	// Paused: the soak's end passes nothing.
	s.advance(2 * time.Minute)
	if s.r.Wave != 0 || s.r.Stages[0].Passed.IsZero() == false {
		t.Fatal("a paused rollout moved on")
	}
	res, err = Resume(&s.r, s.now, "admin")
	if err != nil {
		t.Fatal(err)
	}
	s.apply(res)
	if s.r.Phase != api.RolloutRunning || s.outcome("dev-0000") != api.OutcomeUpdating {
		t.Fatalf("after resume: %s, device %s", s.r.Phase, s.outcome("dev-0000"))
	}
	// The soak starts over from the resume.
	s.tick()
	s.advance(59 * time.Second)
	if s.r.Wave != 0 {
		t.Fatal("soak did not start over")
	}
	s.advance(time.Second)
	if s.r.Wave != 1 || len(s.staged) != 3 {
		t.Fatalf("wave %d staged %v", s.r.Wave, s.staged)
	}
	res, err = Abort(&s.r, s.now, "admin", true)
	if err != nil {
		t.Fatal(err)
	}
	s.apply(res)
	if s.r.Phase != api.RolloutAborted || len(s.staged) != 0 || len(Staged(&s.r)) != 0 {
		t.Fatalf("after abort --revert: %s staged %v", s.r.Phase, s.staged)
	}
	if last := s.notes[len(s.notes)-1]; last.Kind != KindAborted || last.Priority != api.PriorityMedium {
		t.Errorf("note %+v", last)
	}
	if _, err := Abort(&s.r, s.now, "admin", false); err == nil {
		t.Error("second abort succeeded")
	}
}

func TestAbortWithoutRevertKeepsDevices(t *testing.T) {
	s := newSim(t, spec("1,100%"), 3)
	s.tick()
	res, _ := Abort(&s.r, s.now, "admin", false)
	s.apply(res)
	if got := Staged(&s.r); !slices.Equal(got, []string{"dev-0000"}) {
		t.Errorf("Staged = %v, want the first wave's device", got)
	}
	if s.outcome("dev-0001") != api.OutcomeUntouched || Active(&s.r) {
		t.Errorf("dev-0001 %s active %v", s.outcome("dev-0001"), Active(&s.r))
	}
}

func TestResumeAfterFailuresGivesAnotherChance(t *testing.T) {
	s := newSim(t, spec("1,100%"), 2)
	s.tick()
	s.obs["dev-0000"] = Observation{StepError: "boom"}
	s.tick()
	if s.r.Phase != api.RolloutPaused {
		t.Fatal(s.r.Phase)
	}
	res, _ := Resume(&s.r, s.now, "admin")
	s.apply(res)
	s.obs["dev-0000"] = good // fixed on the machine
	s.tick()
	if s.r.Phase != api.RolloutRunning || s.r.Stages[0].Failures != 0 || s.outcome("dev-0000") != api.OutcomeSoaking {
		t.Fatalf("phase %s stage %+v device %s", s.r.Phase, s.r.Stages[0], s.outcome("dev-0000"))
	}
}

func TestGate(t *testing.T) {
	s := newSim(t, spec("1,100%"), 3)
	calls := 0
	s.gate = func(wave int) string {
		calls++
		if wave == 1 && calls == 2 {
			return "hook check: error budget spent"
		}
		return ""
	}
	s.tick()
	s.converge()
	s.tick()
	s.advance(time.Minute)
	if s.r.Phase != api.RolloutPaused || s.r.Reason != "hook check: error budget spent" || len(s.ever) != 1 {
		t.Fatalf("phase %s reason %q ever %v", s.r.Phase, s.r.Reason, s.ever)
	}
	if last := s.notes[len(s.notes)-1]; last.Kind != KindPaused || last.Priority != api.PriorityMedium || !strings.Contains(last.Message, "error budget") {
		t.Errorf("note %+v", last)
	}
	res, _ := Resume(&s.r, s.now, "admin")
	s.apply(res)
	s.tick() // the gate runs again and now lets it in
	if calls != 3 || s.r.Wave != 1 || len(s.ever) != 3 {
		t.Fatalf("calls %d wave %d ever %v", calls, s.r.Wave, s.ever)
	}
}

func TestEmptyWavesPassAtOnce(t *testing.T) {
	s := newSim(t, spec("1,10%,50%,100%"), 2) // sizes 1, 0, 0, 1
	gates := 0
	s.gate = func(int) string { gates++; return "" }
	s.tick()
	s.converge()
	s.tick()
	s.advance(time.Minute)
	if s.r.Wave != 3 || gates != 2 || len(s.ever) != 2 {
		t.Fatalf("wave %d gates %d ever %v", s.r.Wave, gates, s.ever)
	}
	s.converge()
	s.tick()
	s.advance(time.Minute)
	if s.r.Phase != api.RolloutDone {
		t.Fatal(s.r.Phase)
	}
}

func TestNewRefuses(t *testing.T) {
	if _, err := New(api.RolloutSpec{Name: "r"}, nil, t0, "a"); err == nil || !strings.Contains(err.Error(), "changes no device") {
		t.Errorf("New with no devices: %v", err)
	}
	if _, err := New(api.RolloutSpec{}, ids(1), t0, "a"); err == nil {
		t.Error("New without a name succeeded")
	}
}
