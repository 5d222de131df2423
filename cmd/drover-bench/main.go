// Command drover-bench prints drover's benchmark figures (see
// docs/benchmarks.md). It only wires flags to internal/bench:
//
//	drover-bench fleet [-n 100,1000,5000] [-drover PATH] [-dir DIR] [-timeout 120s] [-set-workers 16] [-bulk] [-db URL] [-replicas 1] [-agent-procs 0]
//	drover-bench install [-files 5000] [-size 200MB] [-dir DIR] [-runs 3] [-warm]
//	drover-bench trust [-builds 10000] [-pushes 50] [-dir DIR]
//	drover-bench plan [-n 10000] [-runs 3] [-dir DIR]
//	drover-bench rollout [-n 1000] [-waves 1,10%,50%,100%] [-soak 10s] [-health-interval 2s] [-max-failures 0]
//	drover-bench ui [-devices 10000] [-rate 1000] [-feed 20s] [-runs 5]
//	drover-bench transfer [-debs DIR] [-dir DIR] [-drover PATH] [-only NAME,...]
//	drover-bench idle [-n 1000,5000,14000] [-per-process 5000] [-http1] [-heartbeat 30s] [-hold 0s] [-drover PATH] [-dir DIR]
//	drover-bench converge-cpu [-n 1000] [-drover PATH] [-dir DIR] [-timeout 5m]
//
// idle-agents, fleet-agents and floor-server are the processes idle,
// fleet and converge-cpu start; they are not run by hand.
//
// Exit 0 on success, 1 on failure, 2 on bad usage; an error is one line
// on stderr.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/drover-dev/drover/internal/bench"
	"github.com/drover-dev/drover/internal/rollout"
)

