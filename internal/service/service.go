// Package service is the supervisor of package services (copkg's runtime
// directories, JPackages' process actions). Each service instance runs
// from its runtime directory <runtime-root>/<coordinate>/ holding log/
// etc/ console/ data/ run/; start is called as copkg calls start.py:
//
//	START --runtime-dir=DIR --coordinate=COORD --NAME=VALUE...
//
// with the working directory at the runtime directory, stdout and stderr
// copied to console/stdout.log and console/stderr.log, rotated by size
// (console.go), and its pid in run/start.pid. Secret parameters are no
// flags: they reach the service as DROVER_PARAM_<NAME> and in
// etc/params/<NAME> (0600). Each service runs in a process group of its
// own so stop and kill reach its children.
//
// A start takes either form: it stays in the foreground (the process is
// the service), or it starts the service, writes the service's pid to
// run/start.pid and exits 0 (copkg's start.py); the supervisor then
// watches that process by pid and start time (pid.go) exactly as it
// watches a child. A start with ports succeeds only once they accept
// connections on loopback.
//
// A service that exits is restarted per its policy (always, on-failure,
// never) with exponential backoff. A service's health command, if it has
// one, runs every HealthInterval while the service runs (health.go).
//
// Services outlive the supervisor: a restarted agent adopts the processes
// its pid files name (checked by the recorded start time, or else the
// DROVER_SERVICE variable in the process's environment) instead of
// starting them twice.
package service

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
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

	"golang.org/x/sys/unix"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/param"
	"github.com/drover-dev/drover/internal/pkgfile"
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
	// ErrClosed: the supervisor was closed; it acts on nothing any more.
	ErrClosed = errors.New("service supervisor closed")
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
	// OnEvent, if set, is called (from any goroutine, no lock held) when
	// a service exits on its own or is restarted by its policy.
	OnEvent func(Event)
	// PollInterval is how often a process that is not the supervisor's
	// child is looked for in /proc when the kernel has no pidfd
	// (default 250ms).
	PollInterval time.Duration
	// Detached: the supervisor does not stay (standalone installs), so
	// a service's console is the log files themselves, not rotated.
	Detached bool
}

// Event kinds.
const (
	// EventExited: a service's process ended without being asked to.
	EventExited = "exited"
	// EventRestarted: the supervisor started a service again per its
	// policy (Failed: it could not).
	EventRestarted = "restarted"
)

// Event is something that happened to a service on its own.
type Event struct {
	Kind       string
	Coordinate string
	Package    string
	Version    string
	// Failed: the process failed (a non-zero exit, a signal, a failed
	// restart); Restart: a restart follows.
	Failed, Restart bool
	Message         string
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
	// DROVER_PARAM_<NAME> variables; those named in Secret are no flags
	// but files etc/params/<NAME> (0600) instead.
	Params map[string]string
	Secret map[string]bool
	// Ports must accept TCP connections on loopback within Startup
	// (default 30s) for a start to succeed.
	Ports   []int
	Startup time.Duration
	// ConsoleMax and ConsoleKeep: console files rotate at ConsoleMax
	// bytes (default 10MB) and ConsoleKeep old ones stay (default 5).
	ConsoleMax  int64
	ConsoleKeep int
}

// App is an installed app, for Specs.
type App struct {
	Name, Version, Instance string
	// Location is the install location.
	Location string
	// Params are the values the app was configured with.
	Params map[string]string
	// Labels are the device's (env and region go in coordinates).
	Labels map[string]string
}

// Specs returns the specs of an app's services as its manifest declares
// them: the one place a manifest's service becomes something to run.
func Specs(m *api.Manifest, app App) []Spec {
	var out []Spec
	secret := map[string]bool{}
	for name, p := range m.Params {
		if p.Secret {
			secret[name] = true
		}
	}
	for _, sv := range m.Services {
		startup, _ := pkgfile.StartupTimeout(sv) // the manifest was validated
		maxSize, keep, _ := pkgfile.ConsoleLimits(sv)
		out = append(out, Spec{
			Coordinate: Coordinate(app.Name, app.Instance, sv.Name, app.Labels),
			Package:    app.Name, Version: app.Version, Instance: app.Instance, Service: sv.Name,
			Location: app.Location, Start: sv.Start, Stop: sv.Stop, Health: sv.Health, Restart: sv.Restart,
			Params: app.Params, Secret: secret,
			Ports: slices.Clone(sv.Ports), Startup: startup, ConsoleMax: maxSize, ConsoleKeep: keep,
		})
	}
	return out
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

	quit      chan struct{} // closed by Close
	closeOnce sync.Once
}

