package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/drover-dev/drover/internal/agent"
	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/client"
	"github.com/drover-dev/drover/internal/facts"
	"github.com/drover-dev/drover/internal/pki"
)

// IdleConfig configures Idle.
type IdleConfig struct {
	// Sizes are the counts of connected agents at which the server's
	// memory is read, in increasing order; agents are added to reach
	// each one.
	Sizes []int
	// Drover is the drover binary run as the server; empty builds
	// ./cmd/drover.
	Drover string
	// Dir holds the work folder; empty means /dev/shm when it exists.
	Dir string
	// PerProcess is how many simulated agents one simulator process
	// holds; 0 = 5000. Each process dials from its own 127.0.0.x
	// address, so no address runs out of ephemeral ports.
	PerProcess int
	// HTTP1 makes the simulated agents speak only HTTP/1.1 (what an
	// agent that cannot negotiate HTTP/2 costs the server).
	HTTP1 bool
	// Self is the command line that runs this program's idle-agents
	// subcommand (a simulator process): Self[0] and the arguments before
	// the subcommand's own. Empty means os.Executable().
	Self []string
	// Heartbeat is each simulated agent's heartbeat period
	// (agent.Config.ReportInterval, 30 s by default): as an agent's, its
	// long-poll ends after the period less up to a tenth, and it then
	// reports over the poll's connection; 0 = 30s, negative = never (the
	// poll then waits a minute).
	Heartbeat time.Duration
	// Hold keeps the agents connected this long after the last size, to
	// look at the server (its pid is printed) with other tools.
	Hold time.Duration
	// Out receives the figures.
	Out io.Writer
}

