// Package health runs a machine's health checks (Jetpack's HealthCheck
// service, DESIGN §4) and turns their results into the device's health
// state: executables in <home>/config/healthcheck.d run in name order,
// each with a timeout; exit 0 is healthy, exit 254 asks for the machine
// to be terminated, anything else (or a timeout) is unknown. A Machine adds
// what Habitat users ask for: a start delay after boot or install, and no
// flapping (a state changes only after N equal results in a row).
package health

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"time"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/proc"
)

// ExitTerminate is the exit code by which a check asks for termination.
const ExitTerminate = 254

// nameRe is what a check's file name must look like; anything else
// (editor backups, README, .disabled) is skipped with a warning.
var nameRe = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

// ValidName reports whether name is a valid check name.
func ValidName(name string) bool { return len(name) <= 128 && nameRe.MatchString(name) }

// Config says where the checks are and how long each may take.
type Config struct {
	// Dir holds the checks: <home>/config/healthcheck.d.
	Dir string
	// LogDir, when set, keeps each check's last output as NAME.log.
	LogDir string
	// Timeout bounds one check; default 30s. A check that runs longer is
	// killed with its whole process group.
	Timeout time.Duration
	// Env is the environment of the checks; nil = the agent's.
	Env []string
	// MaxOutput bounds the output kept of a check; default 8 KiB (its tail).
	MaxOutput int
	Now       func() time.Time
}

// Skipped is a file in the checks folder that is not run, and why.
type Skipped struct {
	Name   string
	Reason string
}

// RunAll runs every check in cfg.Dir in name order and returns the result
// of each, and the files it skipped (bad names, not executable). A missing
// folder means no checks. The error is only for a folder that cannot be
// read.
func RunAll(ctx context.Context, cfg Config) ([]api.HealthCheck, []Skipped, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.MaxOutput <= 0 {
		cfg.MaxOutput = 8 << 10
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	entries, err := os.ReadDir(cfg.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read health checks: %w", err)
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
	var (
		results []api.HealthCheck
		skipped []Skipped
	)
	for _, e := range entries {
		name := e.Name()
		if !ValidName(name) {
			skipped = append(skipped, Skipped{name, "name is not letters, digits, '_' and '-'"})
			continue
		}
		path := filepath.Join(cfg.Dir, name)
		st, err := os.Stat(path) // follows a symlink to the real check
		switch {
		case err != nil:
			skipped = append(skipped, Skipped{name, err.Error()})
			continue
		case st.IsDir():
			skipped = append(skipped, Skipped{name, "is a directory"})
			continue
		case st.Mode().Perm()&0o111 == 0:
			skipped = append(skipped, Skipped{name, "is not executable (chmod +x it)"})
			continue
		}
		if ctx.Err() != nil {
			return results, skipped, ctx.Err()
		}
		results = append(results, runOne(ctx, cfg, name, path))
	}
	return results, skipped, nil
}

// runOne runs one check and classifies its exit.
func runOne(ctx context.Context, cfg Config, name, path string) api.HealthCheck {
	res := api.HealthCheck{Name: name, Time: cfg.Now().UTC()}
	out, err := outputFile(cfg, name)
	if err != nil {
		res.Status, res.ExitCode, res.Output = api.HealthUnknown, -1, fmt.Sprintf("drover: keep output: %v", err)
		return res
	}
	defer out.close()

	// A file, not a pipe: Run must not wait for a child the check leaves
	// running with our stdout.
	run, runErr := proc.Run(ctx, proc.Cmd{Path: path, Dir: cfg.Dir, Env: cfg.Env, Stdout: out.f, Stderr: out.f, Timeout: cfg.Timeout})
	var ee *exec.ExitError
	switch {
	case run.TimedOut:
		fmt.Fprintf(out.f, "drover: killed after the health-check timeout of %v\n", cfg.Timeout)
		res.Status, res.ExitCode = api.HealthUnknown, -1
	case runErr == nil:
		res.Status = api.HealthHealthy
	case errors.As(runErr, &ee) && ee.ExitCode() == ExitTerminate:
		res.Status, res.ExitCode = api.HealthTerminate, ExitTerminate
	case errors.As(runErr, &ee) && ee.ExitCode() >= 0:
		res.Status, res.ExitCode = api.HealthUnknown, ee.ExitCode()
	default:
		fmt.Fprintf(out.f, "drover: %v\n", runErr)
		res.Status, res.ExitCode = api.HealthUnknown, -1
	}
	res.Output = proc.Tail(out.f.Name(), int64(cfg.MaxOutput))
	return res
}

type output struct {
	f    *os.File
	temp bool
}

func outputFile(cfg Config, name string) (*output, error) {
	if cfg.LogDir == "" {
		f, err := os.CreateTemp("", "drover-health-*")
		if err != nil {
			return nil, err
		}
		return &output{f: f, temp: true}, nil
	}
	if err := os.MkdirAll(cfg.LogDir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(cfg.LogDir, name+".log"), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return nil, err
	}
	return &output{f: f}, nil
}

func (o *output) close() {
	o.f.Close()
	if o.temp {
		os.Remove(o.f.Name())
	}
}

// Overall is the state of a set of results: terminate if any check asks
// for it, else unknown if any is unknown, else healthy; "" for no checks.
func Overall(results []api.HealthCheck) string {
	if len(results) == 0 {
		return ""
	}
	out := api.HealthHealthy
	for _, r := range results {
		switch r.Status {
		case api.HealthTerminate:
			return api.HealthTerminate
		case api.HealthUnknown:
			out = api.HealthUnknown
		}
	}
	return out
}
