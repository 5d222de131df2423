// Package service is the supervisor of package services (copkg's runtime
// directories, JPackages' process actions). Each service instance runs
// from its runtime directory <runtime-root>/<coordinate>/ holding log/
// etc/ console/ data/ run/; start is called as copkg calls start.py:
//
//	START --runtime-dir=DIR --coordinate=COORD --NAME=VALUE...
//
// with the working directory at the runtime directory, stdout and stderr
// appended to console/stdout.log and console/stderr.log, and its pid in
// run/start.pid. Each service runs in a process group of its own so stop
// and kill reach its children. A service that exits is restarted per its
// policy (always, on-failure, never) with exponential backoff. A
// service's health command, if it has one, runs every HealthInterval
// while the service runs (health.go).
//
// Services outlive the supervisor: a restarted agent adopts the processes
// its pid files name (checked by the DROVER_SERVICE variable in the
// process's environment) instead of starting them twice.
package service

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/param"
	"github.com/drover-dev/drover/internal/proc"
)

// Restart policies.
const (
	RestartAlways    = "always"
	RestartOnFailure = "on-failure"
	RestartNever     = "never"
)

// Errors callers branch on.
var (
	// ErrUnknown: no service has that coordinate.
	ErrUnknown = errors.New("no such service")
	// ErrStart: the start command exited at once or could not run.
	ErrStart = errors.New("service did not start")
)

// Config configures a Supervisor.
type Config struct {
	// RuntimeRoot holds one runtime directory per service instance.
	RuntimeRoot string
	Logger      *slog.Logger
	Now         func() time.Time
	// Grace is how long a stopping service has before SIGKILL
	// (default 10s).
	Grace time.Duration
	// StartWait is how long a started process must live to count as
	// started (default 1s): one that dies sooner is a failed start.
	StartWait time.Duration
	// MinBackoff and MaxBackoff bound the delay before a restart
	// (defaults 500ms and 1m); the delay doubles with each failure in a
	// row and resets once a process lived a minute.
	MinBackoff, MaxBackoff time.Duration
	// HealthInterval is how often a running service's health command
	// runs (default 30s); the first run is one interval after the start,
	// and not before StartWait.
	HealthInterval time.Duration
	// HealthTimeout bounds one run of a health command (default 10s);
	// at the timeout its process group is killed and the run counts as
	// unhealthy.
	HealthTimeout time.Duration
	// OnChange, if set, is called (from any goroutine, no lock held)
	// after a service changes state, so the agent can report.
	OnChange func()
}

// Spec is one service instance to run.
type Spec struct {
	// Coordinate is INSTANCE.SERVICE[.ENV.REGION]: see Coordinate.
	Coordinate string
	Package    string // group:name
	Version    string
	Instance   string
	Service    string
	// Location is the install location; Start and Stop are relative
	// to it.
	Location string
	Start    string
	Stop     string
	// Health is the health command, relative to Location; optional.
	Health  string
	Restart string
	// Params become --NAME=VALUE flags (sorted by name) and
	// DROVER_PARAM_<NAME> variables.
	Params map[string]string
}

var coordRe = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,200}$`)

// Coordinate returns a service instance's coordinate (copkg's
// 1.idee.prod.trd): INSTANCE.SERVICE, then .ENV.REGION when the device
// has both labels. An app without an instance name uses its package name.
func Coordinate(pkg, instance, service string, labels map[string]string) string {
	if instance == "" {
		instance = pkg
		if i := strings.LastIndexByte(pkg, ':'); i >= 0 {
			instance = pkg[i+1:]
		}
	}
	c := instance + "." + service
	if env, region := labels["env"], labels["region"]; env != "" && region != "" {
		c += "." + env + "." + region
	}
	return c
}

var labelValueRe = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_-]{0,63}$`)

