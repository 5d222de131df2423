package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/drover-dev/drover/internal/agent"
	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/client"
	"github.com/drover-dev/drover/internal/facts"
	"github.com/drover-dev/drover/internal/pkgfile"
	"github.com/drover-dev/drover/internal/pki"
	"github.com/drover-dev/drover/internal/push"
)

// FleetConfig configures Fleet.
type FleetConfig struct {
	// Sizes are the fleet sizes to run, in order, each in a fresh folder
	// with a fresh server.
	Sizes []int
	// Drover is the drover binary run as the server; empty builds
	// ./cmd/drover of the module in the working directory.
	Drover string
	// Dir holds the per-size folders; empty means /dev/shm (a tmpfs, so
	// the agents' disks do not dominate the figures) when it exists, else
	// the system temp folder.
	Dir string
	// Timeout bounds one size from PKI to convergence; 0 = 120s.
	Timeout time.Duration
	// SetWorkers is how many SetState calls are in flight at once, as a
	// script or a rollout tool would send them; 0 = 16.
	SetWorkers int
	// Bulk sets every state in one call instead of one call per device.
	Bulk bool
	// DB, when set (postgres://...), runs the servers on PostgreSQL,
	// each size in a fresh schema of that database.
	DB string
	// Replicas is how many server processes share the database and one
	// blob folder (needs DB when above 1); agents are spread over them
	// in turn and desired states are set through the last. 0 = 1.
	Replicas int
	// AgentProcs, when above 0, runs the agents in that many child
	// processes instead of this one: one process may hold only as many
	// open files as its limit allows, and each agent needs about three.
	AgentProcs int
	// Self is the command line that runs this program's fleet-agents
	// subcommand (an agent process): Self[0] and the arguments before the
	// subcommand's own. Empty means os.Executable().
	Self []string
	// Out receives the figures.
	Out io.Writer
}

// The package every agent of the fleet is told to install.
const (
	fleetGroup   = "bench"
	fleetName    = "fleet"
	fleetVersion = "1.0.0"
	fleetPackage = fleetGroup + ":" + fleetName
)

// FleetResult is what one fleet size measured.
type FleetResult struct {
	N int
	// Issue is the time to issue the N device certificates; Register
	// from starting the agents until the server lists all N devices.
	Issue, Register time.Duration
	// StateSet is the time to set every device's desired state;
	// Converged from the first SetState until the server lists every
	// device converged with the package installed; AgentsApplied until
	// every agent in this process says it applied the new state.
	StateSet, Converged, AgentsApplied time.Duration
	// SetLatency50 and SetLatency99 are percentiles of one SetState
	// call; Lag50 and Lag99 of the time from a device's SetState
	// answer to its agent having applied the state (10 ms resolution).
	SetLatency50, SetLatency99, Lag50, Lag99 time.Duration
	// DevicesCall is the slowest GET /v1/devices during the wait, which
	// bounds how precise Converged is.
	DevicesCall time.Duration
	// ServerPeakRSS is the server process's VmHWM; ServerFDs its open
	// files at the end; BenchPeakRSS the agents' processes' (this one's,
	// or the sum of the agent processes').
	ServerPeakRSS, BenchPeakRSS int64
	// ServerRSS is the server's resident memory at the end, the fleet
	// converged and waiting on its long-polls.
	ServerRSS int64
	ServerFDs int
	// ServerCPU and BenchCPU are the CPU time (user+system) the server
	// and the agents' processes used from the first SetState until
	// convergence: on a small machine they share the cores.
	ServerCPU, BenchCPU time.Duration
	// ServerWarnings counts WARN and ERROR lines of the server's log;
	// AgentWarnings the agents' warnings and errors.
	ServerWarnings, AgentWarnings int64
	// FirstServerWarning and FirstAgentWarning show one of each.
	FirstServerWarning, FirstAgentWarning string
	// Replicas holds, with several replicas, each one's peak memory and
	// CPU until convergence (the Server figures above are the first's).
	Replicas []ReplicaFigures
}

// ReplicaFigures are one replica's figures of a fleet run.
type ReplicaFigures struct {
	PeakRSS int64
	CPU     time.Duration
	Agents  int
}

