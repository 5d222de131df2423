package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/drover-dev/drover/internal/agent"
	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/client"
	"github.com/drover-dev/drover/internal/pkgfile"
	"github.com/drover-dev/drover/internal/push"
)

// RolloutConfig sets up the rollout benchmark.
type RolloutConfig struct {
	N      int           // agents, in this process
	Waves  []string      // default 1,10%,50%,100%
	Soak   time.Duration // default 10s
	Drover string        // drover binary; "" builds ./cmd/drover
	Dir    string        // parent of the work folder; "" = /dev/shm or the temp folder
	// HealthInterval is how often each agent runs its service's health
	// command (the bad build's); default 2s.
	HealthInterval time.Duration
	// MaxFailures of the good rollout (the bad one allows none); default "0".
	MaxFailures string
	Timeout     time.Duration // bound of the whole run; default 10m
	Out         io.Writer
}

const rolloutApp = "com.example.bench:svc"

// Rollout runs N in-process agents whose package has a service (the bad
// build's with a health command that fails). A good rollout goes through every wave to done: the
// time each wave takes beyond its soak, and the server's CPU. Then a bad
// build (its health command fails) is rolled out: the devices that ever
// ran it, and the seconds from its first unhealthy report to the pause.
func Rollout(ctx context.Context, cfg RolloutConfig) (err error) {
	if cfg.N < 2 {
		return usagef("rollout: -n must be at least 2")
	}
	if len(cfg.Waves) == 0 {
		cfg.Waves = []string{"1", "10%", "50%", "100%"}
	}
	if cfg.Soak <= 0 {
		cfg.Soak = 10 * time.Second
	}
	if cfg.HealthInterval <= 0 {
		cfg.HealthInterval = 2 * time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Minute
	}
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	cfg.Dir = workDir(cfg.Dir)
	out := cfg.Out
	if soft, _, err := RaiseOpenFiles(); err != nil {
		return err
	} else if soft < uint64(cfg.N)+512 {
		return fmt.Errorf("RESOURCE LIMIT: %d agents need about %d open files; the limit is %d", cfg.N, cfg.N+512, soft)
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	dir, err := os.MkdirTemp(cfg.Dir, "drover-bench-rollout-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := cfg.Drover
	if bin == "" {
		if bin, err = buildDrover(ctx, dir); err != nil {
			return err
		}
	}
	pkiDir := filepath.Join(dir, "pki")
	ids, err := issueFleet(ctx, pkiDir, cfg.N)
	if err != nil {
		return err
	}
	srv, err := startServer(ctx, bin, dir, pkiDir)
	if err != nil {
		return err
	}
	defer srv.stop()
	admin, err := newClient(srv.addr, pkiDir, "bench-admin")
	if err != nil {
		return err
	}
	defer admin.Close()
	for _, v := range []struct {
		version string
		bad     bool
	}{{"1.0.0", false}, {"1.1.0", false}, {"1.2.0", true}} {
		p, err := writeServicePackage(dir, v.version, v.bad)
		if err != nil {
			return err
		}
		if _, err := push.File(ctx, admin, p, nil); err != nil {
			return err
		}
	}
	tap := &reportTap{bad: "1.2.0", ran: map[string]bool{}}
	// Services outlive their agents: stop them all at the end.
	defer killServices(filepath.Join(dir, "agents"))
	fl, err := startAgents(ctx, dir, pkiDir, srv.addr, ids, func(c *agent.Config, s agent.Server) agent.Server {
		c.Node.HealthInterval = cfg.HealthInterval
		return &tappedServer{Server: s, id: c.Device, tap: tap}
	})
	defer fl.stop()
	if err != nil {
		return fl.explain(err)
	}
	if err := waitRegistered(ctx, admin, ids, fl); err != nil {
		return fl.explain(err)
	}
	docs := func(version string) []api.Document {
		out := make([]api.Document, len(ids))
		for i, id := range ids {
			out[i] = api.Document{Kind: api.DocDevice, ID: id, Apps: []api.DesiredApp{{Name: rolloutApp, Version: version, Tags: []string{}}}}
		}
		return out
	}
	sts := make([]api.DesiredState, len(ids))
	for i, d := range docs("1.0.0") {
		sts[i] = api.DesiredState{ID: d.ID, Apps: d.Apps}
	}
	if _, err := admin.SetStates(ctx, sts); err != nil {
		return err
	}
	if err := waitAgentsAt(ctx, fl, "1.0.0"); err != nil {
		return fl.explain(err)
	}
	fmt.Fprintf(out, "rollout: %d agents in-process at %s, waves %s, soak %v, the bad build's health command every %v (2-core shared VM)\n",
		cfg.N, rolloutApp+" 1.0.0", strings.Join(cfg.Waves, ","), cfg.Soak, cfg.HealthInterval)

	// A good rollout, to done.
	tap.watch("1.1.0")
	cpu0 := procCPU(srv.cmd.Process.Pid)
	spec := api.RolloutSpec{Name: "good", Documents: docs("1.1.0"), Waves: cfg.Waves, Soak: api.Duration(cfg.Soak),
		WaveTimeout: api.Duration(5 * time.Minute), MaxFailures: cfg.MaxFailures}
	r, err := runRollout(ctx, admin, spec, func(r api.Rollout) bool { return r.Phase != api.RolloutRunning })
	if err != nil {
		return fl.explain(err)
	}
	cpu := procCPU(srv.cmd.Process.Pid) - cpu0
	fmt.Fprintf(out, "good rollout: %s in %s (%d waves, soaks %s, max failures %s); server CPU %s\n", r.Phase, secs(r.Updated.Sub(r.Created)),
		len(r.Stages), secs(time.Duration(len(r.Stages))*cfg.Soak), r.MaxFailures, secs(cpu))
	printWaves(out, r, tap, cfg.Soak)
	if r.Phase != api.RolloutDone {
		return fmt.Errorf("good rollout ended %s: %s", r.Phase, r.Reason)
	}

	// A bad build, caught in the first wave.
	spec = api.RolloutSpec{Name: "bad", Documents: docs("1.2.0"), Waves: cfg.Waves, Soak: api.Duration(cfg.Soak),
		WaveTimeout: api.Duration(5 * time.Minute)}
	r, err = runRollout(ctx, admin, spec, func(r api.Rollout) bool { return r.Phase != api.RolloutRunning })
	if err != nil {
		return fl.explain(err)
	}
	first := tap.firstUnhealthy()
	// Let anything that would still go wrong show.
	time.Sleep(3 * time.Second)
	ran := tap.devices()
	fmt.Fprintf(out, "bad rollout: %s at wave %d/%d: %s\n", r.Phase, r.Wave+1, len(r.Stages), r.Reason)
	fmt.Fprintf(out, "    devices that ever ran 1.2.0: %d (first wave: %d) %v\n", len(ran), r.Stages[0].Size, ran)
	if !first.IsZero() {
		fmt.Fprintf(out, "    first unhealthy report to the pause: %s\n", ms(r.Updated.Sub(first)))
	}
	if _, err := admin.AbortRollout(ctx, "bad", true); err != nil {
		return err
	}
	if err := waitAgentsAt(ctx, fl, "1.1.0"); err != nil {
		return fl.explain(err)
	}
	fmt.Fprintln(out, "    abort --revert: every device back on 1.1.0")
	return nil
}

// printWaves prints, per wave, the time beyond its soak and how it splits
// between the devices (converge, first health verdict, report) and the
// server (gate, wave start, soak start).
func printWaves(out io.Writer, r api.Rollout, tap *reportTap, soak time.Duration) {
	prev := r.Created
	for i, st := range r.Stages {
		if st.Passed.IsZero() {
			fmt.Fprintf(out, "    wave %d/%d (%s, %d devices): %d failed, not passed\n", i+1, len(r.Stages), r.Waves[i], st.Size, st.Failures)
			break
		}
		var last time.Time
		for _, id := range st.Devices {
			if h := tap.healthy(id); h.After(last) {
				last = h
			}
		}
		server := st.Started.Sub(prev)
		if !last.IsZero() {
			server += max(st.Soaking.Sub(last), 0)
		}
		fmt.Fprintf(out, "    wave %d/%d (%s, %d devices, %d failed): beyond the soak %s: devices converged and reported healthy %s after the wave began; the server's own part %s\n",
			i+1, len(r.Stages), r.Waves[i], st.Size, st.Failures, secs(st.Passed.Sub(prev)-soak), secs(max(last.Sub(st.Started), 0)), ms(server))
		prev = st.Passed
	}
}

// runRollout starts spec and polls it until end says so.
func runRollout(ctx context.Context, admin *client.Client, spec api.RolloutSpec, end func(api.Rollout) bool) (api.Rollout, error) {
	if _, err := admin.StartRollout(ctx, spec); err != nil {
		return api.Rollout{}, err
	}
	for {
		r, err := admin.Rollout(ctx, spec.Name)
		if err != nil {
			return r, err
		}
		if end(r) {
			return r, nil
		}
		select {
		case <-ctx.Done():
			return r, fmt.Errorf("rollout %s at wave %d/%d: %w", spec.Name, r.Wave+1, len(r.Stages), ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// waitAgentsAt waits until every agent has the version installed and no
// error.
func waitAgentsAt(ctx context.Context, fl *fleet, version string) error {
	for {
		left := 0
		for _, a := range fl.agents {
			_, lastErr := a.Status()
			at := slices.ContainsFunc(a.Installed(), func(in api.InstalledApp) bool { return in.Name == rolloutApp && in.Version == version })
			if !at || lastErr != "" {
				left++
			}
		}
		if left == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d agents not at %s: %w", left, version, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// reportTap records, from the agents' reports as they are sent, which
// devices ever had the bad version installed and when the first report
// of an unhealthy service was sent.
type reportTap struct {
	bad   string
	mu    sync.Mutex
	ran   map[string]bool
	first time.Time
	// When each device first reported it converged with target's
	// service healthy.
	target    string
	healthyAt map[string]time.Time
}

// watch starts recording when each device first reports it converged
// with version's service healthy.
func (t *reportTap) watch(version string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.target, t.healthyAt = version, map[string]time.Time{}
}

func (t *reportTap) healthy(id string) time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.healthyAt[id]
}

// saw records a report the server took, which answered that the device's
// desired state is desired.
func (t *reportTap) saw(id string, r api.Report, desired string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.healthyAt[id]; !ok && t.healthyAt != nil && r.Applied == desired {
		// Converged (what the server waits for: the agent reports a
		// service running as soon as it starts, while its step still
		// waits to see it stay up), running at the target version and
		// not unhealthy: the good builds have no health command, so
		// they are healthy running.
		for _, s := range r.Services {
			if s.Version == t.target && s.State == api.ServiceRunning && s.Health != api.ServiceUnhealthy && r.Error == "" {
				t.healthyAt[id] = at
			}
		}
	}
	for _, in := range r.Installed {
		if in.Name == rolloutApp && in.Version == t.bad {
			t.ran[id] = true
		}
	}
	if t.first.IsZero() {
		for _, s := range r.Services {
			if s.Health == api.ServiceUnhealthy && s.Version == t.bad {
				t.first = at
			}
		}
	}
}

func (t *reportTap) devices() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	for id := range t.ran {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

func (t *reportTap) firstUnhealthy() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.first
}

// tappedServer is an agent's server whose reports the tap sees.
type tappedServer struct {
	agent.Server
	id  string
	tap *reportTap
}

func (s *tappedServer) Report(ctx context.Context, id string, r api.Report) (api.ReportResponse, error) {
	at := time.Now()
	resp, err := s.Server.Report(ctx, id, r)
	if err == nil {
		s.tap.saw(s.id, r, resp.Desired, at)
	}
	return resp, err
}

// writeServicePackage builds a package of one service that idles, and a
// health command that passes, or fails when bad.
func writeServicePackage(dir, version string, bad bool) (string, error) {
	src := filepath.Join(dir, "src-"+version)
	// Only the bad build has a health command: a service without one is
	// healthy while it runs, and 1,000 health commands every few seconds
	// would load the machine more than the rollout does.
	health, check := "#!/bin/sh\nexit 0\n", ""
	if bad {
		health, check = "#!/bin/sh\necho 'healthz: 500'\nexit 1\n", ", health: bin/health"
	}
	files := map[string]struct {
		data string
		mode os.FileMode
	}{
		pkgfile.SpecFile:   {fmt.Sprintf("group: com.example.bench\nname: svc\nversion: %s\nservices:\n  - {name: svc, start: bin/svc%s, restart: never}\n", version, check), 0o644},
		"files/bin/svc":    {"#!/bin/sh\nexec sleep 100000\n", 0o755},
		"files/bin/health": {health, 0o755},
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
	path := filepath.Join(dir, "svc-"+version+".drover")
	out, err := os.Create(path)
	if err != nil {
		return "", err
	}
	if _, _, _, err := pkgfile.Build(src, out); err != nil {
		out.Close()
		return "", fmt.Errorf("build service package: %w", err)
	}
	return path, out.Close()
}

// killServices kills the process group of every service under the
// agents' folders (each runtime/*/run/start.pid).
func killServices(agents string) {
	pids, _ := filepath.Glob(filepath.Join(agents, "*", "runtime", "*", "run", "start.pid"))
	for _, p := range pids {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		}
	}
}