// CheckLabels checks the labels that go into service coordinates (env
// and region): each is one word of letters, digits, '-' and '_', so a
// coordinate stays one name under the runtime root and reads the same
// way back.
func CheckLabels(labels map[string]string) error {
	for _, k := range []string{"env", "region"} {
		if v, ok := labels[k]; ok && v != "" && !labelValueRe.MatchString(v) {
			return fmt.Errorf("label %s=%q: want letters, digits, '-' and '_' (at most 64): it names service runtime folders", k, v)
		}
	}
	return nil
}

// Supervisor runs services. Its methods are safe for concurrent use.
type Supervisor struct {
	cfg Config
	log *slog.Logger

	mu    sync.Mutex
	procs map[string]*supervised
}

// supervised is one supervised service instance.
type supervised struct {
	spec     Spec
	state    string
	pid      int
	restarts int
	fails    int // failures in a row, for the backoff
	since    time.Time
	err      string
	held     bool          // stopped on purpose: no restart
	done     chan struct{} // closed when the current process is gone; nil if none
	gen      int           // bumps with each process, so a late exit of an old one is ignored
	timer    *time.Timer   // pending restart
	// health is the verdict of the current process's health checks;
	// healthOut how the last failing check failed.
	health    healthTrack
	healthOut string
	// healthKill: the current process is being stopped because it
	// stayed unhealthy; its exit is a failure, whatever its status.
	healthKill bool
}

// New returns a supervisor.
func New(cfg Config) (*Supervisor, error) {
	if cfg.RuntimeRoot == "" {
		return nil, errors.New("service: no runtime root")
	}
	root, err := filepath.Abs(cfg.RuntimeRoot)
	if err != nil {
		return nil, fmt.Errorf("service: %w", err)
	}
	cfg.RuntimeRoot = root
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Grace <= 0 {
		cfg.Grace = 10 * time.Second
	}
	if cfg.StartWait <= 0 {
		cfg.StartWait = time.Second
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 500 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = time.Minute
	}
	if cfg.HealthInterval <= 0 {
		cfg.HealthInterval = 30 * time.Second
	}
	if cfg.HealthTimeout <= 0 {
		cfg.HealthTimeout = 10 * time.Second
	}
	return &Supervisor{cfg: cfg, log: cfg.Logger, procs: map[string]*supervised{}}, nil
}

// Dir returns a service's runtime directory.
func (s *Supervisor) Dir(coord string) string { return filepath.Join(s.cfg.RuntimeRoot, coord) }

func (s *Supervisor) changed() {
	if s.cfg.OnChange != nil {
		s.cfg.OnChange()
	}
}

func checkSpec(sp Spec) error {
	if !coordRe.MatchString(sp.Coordinate) || strings.Contains(sp.Coordinate, "..") {
		return fmt.Errorf("service coordinate %q: want letters, digits, '.', '-' and '_'", sp.Coordinate)
	}
	if sp.Start == "" || sp.Location == "" {
		return fmt.Errorf("service %s: no start command", sp.Coordinate)
	}
	switch sp.Restart {
	case "", RestartAlways, RestartOnFailure, RestartNever:
	default:
		return fmt.Errorf("service %s: restart %q: want always, on-failure or never", sp.Coordinate, sp.Restart)
	}
	return nil
}