// Fleet runs, for each size N, a real `drover server` process and N real
// agents in this process, each with its own certificate and its own TLS
// connection, and measures how long the fleet takes to converge after a
// desired state is set for every device. It prints one line per size.
// A size that fails (a timeout, a resource limit) is reported and the
// next one runs; the error returned names every size that failed.
func Fleet(ctx context.Context, cfg FleetConfig) error {
	if len(cfg.Sizes) == 0 {
		return usagef("no fleet size given")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 120 * time.Second
	}
	if cfg.SetWorkers <= 0 {
		cfg.SetWorkers = 16
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	if cfg.Replicas > 1 && cfg.DB == "" {
		return usagef("-replicas %d needs -db postgres://...: replicas share one database", cfg.Replicas)
	}
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	if cfg.AgentProcs < 0 {
		return usagef("-agent-procs must be 0 (agents in this process) or more")
	}
	if cfg.AgentProcs > 0 && len(cfg.Self) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find this program to run agent processes: %w", err)
		}
		cfg.Self = []string{exe}
	}
	cfg.Dir = workDir(cfg.Dir)
	out := cfg.Out
	soft, hard, err := RaiseOpenFiles()
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "fleet: open-file limit %d (hard %d); folders under %s (%s)", soft, hard, cfg.Dir, fsName(cfg.Dir))
	if fsName(cfg.Dir) == "tmpfs" {
		fmt.Fprint(out, ": agents' disks and the server's database are in RAM, so disk speed does not dominate")
	}
	fmt.Fprintln(out)
	start := time.Now()
	bin, done, err := droverBinary(ctx, cfg.Drover)
	if err != nil {
		return err
	}
	defer done()
	if cfg.Drover == "" {
		fmt.Fprintf(out, "fleet: built %s in %s\n", bin, secs(time.Since(start)))
	}
	var failed []string
	for _, n := range cfg.Sizes {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		res, err := runFleet(ctx, cfg, bin, n)
		if err != nil {
			fmt.Fprintf(out, "N=%d FAILED: %v\n", n, err)
			failed = append(failed, strconv.Itoa(n))
			continue
		}
		where := "agents-in-process"
		if cfg.AgentProcs > 0 {
			where = fmt.Sprintf("agents-in-%d-processes", min(cfg.AgentProcs, n))
		}
		fmt.Fprintf(out, "N=%d state-set=%s converged=%s (from the first state set) server-peak-rss=%dMB %s\n",
			n, secs(res.StateSet), secs(res.Converged), res.ServerPeakRSS>>20, where)
		fmt.Fprintf(out, "    issue-certs=%s register=%s agents-applied=%s slowest-device-list=%s cpu-until-converged: server=%s agents=%s\n",
			secs(res.Issue), secs(res.Register), secs(res.AgentsApplied), secs(res.DevicesCall), secs(res.ServerCPU), secs(res.BenchCPU))
		fmt.Fprintf(out, "    set-state-call p50=%s p99=%s; state-set-to-agent-applied p50=%s p99=%s\n",
			ms(res.SetLatency50), ms(res.SetLatency99), ms(res.Lag50), ms(res.Lag99))
		fmt.Fprintf(out, "    server-rss-at-end=%dMB server-fds=%d agents-peak-rss=%dMB server-warnings=%d agent-warnings=%d\n",
			res.ServerRSS>>20, res.ServerFDs, res.BenchPeakRSS>>20, res.ServerWarnings, res.AgentWarnings)
		for i, r := range res.Replicas {
			fmt.Fprintf(out, "    replica %d: agents=%d peak-rss=%dMB cpu-until-converged=%s\n", i+1, r.Agents, r.PeakRSS>>20, secs(r.CPU))
		}
		if res.FirstServerWarning != "" {
			fmt.Fprintf(out, "    first server warning: %s\n", res.FirstServerWarning)
		}
		if res.FirstAgentWarning != "" {
			fmt.Fprintf(out, "    first agent warning: %s\n", res.FirstAgentWarning)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("fleet sizes %s failed (see above)", strings.Join(failed, ","))
	}
	return nil
}

// droverBinary returns given when it is set, else a drover built now in
// a temporary folder that done removes.
func droverBinary(ctx context.Context, given string) (bin string, done func(), err error) {
	if given != "" {
		return given, func() {}, nil
	}
	tmp, err := os.MkdirTemp("", "drover-bench-bin-")
	if err != nil {
		return "", nil, err
	}
	if bin, err = buildDrover(ctx, tmp); err != nil {
		os.RemoveAll(tmp)
		return "", nil, err
	}
	return bin, func() { os.RemoveAll(tmp) }, nil
}