// Idle measures what a connected, idle agent costs the server: one real
// `drover server` process on SQLite and, in separate simulator processes
// (so their memory is not the server's), light agents that each hold
// their own certificate and TLS connection, report once, read their
// desired state and then hold the long-poll, asking again each time it
// ends. At each size it prints the server's resident memory (VmRSS) and
// the slope in kB per agent since the size before.
func Idle(ctx context.Context, cfg IdleConfig) error {
	if len(cfg.Sizes) == 0 {
		return usagef("no agent count given")
	}
	for i := 1; i < len(cfg.Sizes); i++ {
		if cfg.Sizes[i] <= cfg.Sizes[i-1] {
			return usagef("agent counts must increase: %d after %d", cfg.Sizes[i], cfg.Sizes[i-1])
		}
	}
	if cfg.PerProcess <= 0 {
		cfg.PerProcess = 5000
	}
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = 30 * time.Second
	}
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	cfg.Dir = workDir(cfg.Dir)
	if len(cfg.Self) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find this program to run simulators: %w", err)
		}
		cfg.Self = []string{exe}
	}
	out := cfg.Out
	maxN := cfg.Sizes[len(cfg.Sizes)-1]
	soft, hard, err := RaiseOpenFiles()
	if err != nil {
		return err
	}
	// The server holds one socket per agent (its heartbeat goes over
	// its poll's connection) plus its own files; it raises its soft limit
	// to the hard one as every Go program does, and inherits the hard
	// one from here.
	need := uint64(maxN) + 64
	if hard < need {
		return fmt.Errorf("resource limit: %d agents need about %d open files in the server; the hard limit is %d (raise it with ulimit -Hn, which needs CAP_SYS_RESOURCE)",
			maxN, need, hard)
	}
	proto := "as agents do (the long-poll over HTTP/1.1, other calls over HTTP/2)"
	if cfg.HTTP1 {
		proto = "HTTP/1.1 only"
	}
	beat := "none"
	if cfg.Heartbeat > 0 {
		beat = "every " + cfg.Heartbeat.String()
	}
	fmt.Fprintf(out, "idle: open-file limit %d (hard %d); %d agents per simulator process; agents talk %s; heartbeat (a report after each poll) %s\n",
		soft, hard, cfg.PerProcess, proto, beat)

	bin, done, err := droverBinary(ctx, cfg.Drover)
	if err != nil {
		return err
	}
	defer done()
	dir, err := os.MkdirTemp(cfg.Dir, "drover-bench-idle-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	pkiDir := filepath.Join(dir, "pki")
	start := time.Now()
	if _, err := issueFleet(ctx, pkiDir, maxN); err != nil {
		return err
	}
	fmt.Fprintf(out, "idle: issued %d device certificates in %s\n", maxN, secs(time.Since(start)))
	srv, err := startServer(ctx, bin, dir, pkiDir)
	if err != nil {
		return err
	}
	defer srv.stop()
	pid := srv.cmd.Process.Pid
	fmt.Fprintf(out, "idle: server pid %d at %s\n", pid, srv.addr)

	var sims []*simProc
	defer func() {
		for _, s := range sims {
			s.stop()
		}
	}()
	// Past the agents' idle-connection timeout (internal/client), so
	// connections of finished requests have closed; with agents, past a
	// heartbeat period too, so the figure holds what heartbeats leave.
	wait := 8 * time.Second
	prevN, prevRSS := 0, settleRSS(ctx, pid, wait)
	wait = max(wait, cfg.Heartbeat+4*time.Second)
	fmt.Fprintf(out, "N=0 server-rss=%.1fMiB\n", inMiB(prevRSS))
	var firstRSS int64
	have := 0
	for _, n := range cfg.Sizes {
		cpu0, t0 := procCPU(pid), time.Now()
		var started []*simProc
		for have < n {
			to := min(n, have+cfg.PerProcess)
			// 127.0.0.1 is the server's; simulators dial from .2 on.
			local := fmt.Sprintf("127.0.0.%d", 2+len(sims))
			s, err := startSim(ctx, cfg.Self, srv.addr, pkiDir, have, to, local, cfg.HTTP1, cfg.Heartbeat)
			if err != nil {
				return err
			}
			sims = append(sims, s)
			started = append(started, s)
			have = to
		}
		for _, s := range started {
			if err := s.waitReady(ctx); err != nil {
				return fmt.Errorf("with %d agents: %w (server: %s)", n, err, srv.logTail())
			}
		}
		connect, connectCPU := time.Since(t0), procCPU(pid)-cpu0
		rss := settleRSS(ctx, pid, wait)
		fds := 0
		if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
			fds = len(ents)
		}
		var simRSS int64
		for _, s := range sims {
			r, _ := procStatusBytes(s.cmd.Process.Pid, "VmRSS")
			simRSS += r
		}
		fmt.Fprintf(out, "N=%d server-rss=%.1fMiB slope=%.1fkB/agent (since N=%d) server-fds=%d connect=%s server-cpu-to-connect=%s (%.2fms/agent) simulators-rss=%.0fMiB\n",
			n, inMiB(rss), kbPer(rss-prevRSS, n-prevN), prevN, fds, secs(connect), secs(connectCPU),
			float64(connectCPU.Microseconds())/1000/float64(n-prevN), inMiB(simRSS))
		if n == cfg.Sizes[0] {
			firstRSS = rss
		}
		prevN, prevRSS = n, rss
	}
	if first := cfg.Sizes[0]; len(cfg.Sizes) > 1 {
		fmt.Fprintf(out, "idle: slope %.1fkB/agent from N=%d to N=%d\n", kbPer(prevRSS-firstRSS, maxN-first), first, maxN)
	}
	if cfg.Hold > 0 {
		fmt.Fprintf(out, "idle: holding %d agents for %s\n", maxN, cfg.Hold)
		select {
		case <-ctx.Done():
		case <-time.After(cfg.Hold):
		}
	}
	warns, first := srv.warnings()
	if warns > 0 {
		fmt.Fprintf(out, "idle: %d server warnings, first: %s\n", warns, first)
	}
	return nil
}

func inMiB(b int64) float64 { return float64(b) / (1 << 20) }

// kbPer is bytes per agent in kB (1024 bytes).
func kbPer(b int64, n int) float64 {
	if n == 0 {
		return 0
	}
	return float64(b) / 1024 / float64(n)
}

