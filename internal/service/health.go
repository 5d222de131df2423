package service

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/proc"
)

// Health checks of services. A service's health command runs every
// HealthInterval while the service runs, from its runtime directory with
// the flags and environment of start; exit 0 is healthy, anything else (a
// non-zero exit, a command that cannot run, a run killed at
// HealthTimeout) is unhealthy. The output of the last run is kept in
// console/health.log.
//
// The verdict changes only after healthFlap equal results in a row, so
// one odd result does not flap it. A service that stays unhealthy for
// healthRestartAfter results in a row is restarted when its policy is
// always or on-failure, with the usual backoff (Nomad's check_restart;
// Habitat never restarts on health). With the policy never, an unhealthy
// service is only reported.
const (
	// healthFlap equal results in a row change the verdict.
	healthFlap = 2
	// healthRestartAfter unhealthy results in a row restart a service
	// whose policy allows restarts.
	healthRestartAfter = 3
	// healthTailBytes bounds the output kept of one run.
	healthTailBytes = 512
)

// healthTrack turns a stream of health-check results into a verdict.
// The zero value is unknown.
type healthTrack struct {
	state string // api.ServiceHealthy, api.ServiceUnhealthy or api.ServiceHealthUnknown
	cand  string // the result that differs from state
	n     int    // cand's results in a row
	bad   int    // unhealthy results in a row, whatever the verdict
}

// observe feeds one result (api.ServiceHealthy or api.ServiceUnhealthy)
// and reports whether the verdict changed.
func (h *healthTrack) observe(result string) (changed bool) {
	if h.state == "" {
		h.state = api.ServiceHealthUnknown
	}
	if result == api.ServiceUnhealthy {
		h.bad++
	} else {
		h.bad = 0
	}
	if result == h.state {
		h.cand, h.n = "", 0
		return false
	}
	if result == h.cand {
		h.n++
	} else {
		h.cand, h.n = result, 1
	}
	if h.n < healthFlap {
		return false
	}
	h.state, h.cand, h.n = result, "", 0
	return true
}

// resetHealthLocked starts a new process's health afresh. s.mu is held.
func (s *Supervisor) resetHealthLocked(p *supervised) {
	p.health = healthTrack{state: api.ServiceHealthUnknown}
	p.healthOut, p.healthKill = "", false
}

// watchHealth runs the health command of p's process of generation gen
// every interval until that process is gone, and restarts the service
// when it stays unhealthy and its policy allows.
func (s *Supervisor) watchHealth(p *supervised, gen int, done <-chan struct{}) {
	// A check must not outlive the service it checks.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-done:
			cancel()
		case <-ctx.Done():
		}
	}()
	// A timer reset after each run, not a ticker: runs never pile up
	// behind a slow check. The first run waits for Start to have seen
	// the process stay up: a restart for health before that would look
	// like a failed start.
	t := time.NewTimer(max(s.cfg.HealthInterval, s.cfg.StartWait))
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		s.mu.Lock()
		if gen != p.gen || p.done == nil {
			s.mu.Unlock()
			return
		}
		sp := p.spec
		s.mu.Unlock()
		result, out := s.runHealth(ctx, sp)
		if ctx.Err() != nil {
			return
		}
		changed, restart := s.observeHealth(p, gen, result, out)
		if changed {
			s.changed()
		}
		if restart {
			s.healthRestart(p, gen)
			return
		}
		t.Reset(s.cfg.HealthInterval)
	}
}

// observeHealth records one result of p's process of generation gen and
// says whether the verdict changed and whether to restart the service.
func (s *Supervisor) observeHealth(p *supervised, gen int, result, out string) (changed, restart bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if gen != p.gen || p.done == nil || p.held {
		return false, false // gone or being stopped: the result is moot
	}
	if result == api.ServiceUnhealthy {
		p.healthOut = out
	}
	changed = p.health.observe(result)
	if changed {
		s.log.Info("service health", "service", p.spec.Coordinate, "health", p.health.state, "output", out)
		if p.health.state == api.ServiceHealthy {
			// A healthy process is a good run: the backoff starts over.
			p.fails = 0
		}
	}
	restart = p.health.bad >= healthRestartAfter && p.spec.Restart != RestartNever
	return changed, restart
}

// healthRestart stops p's process of generation gen because it stayed
// unhealthy; exited then restarts it per policy, with backoff.
func (s *Supervisor) healthRestart(p *supervised, gen int) {
	s.mu.Lock()
	if gen != p.gen || p.done == nil || p.held {
		s.mu.Unlock()
		return
	}
	p.healthKill = true
	sp, pid, pgid, done, out := p.spec, p.pid, p.pgid, p.done, p.healthOut
	s.mu.Unlock()
	s.log.Warn("service unhealthy, restarting it", "service", sp.Coordinate, "checks", healthRestartAfter, "output", out)
	if err := s.terminate(context.Background(), sp, pid, pgid, done); err != nil {
		s.log.Warn("stop an unhealthy service", "service", sp.Coordinate, "err", err)
	}
}

// runHealth runs sp's health command once and returns its result
// (api.ServiceHealthy or api.ServiceUnhealthy) and, when unhealthy, how:
// the exit status and the tail of its output on one line.
func (s *Supervisor) runHealth(ctx context.Context, sp Spec) (result, out string) {
	dir := s.Dir(sp.Coordinate)
	// The output goes to a file of its own, renamed to health.log when
	// the run is over: health.log always holds one whole run.
	logPath := filepath.Join(dir, "console", "health.log")
	f, err := os.OpenFile(logPath+".tmp", os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return api.ServiceUnhealthy, fmt.Sprintf("keep the health output: %v", err)
	}
	defer func() {
		f.Close()
		_ = os.Rename(f.Name(), logPath)
	}()
	// A file, not a pipe: Run must not wait for a child the check leaves
	// running with its output. What the check left running in its group
	// is killed: it would pile up, one set per interval.
	run, runErr := proc.Run(ctx, proc.Cmd{
		Path: filepath.Join(sp.Location, filepath.FromSlash(sp.Health)), Args: args(dir, sp, true),
		Dir: dir, Env: env(dir, sp),
		Stdout: f, Stderr: f,
		Timeout:   s.cfg.HealthTimeout,
		KillGroup: true,
	})
	var how string
	switch {
	case runErr == nil:
		return api.ServiceHealthy, ""
	case run.TimedOut:
		how = fmt.Sprintf("killed after the health timeout of %v", s.cfg.HealthTimeout)
	default:
		how = describeExit(runErr)
	}
	if t := oneLine(proc.Tail(f.Name(), healthTailBytes)); t != "" {
		how += ": " + t
	}
	return api.ServiceUnhealthy, sp.Health + " " + how
}

// oneLine folds text onto one line, lines joined by " | ".
func oneLine(text string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(strings.TrimSpace(text), "\n", " | ")), " ")
}