// buildDrover builds ./cmd/drover of the module holding the working
// directory into dir.
func buildDrover(ctx context.Context, dir string) (string, error) {
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("find the drover module: go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(gomod))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the drover module: run from its folder, or give -drover PATH")
	}
	bin := filepath.Join(dir, "drover")
	if err := runCmd(ctx, filepath.Dir(mod), "go", "build", "-o", bin, "./cmd/drover"); err != nil {
		return "", fmt.Errorf("build drover: %w", err)
	}
	return bin, nil
}

// runFleet runs one fleet size in a fresh folder and stops everything it
// started before it returns.
func runFleet(parent context.Context, cfg FleetConfig, bin string, n int) (res FleetResult, err error) {
	res.N = n
	// An agent holds its long-poll's connection to the server and, while
	// it converges, a second one: a replica needs two files per agent of
	// its share; the agents' processes fdsPerAgent each.
	procs := min(cfg.AgentProcs, n)
	if procs == 0 {
		if err := agentsNeedFiles(n, "in this process"); err != nil {
			return res, err
		}
	} else if err := agentsNeedFiles((n+procs-1)/procs, "in each agent process"); err != nil {
		return res, err
	}
	if _, hard, err := RaiseOpenFiles(); err == nil {
		share := (n + cfg.Replicas - 1) / cfg.Replicas
		if need := uint64(2*share + 256); hard < need {
			return res, fmt.Errorf("RESOURCE LIMIT: %d agents on a server need about %d open files in it; the hard limit is %d (add -replicas, or raise ulimit -Hn)",
				share, need, hard)
		}
	}
	// Reset this process's peak RSS, so each size reports its own.
	_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
	ctx, cancel := context.WithTimeout(parent, cfg.Timeout)
	defer cancel()
	// Name the stage that ran out of time, not just "deadline exceeded".
	stage := "start"
	defer func() {
		if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
			err = fmt.Errorf("timed out after %v while %s: %w", cfg.Timeout, stage, err)
		}
	}()
	dir, err := os.MkdirTemp(cfg.Dir, fmt.Sprintf("drover-bench-fleet-%d-", n))
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)

	stage = "issuing certificates"
	pkiDir := filepath.Join(dir, "pki")
	start := time.Now()
	ids, err := issueFleet(ctx, pkiDir, n)
	if err != nil {
		return res, err
	}
	res.Issue = time.Since(start)

	stage = "starting the server"
	var extra []string
	if cfg.DB != "" {
		db, drop, err := freshSchema(ctx, cfg.DB, fmt.Sprintf("drover_bench_%d_%d", n, time.Now().UnixNano()))
		if err != nil {
			return res, err
		}
		defer drop()
		extra = []string{"--db", db, "--blobs", filepath.Join(dir, "blobs")}
	}
	var servers []*serverProc
	var addrs []string
	for i := range cfg.Replicas {
		rdir := dir
		if cfg.Replicas > 1 {
			rdir = filepath.Join(dir, fmt.Sprintf("replica-%d", i+1))
		}
		srv, err := startServer(ctx, bin, rdir, pkiDir, extra...)
		if err != nil {
			return res, err
		}
		defer srv.stop()
		servers = append(servers, srv)
		addrs = append(addrs, srv.addr)
	}
	srv := servers[0]
	// A failure says what the servers logged, too.
	defer func() {
		if err == nil {
			return
		}
		for i, s := range servers {
			if n, first := s.warnings(); n > 0 {
				err = fmt.Errorf("%w; server %d logged %d warnings, first: %s", err, i+1, n, first)
			}
		}
	}()
	// Operators use the last replica: with several, every agent but
	// those on it learns of its state through another replica.
	// A list of 10,000 devices on servers converging them can take longer
	// than a client's usual 30 s.
	admin, err := newClientWith(pkiDir, "bench-admin", client.Config{Addr: servers[len(servers)-1].addr, Timeout: 5 * time.Minute})
	if err != nil {
		return res, err
	}
	defer admin.Close()

	stage = "pushing the package"
	pkgPath, err := writeFleetPackage(dir)
	if err != nil {
		return res, err
	}
	if _, err := push.File(ctx, admin, pkgPath, nil); err != nil {
		return res, err
	}

	stage = "starting agents"
	var fl agentSet
	if procs > 0 {
		fl, err = startAgentProcs(cfg.Self, dir, pkiDir, addrs, ids, procs)
	} else {
		fl, err = startAgentsOn(ctx, dir, pkiDir, addrs, ids)
	}
	defer fl.stop()
	if err != nil {
		return res, fl.explain(err)
	}

	stage = "waiting for every device to report"
	start = time.Now()
	if err := waitRegistered(ctx, admin, ids, fl); err != nil {
		return res, fl.explain(err)
	}
	res.Register = time.Since(start)

	stage = "setting desired states"
	agentsCPU := func() (d time.Duration) {
		for _, pid := range fl.pids() {
			d += procCPU(pid)
		}
		return d
	}
	serverCPU0, benchCPU0 := procCPU(srv.cmd.Process.Pid), agentsCPU()
	replicaCPU0 := make([]time.Duration, len(servers))
	for i, s := range servers {
		replicaCPU0[i] = procCPU(s.cmd.Process.Pid)
	}
	applied, err := fl.watchApplied(ctx)
	if err != nil {
		return res, fl.explain(err)
	}
	t0 := time.Now()
	var setAt []time.Time
	var setLatency []time.Duration
	if cfg.Bulk {
		setAt, setLatency, err = setStatesBulk(ctx, admin, ids)
	} else {
		setAt, setLatency, err = setStates(ctx, admin, ids, cfg.SetWorkers)
	}
	if err != nil {
		return res, fl.explain(err)
	}
	res.StateSet = time.Since(t0)
	res.SetLatency50, res.SetLatency99 = percentile(setLatency, 50), percentile(setLatency, 99)

	stage = "waiting for convergence"
	t1, slowest, err := waitConverged(ctx, admin, n)
	res.DevicesCall = slowest
	if err != nil {
		return res, fl.explain(err)
	}
	res.Converged = t1.Sub(t0)
	res.ServerCPU, res.BenchCPU = procCPU(srv.cmd.Process.Pid)-serverCPU0, agentsCPU()-benchCPU0
	if len(servers) > 1 {
		for i, s := range servers {
			rf := ReplicaFigures{CPU: procCPU(s.cmd.Process.Pid) - replicaCPU0[i], Agents: (n - i + len(servers) - 1) / len(servers)}
			rf.PeakRSS, _ = procStatusBytes(s.cmd.Process.Pid, "VmHWM")
			res.Replicas = append(res.Replicas, rf)
		}
	}
	select {
	case appliedAt := <-applied:
		lags := make([]time.Duration, len(appliedAt))
		for i, at := range appliedAt {
			res.AgentsApplied = max(res.AgentsApplied, at.Sub(t0))
			lags[i] = at.Sub(setAt[i])
		}
		res.Lag50, res.Lag99 = percentile(lags, 50), percentile(lags, 99)
	case <-ctx.Done():
		return res, fl.explain(ctx.Err())
	}

	res.ServerPeakRSS, _ = procStatusBytes(srv.cmd.Process.Pid, "VmHWM")
	res.ServerRSS, _ = procStatusBytes(srv.cmd.Process.Pid, "VmRSS")
	for _, pid := range fl.pids() {
		peak, _ := procStatusBytes(pid, "VmHWM")
		res.BenchPeakRSS += peak
	}
	if fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", srv.cmd.Process.Pid)); err == nil {
		res.ServerFDs = len(fds)
	}
	res.ServerWarnings, res.FirstServerWarning = srv.warnings()
	res.AgentWarnings, res.FirstAgentWarning = fl.summary()
	return res, nil
}

