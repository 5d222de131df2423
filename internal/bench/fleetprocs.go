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
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// agentSet is a fleet's real agents, wherever they run: in this process
// (fleet) or spread over child processes (agentProcs), which a fleet
// larger than one process's open-file limit needs.
type agentSet interface {
	// readyCount is how many agents have finished their first
	// convergence, so they wait on their long-polls.
	readyCount() int
	// watchApplied notes the state each agent has applied now and sends,
	// once every agent has applied another, when each did, in device
	// order (10 ms resolution).
	watchApplied(ctx context.Context) (<-chan []time.Time, error)
	// summary is how many warnings and errors the agents logged, and the
	// first.
	summary() (int64, string)
	// pids are the processes the agents run in, for their CPU and memory.
	pids() []int
	// explain adds to err what the agents saw.
	explain(err error) error
	// stop ends every agent.
	stop()
}

// fdsPerAgent is what one real agent costs its process in open files at
// the moment of a convergence: its local socket, its long-poll connection
// and the HTTP/2 connection of its other calls.
const fdsPerAgent = 3

// agentsNeedFiles says plainly when n agents will not fit under this
// process's open-file limit.
func agentsNeedFiles(n int, where string) error {
	need := uint64(fdsPerAgent*n + 256)
	soft, _, err := RaiseOpenFiles()
	if err != nil {
		return err
	}
	if soft < need {
		return fmt.Errorf("RESOURCE LIMIT: %d agents %s need about %d open files; the limit is %d (spread them over more processes with -agent-procs, or raise ulimit -n)",
			n, where, need, soft)
	}
	return nil
}

// readyCount counts the agents whose first convergence is done.
func (fl *fleet) readyCount() int {
	ready := 0
	for _, a := range fl.agents {
		if applied, _ := a.Status(); applied != "" {
			ready++
		}
	}
	return ready
}

func (fl *fleet) summary() (int64, string) { return fl.log.summary() }

func (fl *fleet) pids() []int { return []int{os.Getpid()} }

// agentProcs is a fleet's agents spread over child processes, each
// running the fleet-agents subcommand (FleetAgents) for a contiguous range
// of devices and dialling from its own loopback address.
type agentProcs struct {
	procs []*agentProc
}

// agentProc is one child process of agentProcs. It speaks in lines: it
// writes "progress N" while its agents come up, "watching" and later
// "applied T..." after a "watch", and "summary ..." after a "summary";
// "failed ..." when it cannot run its agents. Closing its stdin ends it.
type agentProc struct {
	from, to int
	cmd      *exec.Cmd
	stdin    io.WriteCloser
	ready    atomic.Int64
	watching chan struct{}
	applied  chan string
	summ     chan string
	done     chan struct{}
	failed   atomic.Pointer[string]
	tail     atomic.Pointer[string]
}

// startAgentProcs starts procs child processes holding the agents of ids
// between them, the agents spread over addrs in turn as in this process.
func startAgentProcs(self []string, dir, pkiDir string, addrs, ids []string, procs int) (*agentProcs, error) {
	set := &agentProcs{}
	per := (len(ids) + procs - 1) / procs
	for from := 0; from < len(ids); from += per {
		to := min(len(ids), from+per)
		// 127.0.0.1 is the servers'; each process dials from its own
		// address, so none runs out of ephemeral ports.
		local := fmt.Sprintf("127.0.0.%d", 2+len(set.procs))
		args := append(append([]string{}, self[1:]...), "fleet-agents", "-addrs", strings.Join(addrs, ","), "-pki", pkiDir,
			"-dir", dir, "-from", strconv.Itoa(from), "-to", strconv.Itoa(to), "-local", local)
		p, err := startAgentProc(self[0], args, from, to)
		if err != nil {
			return set, err
		}
		set.procs = append(set.procs, p)
	}
	return set, nil
}

// startChild starts a child process of the benchmark that talks over its
// stdin and stdout (its stderr joins stdout) and dies with this process
// (Pdeathsig), so an interrupted benchmark leaves none behind.
func startChild(what string, cmd *exec.Cmd) (stdin io.WriteCloser, stdout io.ReadCloser, err error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if stdin, err = cmd.StdinPipe(); err != nil {
		return nil, nil, err
	}
	if stdout, err = cmd.StdoutPipe(); err != nil {
		return nil, nil, err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("start %s: %w", what, err)
	}
	return stdin, stdout, nil
}