// settleRSS waits for wait, then until the process's resident memory
// holds still (under 0.5% of change over two seconds, at most 30 s), and
// returns it. Nothing forces a collection: the figure is what the process
// holds.
func settleRSS(ctx context.Context, pid int, wait time.Duration) int64 {
	select {
	case <-ctx.Done():
	case <-time.After(wait):
	}
	prev, _ := procStatusBytes(pid, "VmRSS")
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return prev
		case <-time.After(2 * time.Second):
		}
		cur, _ := procStatusBytes(pid, "VmRSS")
		d := cur - prev
		prev = cur
		if d < 0 {
			d = -d
		}
		if d*200 < cur {
			return cur
		}
	}
	return prev
}

// simProc is one simulator process (IdleAgents).
type simProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	done  chan struct{}
	tail  atomic.Pointer[string]
}

func startSim(ctx context.Context, self []string, addr, pkiDir string, from, to int, local string, http1 bool, heartbeat time.Duration) (*simProc, error) {
	args := append(append([]string{}, self[1:]...), "idle-agents", "-addr", addr, "-pki", pkiDir,
		"-from", strconv.Itoa(from), "-to", strconv.Itoa(to), "-local", local, "-heartbeat", heartbeat.String())
	cmd := exec.Command(self[0], args...)
	cmd.Env = os.Environ()
	if http1 {
		cmd.Env = append(cmd.Env, "GODEBUG=http2client=0")
	}
	stdin, stdout, err := startChild("simulator", cmd)
	if err != nil {
		return nil, err
	}
	s := &simProc{cmd: cmd, stdin: stdin, lines: make(chan string, 16), done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			l := sc.Text()
			s.tail.Store(&l)
			select {
			case s.lines <- l:
			default:
			}
		}
		_ = cmd.Wait()
		close(s.done)
	}()
	return s, nil
}