// issueFleet makes the CA, the server certificate (localhost), an admin
// certificate and n device certificates, the devices in parallel. It
// returns the device ids.
func issueFleet(ctx context.Context, dir string, n int) ([]string, error) {
	now := time.Now()
	if err := pki.Init(dir, now); err != nil {
		return nil, err
	}
	if _, _, err := pki.Issue(dir, pki.IssueOptions{Role: pki.RoleServer, Name: "localhost"}, now); err != nil {
		return nil, err
	}
	if _, _, err := pki.Issue(dir, pki.IssueOptions{Role: pki.RoleAdmin, Name: "bench-admin"}, now); err != nil {
		return nil, err
	}
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("dev-%05d", i)
	}
	err := parallel(ctx, runtime.NumCPU()*2, n, func(i int) error {
		_, _, err := pki.Issue(dir, pki.IssueOptions{Role: pki.RoleDevice, Name: ids[i]}, now)
		return err
	})
	return ids, err
}

// parallel calls fn(0..n-1) on workers goroutines and returns the first
// error; after one, the rest are skipped.
func parallel(ctx context.Context, workers, n int, fn func(i int) error) error {
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		once     sync.Once
		firstErr error
		failed   atomic.Bool
	)
	for range min(workers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || failed.Load() {
					return
				}
				err := ctx.Err()
				if err == nil {
					err = fn(i)
				}
				if err != nil {
					once.Do(func() { firstErr = err; failed.Store(true) })
					return
				}
			}
		}()
	}
	wg.Wait()
	return firstErr
}