// Start starts the service sp (or adopts its process, if its pid file
// names a live one) and waits StartWait to see it stay up. A start
// command that cannot run or exits at once is an error wrapping
// ErrStart, with the exit status and the tail of console/. Starting a
// running service with the same spec does nothing.
func (s *Supervisor) Start(ctx context.Context, sp Spec) error {
	if err := checkSpec(sp); err != nil {
		return err
	}
	s.mu.Lock()
	p := s.procs[sp.Coordinate]
	if p != nil && p.done != nil {
		same := p.spec.Location == sp.Location && p.spec.Start == sp.Start && equalParams(p.spec.Params, sp.Params)
		p.spec, p.held = sp, false
		s.mu.Unlock()
		if same {
			return nil
		}
		return fmt.Errorf("service %s: running another build: stop it first", sp.Coordinate)
	}
	if p == nil {
		p = &supervised{spec: sp, state: api.ServiceStopped, since: s.cfg.Now()}
		s.procs[sp.Coordinate] = p
	}
	p.spec, p.held = sp, false
	if p.timer != nil {
		p.timer.Stop()
		p.timer = nil
	}
	if pid := s.livePID(sp.Coordinate); pid > 0 {
		s.adoptLocked(p, pid)
		s.mu.Unlock()
		s.log.Info("service adopted", "service", sp.Coordinate, "pid", pid)
		s.changed()
		return nil
	}
	done, err := s.launchLocked(p)
	s.mu.Unlock()
	s.changed()
	if err != nil {
		return err
	}
	t := time.NewTimer(s.cfg.StartWait)
	defer t.Stop()
	select {
	case <-done:
		s.mu.Lock()
		p.held = true // a start that fails at once is not retried in a loop
		p.state = api.ServiceFailed
		msg := p.err
		s.mu.Unlock()
		s.changed()
		return fmt.Errorf("%w: %s: %s", ErrStart, sp.Coordinate, msg)
	case <-t.C:
	case <-ctx.Done():
	}
	return nil
}

func equalParams(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// makeDirs makes the runtime directory and its folders.
func (s *Supervisor) makeDirs(coord string) (string, error) {
	dir := s.Dir(coord)
	for _, sub := range []string{"log", "etc", "console", "data", "run"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return "", fmt.Errorf("runtime directory of %s: %w", coord, err)
		}
	}
	return dir, nil
}

// args are the flags start and stop get.
func args(dir string, sp Spec, withParams bool) []string {
	out := []string{"--runtime-dir=" + dir, "--coordinate=" + sp.Coordinate}
	if withParams {
		names := make([]string, 0, len(sp.Params))
		for k := range sp.Params {
			names = append(names, k)
		}
		slices.Sort(names)
		for _, k := range names {
			out = append(out, "--"+k+"="+sp.Params[k])
		}
	}
	return out
}

func env(dir string, sp Spec) []string {
	p := os.Getenv("PATH")
	if p == "" {
		p = "/usr/local/bin:/usr/bin:/bin"
	}
	out := []string{
		"PATH=" + p,
		"DROVER_SERVICE=" + sp.Coordinate,
		"DROVER_RUNTIME_DIR=" + dir,
		"DROVER_PREFIX=" + sp.Location,
		"DROVER_PACKAGE=" + sp.Package + ":" + sp.Version,
		"DROVER_VERSION=" + sp.Version,
		"DROVER_INSTANCE=" + sp.Instance,
	}
	if h := os.Getenv("HOME"); h != "" {
		out = append(out, "HOME="+h)
	}
	for k, v := range sp.Params {
		out = append(out, param.EnvName(k)+"="+v)
	}
	slices.Sort(out[1:])
	return out
}