// supervised is one supervised service instance.
type supervised struct {
	spec     Spec
	state    string
	pid      int
	pgid     int    // its process group, 0 if none to signal
	ticks    uint64 // its start time, so a reused pid is never signalled
	restarts int
	fails    int // failures in a row, for the backoff
	since    time.Time
	err      string
	// lastErr is the last failure, kept across restarts.
	lastErr   string
	lastErrAt time.Time
	held      bool // stopped on purpose: no restart
	// starting: Start is waiting to see the process up; it reports
	// the outcome, and an exit then is no crash to restart.
	starting bool
	cons     *consoles
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
	// portKill: the current process, a restart, is being stopped because
	// its ports did not answer in time; why.
	portKill string
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
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 250 * time.Millisecond
	}
	return &Supervisor{cfg: cfg, log: cfg.Logger, procs: map[string]*supervised{}, quit: make(chan struct{})}, nil
}

// Close stops watching: the services keep running (a restarted
// supervisor adopts them), nothing is restarted any more, and their
// console output waits in its FIFO for the next supervisor.
func (s *Supervisor) Close() {
	s.closeOnce.Do(func() {
		close(s.quit)
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, p := range s.procs {
			if p.timer != nil {
				p.timer.Stop()
				p.timer = nil
			}
			if p.cons != nil {
				p.cons.stop()
			}
		}
	})
}

func (s *Supervisor) closed() bool {
	select {
	case <-s.quit:
		return true
	default:
		return false
	}
}

func (s *Supervisor) event(ev Event) {
	if s.cfg.OnEvent != nil {
		s.cfg.OnEvent(ev)
	}
}

