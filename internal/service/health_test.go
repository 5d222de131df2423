package service

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/drover-dev/drover/internal/api"
)

func TestHealthTrack(t *testing.T) {
	const (
		ok  = api.ServiceHealthy
		bad = api.ServiceUnhealthy
		unk = api.ServiceHealthUnknown
	)
	tests := []struct {
		name    string
		results []string
		want    []string // the verdict after each result
		restart []bool   // whether a restart is due after each result
	}{
		{"no results", nil, nil, nil},
		{"one good result is not yet a verdict", []string{ok}, []string{unk}, []bool{false}},
		{"two good results", []string{ok, ok}, []string{unk, ok}, []bool{false, false}},
		{"one odd result does not flap", []string{ok, ok, bad, ok}, []string{unk, ok, ok, ok}, []bool{false, false, false, false}},
		{"two bad results turn unhealthy, the third restarts", []string{ok, ok, bad, bad, bad}, []string{unk, ok, ok, bad, bad}, []bool{false, false, false, false, true}},
		{"alternating results keep the verdict", []string{bad, bad, ok, bad, ok, bad}, []string{unk, bad, bad, bad, bad, bad}, []bool{false, false, false, false, false, false}},
		{"a good result restarts the count", []string{bad, bad, ok, bad, bad}, []string{unk, bad, bad, bad, bad}, []bool{false, false, false, false, false}},
		{"recovery needs two good results", []string{bad, bad, ok, ok}, []string{unk, bad, bad, ok}, []bool{false, false, false, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h healthTrack
			var got []string
			var restart []bool
			for _, r := range tt.results {
				before := h.state
				if before == "" {
					before = unk
				}
				if changed := h.observe(r); changed != (before != h.state) {
					t.Errorf("observe(%s) = %v, verdict %s -> %s", r, changed, before, h.state)
				}
				got = append(got, h.state)
				restart = append(restart, h.bad >= healthRestartAfter)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("verdicts of %v (-want +got):\n%s", tt.results, diff)
			}
			if diff := cmp.Diff(tt.restart, restart); diff != "" {
				t.Errorf("restarts due after %v (-want +got):\n%s", tt.results, diff)
			}
		})
	}
}

// healthSup is a supervisor with short health intervals, and a location
// with a service (bin/run) and a health command (bin/check) that follows
// a file: it exits with the number in <runtime>/data/health (0 when
// absent), or hangs forever (with a child) when that file says hang.
func healthSup(t *testing.T, timeout time.Duration) (*Supervisor, string) {
	t.Helper()
	s, loc := newSup(t)
	s.cfg.HealthInterval = 30 * time.Millisecond
	s.cfg.HealthTimeout = timeout
	const check = `#!/bin/sh
for a in "$@"; do echo "arg $a"; done
echo "checking $DROVER_SERVICE"
echo run >> data/runs
want=$(cat data/health 2>/dev/null || echo 0)
if [ "$want" = hang ]; then
	sleep 1000 &
	echo $! > data/check-child
	wait
fi
echo "db unreachable" >&2
exit "$want"
`
	if err := os.WriteFile(filepath.Join(loc, "bin", "check"), []byte(check), 0o755); err != nil {
		t.Fatal(err)
	}
	return s, loc
}