// launchLocked starts p's process and returns a channel closed when it
// is gone. s.mu is held.
func (s *Supervisor) launchLocked(p *supervised) (<-chan struct{}, error) {
	sp := p.spec
	fail := func(err error) (<-chan struct{}, error) {
		p.state, p.err, p.since, p.pid = api.ServiceFailed, err.Error(), s.cfg.Now(), 0
		return nil, fmt.Errorf("%w: %s: %v", ErrStart, sp.Coordinate, err)
	}
	dir, err := s.makeDirs(sp.Coordinate)
	if err != nil {
		return fail(err)
	}
	outf, err := os.OpenFile(filepath.Join(dir, "console", "stdout.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fail(err)
	}
	errf, err := os.OpenFile(filepath.Join(dir, "console", "stderr.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		outf.Close()
		return fail(err)
	}
	bin := filepath.Join(sp.Location, filepath.FromSlash(sp.Start))
	cmd := exec.Command(bin, args(dir, sp, true)...)
	cmd.Dir = dir
	cmd.Env = env(dir, sp)
	cmd.Stdout, cmd.Stderr = outf, errf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	for try := 0; ; try++ {
		err = cmd.Start()
		// A fork elsewhere can hold the file open for writing an instant.
		if try < 5 && errors.Is(err, syscall.ETXTBSY) {
			time.Sleep(time.Duration(try+1) * 10 * time.Millisecond)
			cmd = exec.Command(bin, cmd.Args[1:]...)
			cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr, cmd.SysProcAttr = dir, env(dir, sp), outf, errf, &syscall.SysProcAttr{Setpgid: true}
			continue
		}
		break
	}
	outf.Close()
	errf.Close()
	if err != nil {
		return fail(fmt.Errorf("run %s: %w", sp.Start, err))
	}
	pid := cmd.Process.Pid
	if err := writePID(dir, pid); err != nil {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		_ = cmd.Wait()
		return fail(err)
	}
	p.gen++
	gen := p.gen
	done := make(chan struct{})
	p.done, p.pid, p.state, p.err, p.since = done, pid, api.ServiceRunning, "", s.cfg.Now()
	s.resetHealthLocked(p)
	started := s.cfg.Now()
	s.log.Info("service started", "service", sp.Coordinate, "pid", pid)
	go func() {
		werr := cmd.Wait()
		s.exited(p, gen, started, describeExit(werr), werr != nil)
		close(done)
	}()
	if sp.Health != "" {
		go s.watchHealth(p, gen, done)
	}
	return done, nil
}

func describeExit(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return "killed by " + ws.Signal().String()
		}
		return "exited " + strconv.Itoa(ee.ExitCode())
	}
	if err != nil {
		return err.Error()
	}
	return "exited 0"
}

// adoptLocked watches a live process the supervisor did not start.
func (s *Supervisor) adoptLocked(p *supervised, pid int) {
	p.gen++
	gen := p.gen
	done := make(chan struct{})
	p.done, p.pid, p.state, p.err, p.since = done, pid, api.ServiceRunning, "", s.cfg.Now()
	s.resetHealthLocked(p)
	started := s.cfg.Now()
	go func() {
		for syscall.Kill(pid, 0) == nil && !zombie(pid) {
			time.Sleep(200 * time.Millisecond)
		}
		// Not our child: its exit status is its parent's to read.
		s.exited(p, gen, started, "exited (status unknown: adopted process)", true)
		close(done)
	}()
	if p.spec.Health != "" {
		go s.watchHealth(p, gen, done)
	}
}

// exited handles the end of p's process of generation gen: a restart per
// policy, unless the service was stopped on purpose.
func (s *Supervisor) exited(p *supervised, gen int, started time.Time, how string, failed bool) {
	s.mu.Lock()
	if gen != p.gen {
		s.mu.Unlock()
		return
	}
	sp := p.spec
	dir := s.Dir(sp.Coordinate)
	_ = os.Remove(filepath.Join(dir, "run", "start.pid"))
	p.pid, p.done, p.since = 0, nil, s.cfg.Now()
	healthKill := p.healthKill
	p.healthKill = false
	if p.held {
		p.state, p.err = api.ServiceStopped, ""
		s.mu.Unlock()
		s.changed()
		return
	}
	if healthKill {
		// Stopped by the supervisor for failing its health checks: a
		// failure, even if the process exited 0 on SIGTERM.
		how, failed = fmt.Sprintf("stopped after %d failed health checks in a row (%s)", healthRestartAfter, p.healthOut), true
	}
	p.state = api.ServiceFailed
	if !failed {
		p.state = api.ServiceStopped
	}
	p.err = how + consoleTail(dir)
	restart := sp.Restart == RestartAlways || (sp.Restart != RestartNever && failed)
	if !restart {
		s.mu.Unlock()
		s.log.Warn("service ended", "service", sp.Coordinate, "how", how)
		s.changed()
		return
	}
	// A process that lived a minute resets the backoff, unless it was
	// unhealthy all along (a healthy verdict resets it then: health.go).
	if !healthKill && s.cfg.Now().Sub(started) > time.Minute {
		p.fails = 0
	}
	delay := min(s.cfg.MinBackoff<<min(p.fails, 16), s.cfg.MaxBackoff)
	p.fails++
	s.log.Warn("service ended, restarting", "service", sp.Coordinate, "how", how, "in", delay)
	p.timer = time.AfterFunc(delay, func() {
		s.mu.Lock()
		if p.held || p.done != nil || gen != p.gen {
			s.mu.Unlock()
			return
		}
		p.timer = nil
		p.restarts++
		_, err := s.launchLocked(p)
		s.mu.Unlock()
		if err != nil {
			s.log.Warn("service restart", "service", sp.Coordinate, "err", err)
		}
		s.changed()
	})
	s.mu.Unlock()
	s.changed()
}