// newClient returns a client with the certificate NAME of the PKI in dir;
// each has its own connection pool, so its own TLS connection.
func newClient(addr, dir, name string) (*client.Client, error) {
	return newClientWith(dir, name, client.Config{Addr: addr})
}

// newClientWith is newClient with the rest of cfg (its TLS is set here).
func newClientWith(dir, name string, cfg client.Config) (*client.Client, error) {
	tlsCfg, err := pki.ClientTLSConfig(filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key"), filepath.Join(dir, pki.CACertFile))
	if err != nil {
		return nil, err
	}
	cfg.TLS = tlsCfg
	return client.New(cfg)
}

// writeFleetPackage builds the small package (3 files, prefix mode) every
// device installs and returns the package file's path.
func writeFleetPackage(dir string) (string, error) {
	src := filepath.Join(dir, "pkgsrc")
	files := map[string]struct {
		data string
		mode os.FileMode
	}{
		pkgfile.SpecFile:         {fmt.Sprintf("group: %s\nname: %s\nversion: %s\ninstall: prefix\n", fleetGroup, fleetName, fleetVersion), 0o644},
		"files/bin/hello":        {"#!/bin/sh\necho hello from the bench fleet\n", 0o755},
		"files/share/readme.txt": {"A small package that every device of the benchmark fleet installs.\n", 0o644},
		"files/etc/fleet.conf":   {"greeting = hello\n", 0o644},
	}
	for name, f := range files {
		p := filepath.Join(src, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return "", err
		}
		if err := os.WriteFile(p, []byte(f.data), f.mode); err != nil {
			return "", err
		}
	}
	path := filepath.Join(dir, "fleet.drover")
	out, err := os.Create(path)
	if err != nil {
		return "", err
	}
	if _, _, _, err := pkgfile.Build(src, out); err != nil {
		out.Close()
		return "", fmt.Errorf("build fleet package: %w", err)
	}
	return path, out.Close()
}

// serverProc is a running `drover server`.
type serverProc struct {
	cmd  *exec.Cmd
	addr string
	done chan struct{} // closed when the process has exited
	// mu guards the log figures the reader goroutine keeps.
	mu        sync.Mutex
	warns     int64
	firstWarn string
	tail      []string
}

var listenRe = regexp.MustCompile(`addr=(https://127\.0\.0\.1:\d+)`)

// startServer starts the server on a free loopback port, data under dir,
// and waits for the log line that gives its address. The server dies with
// this process (Pdeathsig), so an interrupted benchmark leaves none behind.
func startServer(ctx context.Context, bin, dir, pkiDir string, extra ...string) (*serverProc, error) {
	// The address comes in an info line; the rest of the info lines are
	// read and dropped, warnings and errors counted.
	cmd := exec.Command(bin, "server", "--data", filepath.Join(dir, "data"), "--listen", "127.0.0.1:0",
		"--tls-cert", filepath.Join(pkiDir, "localhost.crt"), "--tls-key", filepath.Join(pkiDir, "localhost.key"),
		"--ca-cert", filepath.Join(pkiDir, pki.CACertFile), "--log-level", "info")
	cmd.Args = append(cmd.Args, extra...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start drover server: %w", err)
	}
	s := &serverProc{cmd: cmd, done: make(chan struct{})}
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			s.line(sc.Text(), found)
		}
		// Wait only after the pipe is drained (os/exec's rule).
		_ = cmd.Wait()
		close(s.done)
	}()
	select {
	case s.addr = <-found:
		return s, nil
	case <-s.done:
		return nil, fmt.Errorf("drover server exited at start: %s", s.logTail())
	case <-time.After(20 * time.Second):
	case <-ctx.Done():
	}
	s.stop()
	return nil, fmt.Errorf("drover server gave no address within 20s: %s", s.logTail())
}