// failLocked records a failure of p. s.mu is held.
func (s *Supervisor) failLocked(p *supervised, msg string) {
	p.state, p.err, p.lastErr, p.lastErrAt, p.since = api.ServiceFailed, msg, msg, s.cfg.Now(), s.cfg.Now()
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
// names a live one) and waits to see it started: up for StartWait, and
// with ports, each accepting connections on loopback within Startup. A
// start command that cannot run, or a service that exits at once, or
// that leaves no live pid in run/start.pid when its start exits 0, or
// whose ports do not answer in time, is an error wrapping ErrStart with
// the reason and the tail of console/. Starting a running service with
// the same spec does nothing.
func (s *Supervisor) Start(ctx context.Context, sp Spec) error {
	if err := checkSpec(sp); err != nil {
		return err
	}
	if s.closed() {
		return ErrClosed
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
	if pid, ticks := s.livePID(sp.Coordinate); pid > 0 {
		s.adoptLocked(p, pid, ticks)
		s.mu.Unlock()
		s.log.Info("service adopted", "service", sp.Coordinate, "pid", pid)
		s.changed()
		return nil
	}
	p.starting = true
	l, err := s.launchLocked(p)
	gen := p.gen
	s.mu.Unlock()
	s.changed()
	if err != nil {
		s.mu.Lock()
		p.starting = false
		s.mu.Unlock()
		return err
	}
	why := s.awaitStart(ctx, sp, l)
	done := l.done
	s.mu.Lock()
	p.starting = false
	if why == "" || gen != p.gen {
		pid := p.pid
		s.mu.Unlock()
		if why == "" {
			s.claimForeground(p, gen, pid) // Start's caller may read the pid file at once
		}
		return nil
	}
	p.held = true // a start that fails is not retried in a loop
	running, pid, pgid := p.done != nil, p.pid, p.pgid
	s.mu.Unlock()
	if running {
		// Up but not answering: stop it like any stop.
		if err := s.terminate(ctx, sp, pid, pgid, done); err != nil {
			s.log.Warn("stop a service that did not start", "service", sp.Coordinate, "err", err)
		}
	}
	s.mu.Lock()
	if why == exitedWhy {
		why = p.err
		if strings.HasPrefix(why, "exited 0") {
			why = "start exited 0 without a live pid in run/start.pid (a start must stay in the foreground, or leave its service's pid there)" + strings.TrimPrefix(why, "exited 0")
		}
	} else {
		why += consoleTail(s.Dir(sp.Coordinate))
	}
	s.failLocked(p, why)
	s.mu.Unlock()
	s.changed()
	return fmt.Errorf("%w: %s: %s", ErrStart, sp.Coordinate, why)
}

// exitedWhy is awaitStart's answer for a process that ended: the reason
// is its exit, in p.err.
const exitedWhy = "exited"

// awaitStart waits for a launched service to count as started and
// returns "" when it does, exitedWhy when it ended, or what it lacked.
func (s *Supervisor) awaitStart(ctx context.Context, sp Spec, l *launched) string {
	done := l.done
	t := time.NewTimer(s.cfg.StartWait)
	defer t.Stop()
	select {
	case <-done:
		return exitedWhy
	case <-t.C:
	case <-ctx.Done():
		return ""
	}
	startup := sp.Startup
	if startup <= 0 {
		startup = 30 * time.Second
	}
	select {
	case <-l.exit:
	default:
		// Still running, but its service's pid is in run/start.pid
		// already: a daemonizing start that takes its time. It has
		// startup to exit.
		if d, _ := s.otherPID(s.Dir(sp.Coordinate), l.pid, l.ticks); d > 0 {
			wait := time.NewTimer(startup)
			defer wait.Stop()
			select {
			case <-l.exit:
			case <-wait.C:
				return fmt.Sprintf("start command still runs after %v, and run/start.pid names another process", startup)
			case <-ctx.Done():
				return ""
			}
		}
	}
	select {
	case <-l.exit:
		// The start command exited 0: wait to know whether it left a
		// service behind.
		select {
		case <-done:
			return exitedWhy
		case <-l.handed:
		case <-ctx.Done():
			return ""
		}
	default:
	}
	if len(sp.Ports) == 0 {
		return ""
	}
	deadline := time.NewTimer(startup - s.cfg.StartWait)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		port := closedPort(ctx, sp.Ports)
		if port == 0 {
			return ""
		}
		select {
		case <-done:
			return exitedWhy
		case <-ctx.Done():
			return ""
		case <-deadline.C:
			return fmt.Sprintf("port %d did not accept connections on loopback within %v", port, startup)
		case <-tick.C:
		}
	}
}

// closedPort returns the first of ports that accepts no TCP connection
// on 127.0.0.1 or ::1, or 0 when all do.
func closedPort(ctx context.Context, ports []int) int {
	d := net.Dialer{Timeout: 500 * time.Millisecond}
	for _, port := range ports {
		ok := false
		for _, host := range []string{"127.0.0.1", "::1"} {
			c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
			if err == nil {
				c.Close()
				ok = true
				break
			}
		}
		if !ok {
			return port
		}
	}
	return 0
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

// makeDirs makes the runtime directory and its folders, and the files of
// the secret parameters.
func (s *Supervisor) makeDirs(sp Spec) (string, error) {
	dir := s.Dir(sp.Coordinate)
	for _, sub := range []string{"log", "etc", "console", "data", "run"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return "", fmt.Errorf("runtime directory of %s: %w", sp.Coordinate, err)
		}
	}
	if err := writeSecrets(filepath.Join(dir, "etc", "params"), sp); err != nil {
		return "", fmt.Errorf("runtime directory of %s: %w", sp.Coordinate, err)
	}
	return dir, nil
}

// writeSecrets makes etc/params/<NAME> (0600, in a 0700 folder) hold each
// secret parameter, and removes the files of parameters that are no
// longer secret.
func writeSecrets(dir string, sp Spec) error {
	if len(sp.Secret) == 0 {
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if _, ok := sp.Params[e.Name()]; !ok || !sp.Secret[e.Name()] {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
	for name := range sp.Secret {
		v, ok := sp.Params[name]
		if !ok || !param.ValidName(name) {
			continue
		}
		if err := writeFile(filepath.Join(dir, name), []byte(v), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// args are the flags start and stop get: never a secret's.
func args(dir string, sp Spec, withParams bool) []string {
	out := []string{"--runtime-dir=" + dir, "--coordinate=" + sp.Coordinate}
	if withParams {
		names := make([]string, 0, len(sp.Params))
		for k := range sp.Params {
			if !sp.Secret[k] {
				names = append(names, k)
			}
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

// launched is a process launchLocked started.
type launched struct {
	// done is closed when the service is gone: the process itself, or,
	// when it exits 0 leaving a live pid in run/start.pid, the process
	// that pid names.
	done chan struct{}
	// exit is closed when the process launched exits; handed when it
	// exited 0 and handed over to the process in run/start.pid.
	exit, handed chan struct{}
	// pid and ticks are the launched process's pid and start time.
	pid   int
	ticks uint64
}

// launchLocked starts p's process. s.mu is held.
func (s *Supervisor) launchLocked(p *supervised) (*launched, error) {
	sp := p.spec
	fail := func(err error) (*launched, error) {
		s.failLocked(p, err.Error())
		p.pid, p.pgid = 0, 0
		return nil, fmt.Errorf("%w: %s: %v", ErrStart, sp.Coordinate, err)
	}
	dir, err := s.makeDirs(sp)
	if err != nil {
		return fail(err)
	}
	// What an earlier process left: the new start writes its own.
	_ = os.Remove(filepath.Join(dir, "run", identFile))
	_ = os.Remove(filepath.Join(dir, "run", "start.pid"))
	if p.cons == nil {
		p.cons = s.newConsoles(dir, sp)
	} else {
		p.cons.limits(sp) // a new build may rotate otherwise
	}
	files, consDone, err := s.childFiles(p, dir)
	if err != nil {
		return fail(err)
	}
	bin := filepath.Join(sp.Location, filepath.FromSlash(sp.Start))
	var cmd *exec.Cmd
	for try := 0; ; try++ {
		cmd = exec.Command(bin, args(dir, sp, true)...)
		cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = dir, env(dir, sp), files[0], files[1]
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		err = cmd.Start()
		// A fork elsewhere can hold the file open for writing an instant.
		if try < 5 && errors.Is(err, syscall.ETXTBSY) {
			time.Sleep(time.Duration(try+1) * 10 * time.Millisecond)
			continue
		}
		break
	}
	closeAll(files) // the child has them; the copies end when it is gone
	if err != nil {
		return fail(fmt.Errorf("run %s: %w", sp.Start, err))
	}
	pid := cmd.Process.Pid
	ticks, _ := procStart(pid)
	// The pid goes to run/start.pid once the start is seen to stay in
	// the foreground (claimForeground): until then the start command may
	// write its service's pid there itself.
	if err := writeIdent(dir, pid, ticks); err != nil {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		_ = cmd.Wait()
		return fail(err)
	}
	p.gen++
	gen := p.gen
	l := &launched{done: make(chan struct{}), exit: make(chan struct{}), handed: make(chan struct{}), pid: pid, ticks: ticks}
	done := l.done
	p.done, p.pid, p.pgid, p.ticks, p.state, p.err, p.since = done, pid, pid, ticks, api.ServiceRunning, "", s.cfg.Now()
	s.resetHealthLocked(p)
	started := s.cfg.Now()
	s.log.Info("service started", "service", sp.Coordinate, "pid", pid)
	claim := time.AfterFunc(s.cfg.StartWait, func() { s.claimForeground(p, gen, pid) })
	go func() {
		werr := cmd.Wait()
		claim.Stop()
		close(l.exit)
		if werr == nil {
			if dpid, dticks := s.daemonPID(dir, pid, ticks); dpid > 0 {
				if !s.follow(p, gen, dpid, dticks, l.handed) {
					return // the supervisor closed
				}
				drained(consDone, time.Second)
				s.exited(p, gen, started, "exited (status unknown: not a child of the supervisor)", true)
				close(done)
				return
			}
		}
		if werr != nil {
			// A start command that failed after starting its service:
			// what it left is no service of ours, and a retry would run
			// a second one.
			if d, dt := s.otherPID(dir, pid, ticks); d > 0 {
				s.log.Warn("the failed start left a process, killing it", "service", sp.Coordinate, "pid", d)
				signal(d, dt, pgidOf(d), syscall.SIGKILL)
			}
		}
		drained(consDone, time.Second)
		s.exited(p, gen, started, describeExit(werr), werr != nil)
		close(done)
	}()
	if sp.Health != "" && !s.cfg.Detached {
		go s.watchHealth(p, gen, done)
	}
	return l, nil
}

// claimForeground records the pid of p's process of generation gen, a
// start command that stayed in the foreground for StartWait, in
// run/start.pid, unless the file is there already.
func (s *Supervisor) claimForeground(p *supervised, gen, pid int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if gen != p.gen || p.done == nil || p.pid != pid {
		return
	}
	if err := claimPID(s.Dir(p.spec.Coordinate), pid); err != nil {
		s.log.Warn("record the service's pid", "service", p.spec.Coordinate, "err", err)
	}
}

// daemonPID returns the service a start command (pid, started at ticks)
// left running when it exited 0: the live process run/start.pid names,
// if it started after the start command did. The start command may exit
// an instant before its service writes the file: it is read again for a
// little while.
func (s *Supervisor) daemonPID(dir string, pid int, ticks uint64) (int, uint64) {
	deadline := time.Now().Add(min(s.cfg.StartWait, time.Second))
	for {
		if d, t := s.otherPID(dir, pid, ticks); d > 0 {
			return d, t
		}
		if time.Now().After(deadline) {
			return 0, 0
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// otherPID returns the live process run/start.pid names, and its start
// time, if it is not the start command (pid, started at ticks) and
// started after it; else 0.
func (s *Supervisor) otherPID(dir string, pid int, ticks uint64) (int, uint64) {
	d := readPID(filepath.Join(dir, "run", "start.pid"))
	if d <= 0 || d == pid {
		return 0, 0
	}
	if t, ok := procStart(d); ok && t >= ticks && !zombie(d) {
		return d, t
	}
	return 0, 0
}

// follow makes the daemon dpid the service p's process of generation
// gen and waits until it is gone (true) or the supervisor closes.
func (s *Supervisor) follow(p *supervised, gen, dpid int, dticks uint64, handed chan struct{}) bool {
	dir := s.Dir(p.spec.Coordinate)
	s.mu.Lock()
	if gen == p.gen {
		p.pid, p.pgid, p.ticks = dpid, pgidOf(dpid), dticks
		if err := writeIdent(dir, dpid, dticks); err != nil {
			s.log.Warn("record the service's pid", "service", p.spec.Coordinate, "err", err)
		}
	}
	s.mu.Unlock()
	close(handed)
	s.log.Info("service runs in the background", "service", p.spec.Coordinate, "pid", dpid)
	s.changed()
	return s.waitGone(dpid, dticks)
}

func describeExit(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return "killed by " + unix.SignalName(ws.Signal()) // SIGKILL, not "killed"
		}
		return "exited " + strconv.Itoa(ee.ExitCode())
	}
	if err != nil {
		return err.Error()
	}
	return "exited 0"
}

// adoptLocked watches a live process the supervisor did not start.
func (s *Supervisor) adoptLocked(p *supervised, pid int, ticks uint64) {
	p.gen++
	gen := p.gen
	done := make(chan struct{})
	p.done, p.pid, p.pgid, p.ticks, p.state, p.err, p.since = done, pid, pgidOf(pid), ticks, api.ServiceRunning, "", s.cfg.Now()
	s.resetHealthLocked(p)
	dir := s.Dir(p.spec.Coordinate)
	if err := writeIdent(dir, pid, ticks); err != nil {
		s.log.Warn("record the service's pid", "service", p.spec.Coordinate, "err", err)
	}
	if p.cons == nil {
		p.cons = s.newConsoles(dir, p.spec)
	}
	consDone := s.adoptConsoles(p, dir)
	started := s.cfg.Now()
	go func() {
		if !s.waitGone(pid, ticks) {
			return
		}
		drained(consDone, time.Second)
		// Not our child: its exit status is its parent's to read.
		s.exited(p, gen, started, "exited (status unknown: adopted process)", true)
		close(done)
	}()
	if p.spec.Health != "" && !s.cfg.Detached {
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
	_ = os.Remove(filepath.Join(dir, "run", identFile))
	p.pid, p.pgid, p.done, p.since = 0, 0, nil, s.cfg.Now()
	healthKill, portKill := p.healthKill, p.portKill
	p.healthKill, p.portKill = false, ""
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
	if portKill != "" {
		how, failed = "stopped: "+portKill, true
	}
	p.state = api.ServiceFailed
	if !failed {
		p.state = api.ServiceStopped
	}
	p.err = how + consoleTail(dir)
	if failed {
		p.lastErr, p.lastErrAt = p.err, s.cfg.Now()
	}
	if p.starting || s.closed() {
		// Start reports this one; a closed supervisor restarts nothing.
		s.mu.Unlock()
		s.changed()
		return
	}
	restart := sp.Restart == RestartAlways || (sp.Restart != RestartNever && failed)
	ev := Event{Kind: EventExited, Coordinate: sp.Coordinate, Package: sp.Package, Version: sp.Version,
		Failed: failed, Restart: restart, Message: fmt.Sprintf("service %s %s", sp.Coordinate, p.err)}
	if !restart {
		s.mu.Unlock()
		s.log.Warn("service ended", "service", sp.Coordinate, "how", how)
		s.event(ev)
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
	ev.Message += fmt.Sprintf("; restarting in %v", delay)
	s.log.Warn("service ended, restarting", "service", sp.Coordinate, "how", how, "in", delay)
	p.timer = time.AfterFunc(delay, func() {
		s.mu.Lock()
		if p.held || p.done != nil || gen != p.gen || s.closed() {
			s.mu.Unlock()
			return
		}
		p.timer = nil
		p.restarts++
		l, err := s.launchLocked(p)
		if err == nil && len(sp.Ports) > 0 {
			go s.checkRestartPorts(p, l)
		}
		rev := Event{Kind: EventRestarted, Coordinate: sp.Coordinate, Package: sp.Package, Version: sp.Version, Restart: true,
			Message: fmt.Sprintf("service %s restarted (restart %d, policy %s)", sp.Coordinate, p.restarts, policyName(sp.Restart))}
		if err != nil {
			rev.Failed, rev.Message = true, fmt.Sprintf("service %s: restart failed: %v", sp.Coordinate, err)
		}
		s.mu.Unlock()
		if err != nil {
			s.log.Warn("service restart", "service", sp.Coordinate, "err", err)
		}
		s.event(rev)
		s.changed()
	})
	s.mu.Unlock()
	s.event(ev)
	s.changed()
}

// checkRestartPorts holds a restarted service to its ports as Start
// does: one whose ports do not accept connections within startup is
// stopped, a failure that its policy restarts again, with backoff.
func (s *Supervisor) checkRestartPorts(p *supervised, l *launched) {
	s.mu.Lock()
	sp, gen := p.spec, p.gen
	s.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-s.quit:
		case <-l.done:
		case <-ctx.Done():
		}
		cancel()
	}()
	why := s.awaitStart(ctx, sp, l)
	if why == "" || why == exitedWhy || ctx.Err() != nil {
		return
	}
	s.mu.Lock()
	if gen != p.gen || p.done != l.done || p.held {
		s.mu.Unlock()
		return
	}
	p.portKill = why
	pid, pgid := p.pid, p.pgid
	s.mu.Unlock()
	s.log.Warn("restarted service does not answer, stopping it", "service", sp.Coordinate, "why", why)
	if err := s.terminate(context.Background(), sp, pid, pgid, l.done); err != nil {
		s.log.Warn("stop a service that does not answer", "service", sp.Coordinate, "err", err)
	}
}

func policyName(r string) string {
	if r == "" {
		return RestartOnFailure
	}
	return r
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

// livePID returns the process coord's pid file names and its start time,
// if that process is alive and is this service: it has the start time
// recorded when the supervisor took it on, or, with no record of that
// pid, DROVER_SERVICE=coord in its environment. Else 0.
func (s *Supervisor) livePID(coord string) (int, uint64) {
	dir := s.Dir(coord)
	pid := readPID(filepath.Join(dir, "run", "start.pid"))
	if pid == 0 {
		// A supervisor that stopped within StartWait of a start: the
		// pid is only in its record.
		if pid, _, _ = readIdent(dir); pid <= 1 {
			return 0, 0
		}
	}
	ticks, ok := procStart(pid)
	if !ok || zombie(pid) {
		return 0, 0
	}
	if rpid, rticks, ok := readIdent(dir); ok && rpid == pid {
		if rticks != ticks {
			return 0, 0 // another process got the pid
		}
		return pid, ticks
	}
	envb, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil || !containsVar(envb, "DROVER_SERVICE="+coord) {
		return 0, 0
	}
	return pid, ticks
}

func containsVar(environ []byte, kv string) bool {
	for _, v := range bytes.Split(environ, []byte{0}) {
		if string(v) == kv {
			return true
		}
	}
	return false
}

// Stop stops a service and keeps it stopped (no restart) until Start: the
// stop command if it has one, else SIGTERM to its process group; SIGKILL
// when Grace passes.
func (s *Supervisor) Stop(ctx context.Context, coord string) error {
	if s.closed() {
		return ErrClosed
	}
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
	done, pid, pgid, sp := p.done, p.pid, p.pgid, p.spec
	if done == nil {
		if p.state != api.ServiceStopped {
			p.state, p.since = api.ServiceStopped, s.cfg.Now()
		}
		s.mu.Unlock()
		s.changed()
		return nil
	}
	s.mu.Unlock()
	return s.terminate(ctx, sp, pid, pgid, done)
}

// terminate ends the process pid (of group pgid) of sp and waits for
// done: the stop command if there is one, then SIGTERM to its process
// group, SIGKILL when Grace passes.
func (s *Supervisor) terminate(ctx context.Context, sp Spec, pid, pgid int, done <-chan struct{}) error {
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
	// The process as it is now: a start command may have handed over
	// to its daemon.
	send := func(sig syscall.Signal) {
		s.mu.Lock()
		var ticks uint64
		if p := s.procs[coord]; p != nil && p.done == done {
			pid, pgid, ticks = p.pid, p.pgid, p.ticks
		}
		s.mu.Unlock()
		signal(pid, ticks, pgid, sig)
	}
	send(syscall.SIGTERM)
	if wait(done, s.cfg.Grace) {
		return nil
	}
	s.log.Warn("service did not stop in time, killing it", "service", coord, "grace", s.cfg.Grace)
	send(syscall.SIGKILL)
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

// Kill sends SIGKILL to a service's process and its process group; the
// supervisor then restarts it per its policy, as it would after any
// crash.
func (s *Supervisor) Kill(coord string) error {
	if s.closed() {
		return ErrClosed
	}
	s.mu.Lock()
	p := s.procs[coord]
	if p == nil {
		s.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrUnknown, coord)
	}
	pid, pgid, ticks := p.pid, p.pgid, p.ticks
	s.mu.Unlock()
	if pid == 0 {
		return fmt.Errorf("service %s is not running", coord)
	}
	signal(pid, ticks, pgid, syscall.SIGKILL)
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
		st := api.ServiceState{
			Coordinate: p.spec.Coordinate, Package: p.spec.Package, Version: p.spec.Version, Instance: p.spec.Instance,
			Service: p.spec.Service, State: p.state, PID: p.pid, Restarts: p.restarts, Since: p.since.UTC(), Error: p.err,
			LastError: p.lastErr,
		}
		if !p.lastErrAt.IsZero() {
			st.LastErrorTime = p.lastErrAt.UTC()
		}
		if p.done != nil {
			st.Health = p.health.state
			if st.Health == api.ServiceUnhealthy {
				st.HealthOutput = p.healthOut
			}
		}
		out = append(out, st)
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
	if pid, ticks := s.livePID(sp.Coordinate); pid > 0 {
		s.adoptLocked(p, pid, ticks)
		return true, nil
	}
	return false, nil
}