// consoleTail is the last lines of a service's console, for messages.
func consoleTail(dir string) string {
	var parts []string
	for _, f := range []string{"stderr.log", "stdout.log"} {
		t := strings.TrimSpace(proc.Tail(filepath.Join(dir, "console", f), 512))
		if t != "" {
			parts = append(parts, "console/"+f+": "+strings.Join(strings.Fields(strings.ReplaceAll(t, "\n", " | ")), " "))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return "; " + strings.Join(parts, "; ")
}

func writePID(dir string, pid int) error {
	tmp := filepath.Join(dir, "run", ".start.pid.tmp")
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, "run", "start.pid"))
}

// livePID returns the pid in coord's pid file if that process is alive
// and is this service (DROVER_SERVICE in its environment); else 0.
func (s *Supervisor) livePID(coord string) int {
	b, err := os.ReadFile(filepath.Join(s.Dir(coord), "run", "start.pid"))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0
	}
	if syscall.Kill(pid, 0) != nil || zombie(pid) {
		return 0
	}
	envb, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil || !containsVar(envb, "DROVER_SERVICE="+coord) {
		return 0
	}
	return pid
}

func containsVar(environ []byte, kv string) bool {
	for _, v := range bytes.Split(environ, []byte{0}) {
		if string(v) == kv {
			return true
		}
	}
	return false
}

// zombie reports whether pid is a zombie (dead, not yet reaped).
func zombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] == 'Z'
}

// Stop stops a service and keeps it stopped (no restart) until Start: the
// stop command if it has one, else SIGTERM to its process group; SIGKILL
// when Grace passes.
func (s *Supervisor) Stop(ctx context.Context, coord string) error {
	s.mu.Lock()
	p := s.procs[coord]
	if p == nil {
		s.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrUnknown, coord)
	}
	p.held = true
	if p.timer != nil {
		p.timer.Stop()
		p.timer = nil
	}
	done, pid, sp := p.done, p.pid, p.spec
	if done == nil {
		if p.state != api.ServiceStopped {
			p.state, p.since = api.ServiceStopped, s.cfg.Now()
		}
		s.mu.Unlock()
		s.changed()
		return nil
	}
	s.mu.Unlock()
	return s.terminate(ctx, sp, pid, done)
}

// terminate ends the process pid of sp and waits for done: the stop
// command if there is one, then SIGTERM to its process group, SIGKILL
// when Grace passes.
func (s *Supervisor) terminate(ctx context.Context, sp Spec, pid int, done <-chan struct{}) error {
	coord := sp.Coordinate
	dir := s.Dir(coord)
	if sp.Stop != "" {
		var out bytes.Buffer
		_, err := proc.Run(ctx, proc.Cmd{
			Path: filepath.Join(sp.Location, filepath.FromSlash(sp.Stop)), Args: args(dir, sp, false),
			Dir: dir, Env: env(dir, sp),
			Stdout: &out, Stderr: &out,
			Timeout: s.cfg.Grace,
			// A stop command may start something that keeps our pipe open;
			// never wait on it past the grace period.
			WaitDelay: s.cfg.Grace,
		})
		if err != nil {
			s.log.Warn("stop command", "service", coord, "err", err, "output", strings.TrimSpace(out.String()))
		}
		if wait(done, s.cfg.Grace) {
			return nil
		}
	}
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	_ = syscall.Kill(pid, syscall.SIGTERM)
	if wait(done, s.cfg.Grace) {
		return nil
	}
	s.log.Warn("service did not stop in time, killing it", "service", coord, "grace", s.cfg.Grace)
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	_ = syscall.Kill(pid, syscall.SIGKILL)
	if !wait(done, 5*time.Second) {
		return fmt.Errorf("service %s: pid %d survives SIGKILL", coord, pid)
	}
	return nil
}