func setHealth(t *testing.T, s *Supervisor, coord, v string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(s.Dir(coord), "data", "health"), []byte(v+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestHealthVerdicts(t *testing.T) {
	s, loc := healthSup(t, 5*time.Second)
	ctx := context.Background()
	sp := Spec{Coordinate: "h.web", Package: "g:web", Service: "web", Location: loc, Start: "bin/run",
		Health: "bin/check", Restart: RestartNever, Params: map[string]string{"port": "8081"}}
	if err := s.Start(ctx, sp); err != nil {
		t.Fatal(err)
	}
	// A service with no health command is unknown while it runs.
	plain := Spec{Coordinate: "h.plain", Package: "g:web", Service: "plain", Location: loc, Start: "bin/run", Restart: RestartNever}
	if err := s.Start(ctx, plain); err != nil {
		t.Fatal(err)
	}
	poll(t, "healthy", func() bool { return state(s, "h.web").Health == api.ServiceHealthy })
	if st := state(s, "h.plain"); st.Health != api.ServiceHealthUnknown {
		t.Errorf("service with no health command: health %q, want unknown", st.Health)
	}
	dir := s.Dir("h.web")
	log, _ := os.ReadFile(filepath.Join(dir, "console", "health.log"))
	for _, want := range []string{"arg --runtime-dir=" + dir, "arg --coordinate=h.web", "arg --port=8081", "checking h.web"} {
		if !strings.Contains(string(log), want) {
			t.Errorf("console/health.log = %q, want %q in it", log, want)
		}
	}

	// Unhealthy, with the output; the policy never keeps it running.
	pid := state(s, "h.web").PID
	setHealth(t, s, "h.web", "2")
	poll(t, "unhealthy", func() bool { return state(s, "h.web").Health == api.ServiceUnhealthy })
	st := state(s, "h.web")
	if !strings.Contains(st.HealthOutput, "exited 2") || !strings.Contains(st.HealthOutput, "db unreachable") {
		t.Errorf("HealthOutput = %q, want the exit status and the output", st.HealthOutput)
	}
	// Well past healthRestartAfter results: still the same process.
	before := healthRuns(t, s, "h.web")
	poll(t, "more health runs", func() bool { return healthRuns(t, s, "h.web") >= before+2*healthRestartAfter })
	if st := state(s, "h.web"); st.PID != pid || st.Restarts != 0 || st.State != api.ServiceRunning {
		t.Errorf("unhealthy service with restart: never: %+v, want pid %d running, no restarts", st, pid)
	}

	// Back to healthy; stopped, it has no health.
	setHealth(t, s, "h.web", "0")
	poll(t, "healthy again", func() bool { return state(s, "h.web").Health == api.ServiceHealthy })
	if st := state(s, "h.web"); st.HealthOutput != "" {
		t.Errorf("HealthOutput of a healthy service = %q, want empty", st.HealthOutput)
	}
	if err := s.Stop(ctx, "h.web"); err != nil {
		t.Fatal(err)
	}
	if st := state(s, "h.web"); st.Health != "" || st.State != api.ServiceStopped {
		t.Errorf("stopped service: %+v, want no health", st)
	}
}

// healthRuns counts the runs of the test's health command: each
// appends a line to data/runs.
func healthRuns(t *testing.T, s *Supervisor, coord string) int {
	t.Helper()
	b, _ := os.ReadFile(filepath.Join(s.Dir(coord), "data", "runs"))
	return strings.Count(string(b), "\n")
}

func TestHealthRestart(t *testing.T) {
	tests := []struct {
		name    string
		policy  string
		early   bool // unhealthy from the start
		restart bool
	}{
		{"always", RestartAlways, false, true},
		{"on-failure", RestartOnFailure, false, true},
		{"default", "", false, true}, // on-failure
		{"never", RestartNever, false, false},
		// Checks start after StartWait: Start sees a good start.
		{"unhealthy from the start", RestartAlways, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, loc := healthSup(t, 5*time.Second)
			sp := Spec{Coordinate: "r.web", Package: "g:web", Service: "web", Location: loc, Start: "bin/run", Health: "bin/check", Restart: tt.policy}
			if tt.early {
				if err := os.MkdirAll(filepath.Join(s.Dir("r.web"), "data"), 0o755); err != nil {
					t.Fatal(err)
				}
				setHealth(t, s, "r.web", "1")
			}
			if err := s.Start(context.Background(), sp); err != nil {
				t.Fatalf("Start() = %v", err)
			}
			pid := state(s, "r.web").PID
			// The test's service exits 0 on SIGTERM: a restart for
			// on-failure shows the health stop counts as a failure.
			setHealth(t, s, "r.web", "1")
			if tt.restart {
				poll(t, "restarted", func() bool {
					st := state(s, "r.web")
					return st.Restarts == 1 && st.PID != 0 && st.PID != pid && st.State == api.ServiceRunning
				})
				if runs := healthRuns(t, s, "r.web"); runs < healthRestartAfter {
					t.Errorf("restarted after %d health runs, want at least %d", runs, healthRestartAfter)
				}
				if syscall.Kill(pid, 0) == nil && !zombie(pid) {
					t.Errorf("unhealthy process %d still alive after the restart", pid)
				}
				// The next one fails too: its exit says why.
				poll(t, "failed with the reason", func() bool {
					return strings.Contains(state(s, "r.web").Error, "failed health checks")
				})
				return
			}
			// The file may be read by a run already under way: count from
			// the next.
			before := healthRuns(t, s, "r.web") + 1
			poll(t, "health runs", func() bool { return healthRuns(t, s, "r.web") >= before+2*healthRestartAfter })
			if st := state(s, "r.web"); st.PID != pid || st.Restarts != 0 || st.Health != api.ServiceUnhealthy {
				t.Errorf("policy never: %+v, want pid %d unhealthy, no restarts", st, pid)
			}
		})
	}
}

func TestHealthTimeout(t *testing.T) {
	s, loc := healthSup(t, 150*time.Millisecond)
	sp := Spec{Coordinate: "t.web", Package: "g:web", Service: "web", Location: loc, Start: "bin/run", Health: "bin/check", Restart: RestartNever}
	if err := s.Start(context.Background(), sp); err != nil {
		t.Fatal(err)
	}
	setHealth(t, s, "t.web", "hang")
	poll(t, "unhealthy after timeouts", func() bool { return state(s, "t.web").Health == api.ServiceUnhealthy })
	if out := state(s, "t.web").HealthOutput; !strings.Contains(out, "timeout of 150ms") || !strings.Contains(out, "checking t.web") {
		t.Errorf("HealthOutput = %q, want the timeout and the output", out)
	}
	b, err := os.ReadFile(filepath.Join(s.Dir("t.web"), "data", "check-child"))
	if err != nil {
		t.Fatal(err)
	}
	child, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	poll(t, "the check's child killed with its group", func() bool { return child > 0 && (syscall.Kill(child, 0) != nil || zombie(child)) })
}

func TestHealthMissingCommand(t *testing.T) {
	s, loc := healthSup(t, time.Second)
	sp := Spec{Coordinate: "m.web", Package: "g:web", Service: "web", Location: loc, Start: "bin/run", Health: "bin/nothere", Restart: RestartNever}
	if err := s.Start(context.Background(), sp); err != nil {
		t.Fatal(err)
	}
	poll(t, "unhealthy", func() bool { return state(s, "m.web").Health == api.ServiceUnhealthy })
	if out := state(s, "m.web").HealthOutput; !strings.Contains(out, "bin/nothere") {
		t.Errorf("HealthOutput = %q, want it to name the command", out)
	}
}