func startAgentProc(bin string, args []string, from, to int) (*agentProc, error) {
	cmd := exec.Command(bin, args...)
	stdin, stdout, err := startChild("agent process", cmd)
	if err != nil {
		return nil, err
	}
	p := &agentProc{from: from, to: to, cmd: cmd, stdin: stdin, watching: make(chan struct{}, 1),
		applied: make(chan string, 1), summ: make(chan string, 1), done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stdout)
		// "applied" holds a time per agent.
		sc.Buffer(make([]byte, 64<<10), 64<<20)
		for sc.Scan() {
			p.line(sc.Text())
		}
		_ = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// line takes one line the process wrote.
func (p *agentProc) line(l string) {
	word, rest, _ := strings.Cut(l, " ")
	switch word {
	case "progress":
		if n, err := strconv.Atoi(rest); err == nil {
			p.ready.Store(int64(n))
		}
		return
	case "watching":
		p.watching <- struct{}{}
		return
	case "applied":
		p.applied <- rest
		return
	case "summary":
		select {
		case p.summ <- rest:
		default:
		}
		return
	case "failed":
		p.failed.CompareAndSwap(nil, &rest)
	}
	p.tail.Store(&l)
}

// gone says why the process is not answering.
func (p *agentProc) gone() error {
	if f := p.failed.Load(); f != nil {
		return fmt.Errorf("agent process %d-%d: %s", p.from, p.to-1, *f)
	}
	last := "no output"
	if t := p.tail.Load(); t != nil {
		last = *t
	}
	return fmt.Errorf("agent process %d-%d exited: %s", p.from, p.to-1, last)
}

func (s *agentProcs) readyCount() int {
	n := 0
	for _, p := range s.procs {
		n += int(p.ready.Load())
	}
	return n
}

func (s *agentProcs) watchApplied(ctx context.Context) (<-chan []time.Time, error) {
	for _, p := range s.procs {
		if _, err := io.WriteString(p.stdin, "watch\n"); err != nil {
			return nil, p.gone()
		}
	}
	// Every process has noted its agents' states before the caller sets
	// new ones.
	for _, p := range s.procs {
		select {
		case <-p.watching:
		case <-p.done:
			return nil, p.gone()
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	ch := make(chan []time.Time, 1)
	go func() {
		var all []time.Time
		for _, p := range s.procs {
			var line string
			select {
			case line = <-p.applied:
			case <-p.done:
				return
			case <-ctx.Done():
				return
			}
			for _, f := range strings.Fields(line) {
				ns, err := strconv.ParseInt(f, 10, 64)
				if err != nil {
					return
				}
				all = append(all, time.Unix(0, ns))
			}
		}
		ch <- all
	}()
	return ch, nil
}

// summary asks every process for its agents' warnings; a process that
// does not answer within 5 s counts none.
func (s *agentProcs) summary() (int64, string) {
	var total int64
	var first string
	for _, p := range s.procs {
		if _, err := io.WriteString(p.stdin, "summary\n"); err != nil {
			continue
		}
		var rest string
		select {
		case rest = <-p.summ:
		case <-p.done:
			continue
		case <-time.After(5 * time.Second):
			continue
		}
		count, msg, _ := strings.Cut(rest, " ")
		n, _ := strconv.ParseInt(count, 10, 64)
		total += n
		if first == "" && msg != "" {
			first = msg
		}
	}
	return total, first
}

func (s *agentProcs) pids() []int {
	var out []int
	for _, p := range s.procs {
		out = append(out, p.cmd.Process.Pid)
	}
	return out
}

func (s *agentProcs) explain(err error) error {
	msg := err.Error()
	for _, p := range s.procs {
		if f := p.failed.Load(); f != nil {
			msg += "; " + p.gone().Error()
			break
		}
	}
	if n, first := s.summary(); n > 0 {
		msg += fmt.Sprintf("; %d agent warnings, first: %s", n, first)
	}
	return resourceLimit(msg, s.readyCount())
}

// stop closes every process's stdin (it then stops its agents and exits)
// and kills those still running after 30 s.
func (s *agentProcs) stop() {
	for _, p := range s.procs {
		_ = p.stdin.Close()
	}
	deadline := time.After(30 * time.Second)
	for _, p := range s.procs {
		select {
		case <-p.done:
			continue
		case <-deadline:
		}
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// resourceLimit returns msg as an error, saying so plainly when it shows
// a resource limit (open files, memory, threads).
func resourceLimit(msg string, agents int) error {
	for _, sign := range []string{"too many open files", "cannot allocate memory", "resource temporarily unavailable", "no buffer space"} {
		if strings.Contains(strings.ToLower(msg), sign) {
			soft, _, _ := RaiseOpenFiles()
			return fmt.Errorf("RESOURCE LIMIT (%s; open-file limit %d, %d agents): %s", sign, soft, agents, msg)
		}
	}
	return errors.New(msg)
}

// FleetAgentsConfig configures FleetAgents, one agent process of a fleet.
type FleetAgentsConfig struct {
	// Addrs are the servers' URLs; device i talks to Addrs[i%len].
	Addrs []string
	// PKI is the folder of the device certificates; Dir the fleet's
	// folder (agents live under Dir/agents/ID).
	PKI, Dir string
	// From and To are the device numbers held: dev-From ... dev-(To-1).
	From, To int
	// Local is the address to dial from ("127.0.0.2"); empty lets the
	// system choose.
	Local string
	// In carries the parent's commands ("watch", "summary"); closing it
	// ends the process. Out gets the answers.
	In  io.Reader
	Out io.Writer
}

// FleetAgents runs the real agents of devices From..To-1 until cfg.In is
// closed, talking to the parent over In and Out (agentProc's lines).
func FleetAgents(ctx context.Context, cfg FleetAgentsConfig) error {
	if cfg.To <= cfg.From || cfg.From < 0 || len(cfg.Addrs) == 0 {
		return usagef("fleet-agents: want -addrs and 0 <= -from < -to")
	}
	var local net.Addr
	if cfg.Local != "" {
		ip := net.ParseIP(cfg.Local)
		if ip == nil {
			return usagef("fleet-agents: -local %q is not an IP address", cfg.Local)
		}
		local = &net.TCPAddr{IP: ip}
	}
	fail := func(err error) error {
		fmt.Fprintf(cfg.Out, "failed %s\n", oneLine(err.Error()))
		return err
	}
	if err := agentsNeedFiles(cfg.To-cfg.From, "in one process"); err != nil {
		return fail(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmds := make(chan string)
	go func() {
		defer cancel()
		sc := bufio.NewScanner(cfg.In)
		for sc.Scan() {
			select {
			case cmds <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
	}()
	ids := make([]string, 0, cfg.To-cfg.From)
	for i := cfg.From; i < cfg.To; i++ {
		ids = append(ids, fmt.Sprintf("dev-%05d", i))
	}
	// Device From is the first here: turn the list so it gets the server
	// it would get in a single process.
	k := cfg.From % len(cfg.Addrs)
	addrs := append(slices.Clone(cfg.Addrs[k:]), cfg.Addrs[:k]...)
	fl, err := startAgentsFrom(ctx, cfg.Dir, cfg.PKI, addrs, local, ids)
	defer fl.stop()
	if err != nil {
		return fail(fl.explain(err))
	}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	last := -1
	var applied <-chan []time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			if n := fl.readyCount(); n != last {
				fmt.Fprintf(cfg.Out, "progress %d\n", n)
				last = n
			}
		case at := <-applied:
			var b strings.Builder
			b.WriteString("applied")
			for _, t := range at {
				b.WriteByte(' ')
				b.WriteString(strconv.FormatInt(t.UnixNano(), 10))
			}
			fmt.Fprintln(cfg.Out, b.String())
			applied = nil
		case c := <-cmds:
			switch c {
			case "watch":
				applied, _ = fl.watchApplied(ctx)
				fmt.Fprintln(cfg.Out, "watching")
			case "summary":
				n, first := fl.log.summary()
				if p := fl.firstRun.Load(); p != nil {
					n += fl.runErrs.Load()
					if first == "" {
						first = "agent stopped: " + *p
					}
				}
				fmt.Fprintf(cfg.Out, "summary %d %s\n", n, oneLine(first))
			}
		}
	}
}

// oneLine keeps s on one line of the parent's protocol.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