func wait(done <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// Restart stops a service and starts it again.
func (s *Supervisor) Restart(ctx context.Context, coord string) error {
	s.mu.Lock()
	p := s.procs[coord]
	s.mu.Unlock()
	if p == nil {
		return fmt.Errorf("%w: %s", ErrUnknown, coord)
	}
	if err := s.Stop(ctx, coord); err != nil {
		return err
	}
	s.mu.Lock()
	sp := p.spec
	p.restarts++
	s.mu.Unlock()
	return s.Start(ctx, sp)
}

// Kill sends SIGKILL to a service's process group; the supervisor then
// restarts it per its policy, as it would after any crash.
func (s *Supervisor) Kill(coord string) error {
	s.mu.Lock()
	p := s.procs[coord]
	if p == nil {
		s.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrUnknown, coord)
	}
	pid := p.pid
	s.mu.Unlock()
	if pid == 0 {
		return fmt.Errorf("service %s is not running", coord)
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	_ = syscall.Kill(pid, syscall.SIGKILL)
	return nil
}

// Remove stops a service, forgets it and removes its runtime directory,
// all but data/ unless purge.
func (s *Supervisor) Remove(ctx context.Context, coord string, purge bool) error {
	if err := s.Stop(ctx, coord); err != nil && !errors.Is(err, ErrUnknown) {
		return err
	}
	s.mu.Lock()
	if p := s.procs[coord]; p != nil {
		p.gen++
		delete(s.procs, coord)
	}
	s.mu.Unlock()
	s.changed()
	if !coordRe.MatchString(coord) || strings.Contains(coord, "..") {
		return fmt.Errorf("service coordinate %q: invalid", coord)
	}
	dir := s.Dir(coord)
	if purge {
		return os.RemoveAll(dir)
	}
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		if e.Name() != "data" {
			errs = append(errs, os.RemoveAll(filepath.Join(dir, e.Name())))
		}
	}
	return errors.Join(errs...)
}

// Spec returns the spec of a known service.
func (s *Supervisor) Spec(coord string) (Spec, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.procs[coord]; p != nil {
		return p.spec, true
	}
	return Spec{}, false
}

// States lists every known service, by coordinate.
func (s *Supervisor) States() []api.ServiceState {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]api.ServiceState, 0, len(s.procs))
	for _, p := range s.procs {
		out = append(out, api.ServiceState{
			Coordinate: p.spec.Coordinate, Package: p.spec.Package, Version: p.spec.Version, Instance: p.spec.Instance,
			Service: p.spec.Service, State: p.state, PID: p.pid, Restarts: p.restarts, Since: p.since.UTC(), Error: p.err,
		})
		if p.done != nil {
			st := &out[len(out)-1]
			st.Health = p.health.state
			if st.Health == api.ServiceUnhealthy {
				st.HealthOutput = p.healthOut
			}
		}
	}
	slices.SortFunc(out, func(a, b api.ServiceState) int { return strings.Compare(a.Coordinate, b.Coordinate) })
	return out
}

// Adopt registers sp without starting it: if its pid file names a live
// process of it, the supervisor watches that process (standalone mode
// uses this to stop what an earlier run started). It reports whether a
// live process was found.
func (s *Supervisor) Adopt(sp Spec) (bool, error) {
	if err := checkSpec(sp); err != nil {
		return false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.procs[sp.Coordinate]
	if p == nil {
		p = &supervised{spec: sp, state: api.ServiceStopped, since: s.cfg.Now()}
		s.procs[sp.Coordinate] = p
	}
	if p.done != nil {
		return true, nil
	}
	if pid := s.livePID(sp.Coordinate); pid > 0 {
		s.adoptLocked(p, pid)
		return true, nil
	}
	return false, nil
}