// line takes one line of the server's log.
func (s *serverProc) line(l string, found chan string) {
	if m := listenRe.FindStringSubmatch(l); m != nil {
		select {
		case found <- m[1]:
		default:
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") || !strings.Contains(l, "level=") {
		s.warns++
		if s.firstWarn == "" {
			s.firstWarn = l
		}
	}
	s.tail = append(s.tail, l)
	if len(s.tail) > 5 {
		s.tail = s.tail[1:]
	}
}

func (s *serverProc) warnings() (int64, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.warns, s.firstWarn
}

func (s *serverProc) logTail() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.tail) == 0 {
		return "no log"
	}
	return strings.Join(s.tail, " | ")
}

// stop sends SIGTERM, and SIGKILL when the server has not stopped within
// 15 s (it gives requests in flight 10 s).
func (s *serverProc) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
		return
	case <-time.After(15 * time.Second):
	}
	_ = s.cmd.Process.Kill()
	<-s.done
}

// procStatusBytes reads a "kB" field of /proc/PID/status, in bytes.
func procStatusBytes(pid int, field string) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(l, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/%d/status %s: %w", pid, field, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no %s", pid, field)
}

// procCPU returns the user and system CPU time process pid has used so
// far, from /proc/PID/stat; 0 when it cannot be read.
func procCPU(pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name may hold spaces; the fields after it do not.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	// utime and stime are fields 14 and 15 of stat, 12 and 13 here.
	if len(f) < 13 {
		return 0
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	// Clock ticks are 100 a second on every Linux Go supports.
	return time.Duration(ut+st) * (time.Second / 100)
}

// fleet is the agents running in this process.
type fleet struct {
	ids     []string
	agents  []*agent.Agent
	clients []*client.Client
	log     *countingHandler
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	// runErrs counts agents whose Run returned an error.
	runErrs  atomic.Int64
	firstRun atomic.Pointer[string]
}

// startAgents creates one agent per device, each with its own folder and
// its own client, and runs them. Facts are fixed (linux, amd64), so no
// detection runs 5,000 times.
// Each tune, if given, may change an agent's config and wrap its server.
func startAgents(ctx context.Context, dir, pkiDir, addr string, ids []string, tune ...func(*agent.Config, agent.Server) agent.Server) (*fleet, error) {
	return startAgentsOn(ctx, dir, pkiDir, []string{addr}, ids, tune...)
}

// startAgentsOn is startAgents with the agents spread over the servers
// at addrs in turn.
func startAgentsOn(ctx context.Context, dir, pkiDir string, addrs []string, ids []string, tune ...func(*agent.Config, agent.Server) agent.Server) (*fleet, error) {
	return startAgentsFrom(ctx, dir, pkiDir, addrs, nil, ids, tune...)
}

// startAgentsFrom is startAgentsOn with the agents dialling from local
// (nil: any address).
func startAgentsFrom(ctx context.Context, dir, pkiDir string, addrs []string, local net.Addr, ids []string, tune ...func(*agent.Config, agent.Server) agent.Server) (*fleet, error) {
	actx, cancel := context.WithCancel(ctx)
	fl := &fleet{ids: ids, log: &countingHandler{}, cancel: cancel}
	logger := slog.New(fl.log)
	for i, id := range ids {
		c, err := newClientWith(pkiDir, id, client.Config{Addr: addrs[i%len(addrs)], LocalAddr: local})
		if err != nil {
			return fl, err
		}
		fl.clients = append(fl.clients, c)
		home := filepath.Join(dir, "agents", id)
		acfg := agent.Config{
			Home:           home,
			Device:         id,
			SoftwareRoot:   filepath.Join(home, "software"),
			RuntimeRoot:    filepath.Join(home, "runtime"),
			Root:           filepath.Join(home, "root"),
			Facts:          facts.Facts{facts.KeyOS: "linux", facts.KeyArch: "amd64"},
			ReportInterval: 60 * time.Second,
			Logger:         logger,
		}
		var srv agent.Server = c
		for _, t := range tune {
			srv = t(&acfg, srv)
		}
		a, err := agent.New(acfg, srv)
		if err != nil {
			return fl, fmt.Errorf("agent %s: %w", id, err)
		}
		fl.agents = append(fl.agents, a)
	}
	for _, a := range fl.agents {
		fl.wg.Add(1)
		go func() {
			defer fl.wg.Done()
			if err := a.Run(actx); err != nil {
				fl.runErrs.Add(1)
				msg := err.Error()
				fl.firstRun.CompareAndSwap(nil, &msg)
			}
		}()
	}
	return fl, nil
}

// stop cancels every agent and waits (at most 20 s) for them to return.
func (fl *fleet) stop() {
	fl.cancel()
	done := make(chan struct{})
	go func() {
		fl.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
	}
	for _, c := range fl.clients {
		c.Close()
	}
}

// explain adds to err what the agents saw, and says so plainly when that
// was a resource limit (open files, memory, threads).
func (fl *fleet) explain(err error) error {
	msg := err.Error()
	n, first := fl.log.summary()
	if n > 0 {
		msg += fmt.Sprintf("; %d agent warnings, first: %s", n, first)
	}
	if p := fl.firstRun.Load(); p != nil {
		msg += fmt.Sprintf("; %d agents stopped: %s", fl.runErrs.Load(), *p)
	}
	return resourceLimit(msg, len(fl.ids))
}

// watchApplied sends, on the channel it returns, when each agent had
// applied a state other than the one it has now, once all have: read from
// the agents themselves every 10 ms, so it does not depend on how fast the
// server lists devices.
func (fl *fleet) watchApplied(ctx context.Context) (<-chan []time.Time, error) {
	before := make([]string, len(fl.agents))
	for i, a := range fl.agents {
		before[i], _ = a.Status()
	}
	ch := make(chan []time.Time, 1)
	go func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		at := make([]time.Time, len(fl.agents))
		left := len(fl.agents)
		for {
			now := time.Now()
			for i, a := range fl.agents {
				if !at[i].IsZero() {
					continue
				}
				if applied, _ := a.Status(); applied != before[i] {
					at[i] = now
					left--
				}
			}
			if left == 0 {
				ch <- at
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return ch, nil
}

// percentile returns the p-th percentile of ds (nearest rank).
func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[min(max(i-1, 0), len(s)-1)]
}

// waitRegistered waits until the server lists every device of ids and
// every agent of set has finished its first convergence (the "unset"
// state), so the agents are waiting on their long-polls when the clock
// starts.
func waitRegistered(ctx context.Context, admin *client.Client, ids []string, set agentSet) error {
	want := make(map[string]bool, len(ids))
	for _, id := range ids {
		want[id] = true
	}
	for {
		start := time.Now()
		devs, err := listDevices(ctx, admin)
		if err != nil {
			return fmt.Errorf("list devices: %w", err)
		}
		took := time.Since(start)
		seen := 0
		for _, d := range devs {
			if want[d.ID] {
				seen++
			}
		}
		ready := set.readyCount()
		if seen == len(want) && ready == len(ids) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d of %d devices listed, %d agents ready: %w", seen, len(want), ready, ctx.Err())
		case <-time.After(max(250*time.Millisecond, listPause(took))):
		}
	}
}

// listPause is how long the watcher waits between two device lists, the
// last of which took took: 100 ms, or four times as long as the list took
// (2 s at most), so the watcher's own calls stay a small part of the
// server's work, the fleet, not the watcher, is measured, and the end is
// still seen within about a list's time.
func listPause(took time.Duration) time.Duration {
	return min(max(100*time.Millisecond, 4*took), 2*time.Second)
}

// setStatesBulk declares the fleet package as every device's desired
// state in one call (drover state set -f with one document per device).
func setStatesBulk(ctx context.Context, admin *client.Client, ids []string) ([]time.Time, []time.Duration, error) {
	sts := make([]api.DesiredState, len(ids))
	for i, id := range ids {
		sts[i] = api.DesiredState{ID: id, Apps: []api.DesiredApp{{Name: fleetPackage, Version: fleetVersion, Tags: []string{}}}}
	}
	start := time.Now()
	if _, err := admin.SetStates(ctx, sts); err != nil {
		return nil, nil, fmt.Errorf("set states: %w", err)
	}
	done := time.Now()
	at := make([]time.Time, len(ids))
	took := make([]time.Duration, len(ids))
	for i := range ids {
		at[i], took[i] = done, done.Sub(start)
	}
	return at, took, nil
}

// setStates declares the fleet package as every device's desired state,
// workers calls at a time. It returns when each call was answered and how
// long each took.
func setStates(ctx context.Context, admin *client.Client, ids []string, workers int) ([]time.Time, []time.Duration, error) {
	done := make([]time.Time, len(ids))
	took := make([]time.Duration, len(ids))
	err := parallel(ctx, workers, len(ids), func(i int) error {
		start := time.Now()
		_, err := admin.SetState(ctx, api.DesiredState{ID: ids[i], Apps: []api.DesiredApp{
			{Name: fleetPackage, Version: fleetVersion, Tags: []string{}},
		}})
		if err != nil {
			return fmt.Errorf("set state of %s: %w", ids[i], err)
		}
		done[i] = time.Now()
		took[i] = done[i].Sub(start)
		return nil
	})
	return done, took, err
}

// waitConverged lists the devices (pausing listPause between lists) until
// every one of n devices is converged with the fleet package installed,
// and returns when the list that showed it arrived, with the slowest list
// call.
func waitConverged(ctx context.Context, admin *client.Client, n int) (time.Time, time.Duration, error) {
	var slowest time.Duration
	for {
		start := time.Now()
		devs, err := listDevices(ctx, admin)
		now := time.Now()
		slowest = max(slowest, now.Sub(start))
		if err != nil {
			return now, slowest, fmt.Errorf("list devices: %w", err)
		}
		done := 0
		var lastErr string
		for _, d := range devs {
			if d.Converged && hasFleetPackage(d.Installed) {
				done++
			} else if d.Error != "" {
				lastErr = d.ID + ": " + d.Error
			}
		}
		if done >= n {
			return now, slowest, nil
		}
		select {
		case <-ctx.Done():
			msg := fmt.Sprintf("%d of %d devices converged", done, n)
			if lastErr != "" {
				msg += " (device error " + lastErr + ")"
			}
			return now, slowest, fmt.Errorf("%s: %w", msg, ctx.Err())
		case <-time.After(listPause(now.Sub(start))):
		}
	}
}

func hasFleetPackage(apps []api.InstalledApp) bool {
	for _, a := range apps {
		if a.Name == fleetPackage && a.Version == fleetVersion {
			return true
		}
	}
	return false
}

// countingHandler is the agents' logger: it drops every record but counts
// warnings and errors and keeps the first, so a failing fleet can say why.
type countingHandler struct {
	n     atomic.Int64
	mu    sync.Mutex
	first string
}

func (h *countingHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	if h.n.Add(1) > 1 {
		return nil
	}
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	h.mu.Lock()
	h.first = b.String()
	h.mu.Unlock()
	return nil
}

// WithAttrs keeps the attributes (the agent adds device=ID) in a handler
// that shares the count.
func (h *countingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &sharedCount{root: h, attrs: attrs}
}

func (h *countingHandler) WithGroup(string) slog.Handler { return h }

func (h *countingHandler) summary() (int64, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n.Load(), h.first
}

// sharedCount is a countingHandler with attributes, counting into its
// root.
type sharedCount struct {
	root  *countingHandler
	attrs []slog.Attr
}

func (s *sharedCount) Enabled(ctx context.Context, l slog.Level) bool {
	return s.root.Enabled(ctx, l)
}

func (s *sharedCount) Handle(ctx context.Context, r slog.Record) error {
	// The logger's attributes first, as slog's own handlers print them.
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	out.AddAttrs(s.attrs...)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(a)
		return true
	})
	return s.root.Handle(ctx, out)
}

func (s *sharedCount) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &sharedCount{root: s.root, attrs: append(append([]slog.Attr{}, s.attrs...), attrs...)}
}

func (s *sharedCount) WithGroup(string) slog.Handler { return s }

// listDevices lists the devices, trying again for a while when the server
// is unreachable: a fleet connecting at once can overload a small machine
// for a moment, and the watcher's own call is not what is measured.
func listDevices(ctx context.Context, admin *client.Client) ([]api.Device, error) {
	for tries := 1; ; tries++ {
		devs, err := admin.Devices(ctx)
		if err == nil || !errors.Is(err, client.ErrUnreachable) || tries == 20 || ctx.Err() != nil {
			return devs, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}