const usage = `usage:
  drover-bench fleet [-n 100,1000,5000] [-drover PATH] [-dir DIR] [-timeout 120s] [-set-workers 16] [-bulk] [-db URL] [-replicas 1] [-agent-procs 0]
  drover-bench install [-files 5000] [-size 200MB] [-dir DIR] [-runs 3] [-warm]
  drover-bench events -amqp URL [-n 50000] [-probes 500]
  drover-bench trust [-builds 10000] [-pushes 50] [-dir DIR]
  drover-bench plan [-n 10000] [-runs 3] [-dir DIR]
  drover-bench rollout [-n 1000] [-waves 1,10%,50%,100%] [-soak 10s] [-health-interval 2s] [-max-failures 0] [-drover PATH] [-dir DIR] [-timeout 10m]
  drover-bench ui [-devices 10000] [-rate 1000] [-feed 20s] [-runs 5]
  drover-bench transfer [-debs DIR] [-dir DIR] [-drover PATH] [-only NAME,...]
  drover-bench idle [-n 1000,5000,14000] [-per-process 5000] [-http1] [-heartbeat 30s] [-hold 0s] [-drover PATH] [-dir DIR]
  drover-bench converge-cpu [-n 1000] [-drover PATH] [-dir DIR] [-timeout 5m]
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one benchmark and returns the exit code; every error ends
// here as one line on stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	err := dispatch(ctx, args, stdout)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, usage)
		return 0
	case errors.Is(err, bench.ErrUsage):
		fmt.Fprintf(stderr, "drover-bench: %v\n", err)
		return 2
	}
	fmt.Fprintf(stderr, "drover-bench: %v\n", err)
	return 1
}

// beatOrNever maps the -heartbeat flag's 0 (never) to IdleConfig's
// negative.
func beatOrNever(d time.Duration) time.Duration {
	if d <= 0 {
		return -1
	}
	return d
}

func dispatch(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: want a benchmark: fleet, install, events, plan, rollout, trust, transfer, ui, idle or converge-cpu", bench.ErrUsage)
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	parse := func() error {
		if err := fs.Parse(args[1:]); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return err
			}
			return fmt.Errorf("%w: %s: %v", bench.ErrUsage, args[0], err)
		}
		if fs.NArg() > 0 {
			return fmt.Errorf("%w: %s: unexpected argument %q", bench.ErrUsage, args[0], fs.Arg(0))
		}
		return nil
	}
	switch args[0] {
	case "ui":
		devices := fs.Int("devices", 10000, "devices in the store")
		rate := fs.Int("rate", 1000, "events per second for the live feed")
		feed := fs.Duration("feed", 20*time.Second, "how long the live feed runs")
		runs := fs.Int("runs", 5, "timed requests per page")
		dir := fs.String("dir", "", "where the store goes (default: a temp folder)")
		if err := parse(); err != nil {
			return err
		}
		return bench.UI(ctx, bench.UIConfig{Devices: *devices, Rate: *rate, Feed: *feed, Runs: *runs, Dir: *dir, Out: stdout})
	case "fleet":
		sizes := fs.String("n", "100,1000,5000", "fleet sizes, comma separated")
		drover := fs.String("drover", "", "drover binary to run as the server (default: build ./cmd/drover)")
		dir := fs.String("dir", "", "parent folder of the fleets' folders (default /dev/shm, a tmpfs)")
		timeout := fs.Duration("timeout", 120*time.Second, "bound of one fleet size")
		workers := fs.Int("set-workers", 16, "SetState calls in flight at once")
		bulk := fs.Bool("bulk", false, "set every desired state in one call (state set -f with one document per device)")
		db := fs.String("db", "", "run the servers on this PostgreSQL database (postgres://...), each size in a fresh schema")
		replicas := fs.Int("replicas", 1, "server replicas sharing the database (needs -db when above 1)")
		procs := fs.Int("agent-procs", 0, "run the agents in this many child processes (0: in this one)")
		if err := parse(); err != nil {
			return err
		}
		ns, err := bench.ParseSizes(*sizes)
		if err != nil {
			return err
		}
		return bench.Fleet(ctx, bench.FleetConfig{Sizes: ns, Drover: *drover, Dir: *dir, Timeout: *timeout, SetWorkers: *workers, Bulk: *bulk, DB: *db,
			Replicas: *replicas, AgentProcs: *procs, Out: stdout})
	case "fleet-agents":
		addrs := fs.String("addrs", "", "server URLs, comma separated")
		pkiDir := fs.String("pki", "", "folder of the device certificates")
		dir := fs.String("dir", "", "the fleet's folder")
		from := fs.Int("from", 0, "first device number")
		to := fs.Int("to", 0, "device number after the last")
		local := fs.String("local", "", "address to dial from")
		if err := parse(); err != nil {
			return err
		}
		return bench.FleetAgents(ctx, bench.FleetAgentsConfig{Addrs: strings.Split(*addrs, ","), PKI: *pkiDir, Dir: *dir, From: *from, To: *to,
			Local: *local, In: os.Stdin, Out: stdout})
	case "install":
		files := fs.Int("files", 5000, "files in the tree")
		size := fs.String("size", "200MB", "total size of the tree (MB = 10^6 bytes, MiB = 2^20)")
		dir := fs.String("dir", "", "parent of the work folder, on a real disk (default: the system temp folder)")
		runs := fs.Int("runs", 3, "runs of each installer")
		warm := fs.Bool("warm", false, "read each run's input into the page cache instead of dropping it")
		if err := parse(); err != nil {
			return err
		}
		n, err := bench.ParseSize(*size)
		if err != nil {
			return err
		}
		if *files < 1 || *runs < 1 {
			return fmt.Errorf("%w: install: -files and -runs must be at least 1", bench.ErrUsage)
		}
		return bench.Install(ctx, bench.InstallConfig{Files: *files, Size: n, Dir: *dir, Runs: *runs, Warm: *warm, Out: stdout})
	case "events":
		url := fs.String("amqp", os.Getenv("DROVER_TEST_AMQP"), "AMQP broker URL (default $DROVER_TEST_AMQP)")
		n := fs.Int("n", 50000, "events in the throughput run")
		probes := fs.Int("probes", 500, "single events timed from store to consumer")
		if err := parse(); err != nil {
			return err
		}
		if *url == "" || *n < 1 || *probes < 1 {
			return fmt.Errorf("%w: events: give -amqp URL (or DROVER_TEST_AMQP), -n and -probes >= 1", bench.ErrUsage)
		}
		return bench.Events(ctx, bench.EventsConfig{URL: *url, Events: *n, Probes: *probes, Out: stdout})
	case "trust":
		builds := fs.Int("builds", 10000, "signed builds in the repository")
		pushes := fs.Int("pushes", 50, "single signed pushes timed on top")
		dir := fs.String("dir", "", "parent of the work folder (default: the system temp folder)")
		if err := parse(); err != nil {
			return err
		}
		return bench.Trust(ctx, bench.TrustConfig{Builds: *builds, Pushes: *pushes, Dir: *dir, Out: stdout})
	case "plan":
		n := fs.Int("n", 10000, "devices in the store")
		runs := fs.Int("runs", 3, "warm plans timed after the cold one")
		dir := fs.String("dir", "", "parent of the work folder (default: the system temp folder)")
		if err := parse(); err != nil {
			return err
		}
		return bench.Plan(ctx, bench.PlanConfig{Devices: *n, Runs: *runs, Dir: *dir, Out: stdout})
	case "rollout":
		n := fs.Int("n", 1000, "agents, in this process")
		waves := fs.String("waves", "1,10%,50%,100%", "waves of both rollouts")
		soak := fs.Duration("soak", 10*time.Second, "soak of each wave")
		hi := fs.Duration("health-interval", 2*time.Second, "how often each agent checks its service")
		maxf := fs.String("max-failures", "0", "failed devices a wave of the good rollout may have")
		drover := fs.String("drover", "", "drover binary to run as the server (default: build ./cmd/drover)")
		dir := fs.String("dir", "", "parent of the work folder (default /dev/shm, a tmpfs)")
		timeout := fs.Duration("timeout", 10*time.Minute, "bound of the whole run")
		if err := parse(); err != nil {
			return err
		}
		ws, err := rollout.ParseWaves(*waves)
		if err != nil {
			return fmt.Errorf("%w: rollout: -waves: %v", bench.ErrUsage, err)
		}
		return bench.Rollout(ctx, bench.RolloutConfig{N: *n, Waves: ws, Soak: *soak, HealthInterval: *hi, MaxFailures: *maxf, Drover: *drover,
			Dir: *dir, Timeout: *timeout, Out: stdout})
	case "transfer":
		debs := fs.String("debs", "", "cache folder of the downloaded .deb files (default <user cache>/drover-bench/debs)")
		dir := fs.String("dir", "", "parent of the work folder (default: the system temp folder)")
		drover := fs.String("drover", "", "drover binary to run as server and agent (default: build ./cmd/drover)")
		only := fs.String("only", "", "measure only these packages of the built-in list, comma separated")
		if err := parse(); err != nil {
			return err
		}
		pairs, err := bench.SelectPairs(*only)
		if err != nil {
			return err
		}
		return bench.Transfer(ctx, bench.TransferConfig{Pairs: pairs, Debs: *debs, Dir: *dir, Drover: *drover, Out: stdout})
	case "idle":
		sizes := fs.String("n", "1000,5000,14000", "counts of connected agents, increasing, comma separated")
		per := fs.Int("per-process", 5000, "agents per simulator process")
		http1 := fs.Bool("http1", false, "simulated agents speak only HTTP/1.1")
		hold := fs.Duration("hold", 0, "keep the agents connected this long after the last count")
		beat := fs.Duration("heartbeat", 30*time.Second, "how often each agent reads its state and reports besides its long-poll (0: never)")
		drover := fs.String("drover", "", "drover binary to run as the server (default: build ./cmd/drover)")
		dir := fs.String("dir", "", "parent of the work folder (default /dev/shm, a tmpfs)")
		if err := parse(); err != nil {
			return err
		}
		ns, err := bench.ParseSizes(*sizes)
		if err != nil {
			return err
		}
		return bench.Idle(ctx, bench.IdleConfig{Sizes: ns, PerProcess: *per, HTTP1: *http1, Hold: *hold, Heartbeat: beatOrNever(*beat), Drover: *drover, Dir: *dir, Out: stdout})
	case "idle-agents":
		addr := fs.String("addr", "", "server URL")
		pkiDir := fs.String("pki", "", "folder of the device certificates")
		from := fs.Int("from", 0, "first device number")
		to := fs.Int("to", 0, "device number after the last")
		local := fs.String("local", "", "address to dial from")
		beat := fs.Duration("heartbeat", 0, "how often each agent reads its state and reports (0: never)")
		if err := parse(); err != nil {
			return err
		}
		return bench.IdleAgents(ctx, bench.IdleAgentsConfig{Addr: *addr, PKI: *pkiDir, From: *from, To: *to, Local: *local, Heartbeat: *beat, In: os.Stdin, Out: stdout})
	case "converge-cpu":
		n := fs.Int("n", 1000, "devices converging, agents in this process")
		drover := fs.String("drover", "", "drover binary to run as the server (default: build ./cmd/drover)")
		dir := fs.String("dir", "", "parent of the work folder (default /dev/shm, a tmpfs)")
		timeout := fs.Duration("timeout", 5*time.Minute, "bound of the whole run")
		if err := parse(); err != nil {
			return err
		}
		if *n < 1 {
			return fmt.Errorf("%w: converge-cpu: -n must be at least 1", bench.ErrUsage)
		}
		return bench.ConvergeCPU(ctx, bench.ConvergeCPUConfig{N: *n, Drover: *drover, Dir: *dir, Timeout: *timeout, Out: stdout})
	case "floor-server":
		pkiDir := fs.String("pki", "", "folder of the server certificate and the CA")
		if err := parse(); err != nil {
			return err
		}
		return bench.FloorServer(ctx, bench.FloorServerConfig{PKI: *pkiDir, In: os.Stdin, Out: stdout})
	case "-h", "-help", "--help", "help":
		return flag.ErrHelp
	}
	return fmt.Errorf("%w: unknown benchmark %q: want fleet, install, events, plan, rollout, trust, transfer, ui, idle or converge-cpu", bench.ErrUsage, args[0])
}