// waitReady waits for the simulator's "ready" line: every agent it holds
// has reported, read its state and sent its long-poll.
func (s *simProc) waitReady(ctx context.Context) error {
	for {
		select {
		case l := <-s.lines:
			if strings.HasPrefix(l, "ready") {
				return nil
			}
			if strings.HasPrefix(l, "failed") {
				return fmt.Errorf("simulator: %s", l)
			}
		case <-s.done:
			last := "no output"
			if p := s.tail.Load(); p != nil {
				last = *p
			}
			return fmt.Errorf("simulator exited: %s", last)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// stop closes the simulator's stdin (it then ends its agents and exits)
// and kills it after 10 s.
func (s *simProc) stop() {
	_ = s.stdin.Close()
	select {
	case <-s.done:
		return
	case <-time.After(10 * time.Second):
	}
	_ = s.cmd.Process.Kill()
	<-s.done
}

// IdleAgentsConfig configures IdleAgents, one simulator process.
type IdleAgentsConfig struct {
	// Addr is the server's URL; PKI the folder with the device
	// certificates (dev-00000.crt ...).
	Addr, PKI string
	// From and To are the device numbers held: dev-From ... dev-(To-1).
	From, To int
	// Local is the address to dial from ("127.0.0.2").
	Local string
	// Workers bounds agents connecting at once; 0 = 32.
	Workers int
	// Heartbeat is each agent's heartbeat period (IdleConfig.Heartbeat);
	// 0 or negative = none.
	Heartbeat time.Duration
	// In ends the simulator when it is closed; Out gets "ready" once
	// every agent waits on its long-poll.
	In  io.Reader
	Out io.Writer
}

// IdleAgents runs light agents until ctx ends or cfg.In is closed. Each has
// its own certificate and client.Client (so its connections and protocols
// are an agent's), and does what an idle agent does: a report, a read of
// its desired state, then long-polls, one after the other, each followed
// by its heartbeat report.
func IdleAgents(ctx context.Context, cfg IdleAgentsConfig) error {
	if cfg.To <= cfg.From || cfg.From < 0 {
		return usagef("idle-agents: want 0 <= -from < -to")
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 32
	}
	var local net.Addr
	if cfg.Local != "" {
		ip := net.ParseIP(cfg.Local)
		if ip == nil {
			return usagef("idle-agents: -local %q is not an IP address", cfg.Local)
		}
		local = &net.TCPAddr{IP: ip}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if cfg.In != nil {
		go func() {
			_, _ = io.Copy(io.Discard, cfg.In)
			cancel()
		}()
	}
	ca := filepath.Join(cfg.PKI, pki.CACertFile)
	var (
		wg       sync.WaitGroup
		ready    sync.WaitGroup
		failures atomic.Int64
		firstErr atomic.Pointer[string]
	)
	sem := make(chan struct{}, cfg.Workers)
	fail := func(err error) {
		failures.Add(1)
		msg := err.Error()
		firstErr.CompareAndSwap(nil, &msg)
	}
	for i := cfg.From; i < cfg.To; i++ {
		id := fmt.Sprintf("dev-%05d", i)
		wg.Add(1)
		ready.Add(1)
		go func() {
			defer wg.Done()
			var once sync.Once
			markReady := func() { once.Do(ready.Done) }
			defer markReady()
			tlsCfg, err := pki.ClientTLSConfig(filepath.Join(cfg.PKI, id+".crt"), filepath.Join(cfg.PKI, id+".key"), ca)
			if err != nil {
				fail(err)
				return
			}
			c, err := client.New(client.Config{Addr: cfg.Addr, TLS: tlsCfg, LocalAddr: local})
			if err != nil {
				fail(err)
				return
			}
			defer c.Close()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			after, err := idleStart(ctx, c, id)
			<-sem
			if err != nil {
				fail(fmt.Errorf("%s: %w", id, err))
				return
			}
			for ctx.Err() == nil {
				res, err := idlePoll(ctx, c, id, after, cfg.Heartbeat, markReady)
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					fail(fmt.Errorf("%s: long-poll: %w", id, err))
					select {
					case <-ctx.Done():
					case <-time.After(time.Second):
					}
					continue
				}
				if res == after && cfg.Heartbeat > 0 {
					// The poll ended with no change: the heartbeat, as
					// an agent's, over the poll's connection.
					if err := idleReport(ctx, c, id); err != nil && ctx.Err() == nil {
						fail(fmt.Errorf("%s: heartbeat: %w", id, err))
					}
				}
				after = res
			}
		}()
	}
	readyc := make(chan struct{})
	go func() { ready.Wait(); close(readyc) }()
	select {
	case <-readyc:
	case <-ctx.Done():
	}
	if n := failures.Load(); n > 0 {
		fmt.Fprintf(cfg.Out, "failed %d of %d agents, first: %s\n", n, cfg.To-cfg.From, *firstErr.Load())
	} else {
		fmt.Fprintf(cfg.Out, "ready %d\n", cfg.To-cfg.From)
	}
	wg.Wait()
	if ctx.Err() != nil && !errors.Is(ctx.Err(), context.Canceled) {
		return ctx.Err()
	}
	return nil
}

// idleStart is an agent's start: a report, then its desired state.
func idleStart(ctx context.Context, c *client.Client, id string) (string, error) {
	if err := idleReport(ctx, c, id); err != nil {
		return "", err
	}
	res, err := c.Desired(ctx, id, "", 0)
	if err != nil {
		return "", fmt.Errorf("desired: %w", err)
	}
	return res.Digest, nil
}

// idleReport sends an idle agent's report.
func idleReport(ctx context.Context, c *client.Client, id string) error {
	rep := api.Report{
		Facts:        map[string]string{facts.KeyOS: "linux", facts.KeyArch: "amd64"},
		Tags:         []string{"linux", "amd64"},
		Installed:    []api.InstalledApp{},
		AgentVersion: "bench",
	}
	if _, err := c.Report(ctx, id, rep); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	return nil
}

// idlePoll sends one long-poll, bounded as an agent's by its heartbeat
// period less up to a tenth (a minute without heartbeats), and calls sent
// shortly after it left (the answer comes only when the poll times out).
func idlePoll(ctx context.Context, c *client.Client, id, after string, heartbeat time.Duration, sent func()) (string, error) {
	t := time.AfterFunc(100*time.Millisecond, sent)
	defer t.Stop()
	wait := time.Minute
	if heartbeat > 0 {
		wait = agent.PollWait(heartbeat)
	}
	res, err := c.Desired(ctx, id, after, wait)
	if err != nil {
		return "", err
	}
	return res.Digest, nil
}
