// Package hook runs Ganeti-style run-parts hook directories: for an event
// of kind K, every executable in <dir>/K-post.d/ whose name matches
// ^[a-zA-Z0-9_-]+$ runs in name order, with the event as JSON on stdin and
// DROVER_EVENT_* variables in its environment. Each hook has a timeout
// after which its whole process group is killed; a failing or hanging
// hook never stops the next one. The server and the agent share it.
package hook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/proc"
)

// ErrTimeout is wrapped by a Result's Err when the hook ran past its
// timeout and was killed.
var ErrTimeout = errors.New("hook timed out")

// validName is run-parts' rule: names with dots (backups like x.orig,
// x.dpkg-old) or other characters never run.
var validName = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

// maxOutput bounds the output kept of one hook.
const maxOutput = 64 << 10

// Config holds a Runner's settings.
type Config struct {
	// Dir holds the <kind>-post.d directories.
	Dir string
	// Timeout bounds each hook; default 30s.
	Timeout time.Duration
	// Env is added to every hook's environment (after the process's own).
	Env []string
	// Ignored, if not nil, is told once per path (for the life of the
	// Runner) about a file in a hook directory that does not run: a name
	// that breaks the rule, a file that is not executable, a folder. The
	// server and the agent make it a warning event, so an operator sees
	// why a hook never ran. It is called without any lock of the Runner
	// held, on the goroutine that listed the directory.
	Ignored func(path, reason string)
	Logger  *slog.Logger
}

// Result is what one hook did.
type Result struct {
	Name     string // file name in the directory
	Path     string
	Err      error  // nil on exit 0; wraps ErrTimeout when killed
	Output   []byte // stdout and stderr, at most 64 KiB
	Duration time.Duration
}

// Runner runs hook directories. It is safe for concurrent use.
type Runner struct {
	cfg Config
	log *slog.Logger

	mu     sync.Mutex
	warned map[string]bool // paths already warned about
}

// New returns a Runner over cfg.Dir.
func New(cfg Config) *Runner {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Runner{cfg: cfg, log: cfg.Logger, warned: map[string]bool{}}
}

// Hooks returns the paths of the hooks that run for kind, in name order.
// Names that break the rule and files that are not executable are
// skipped, each with one warning in the log for the life of the Runner.
// A missing directory has no hooks.
func (r *Runner) Hooks(kind string) []string {
	if !validName.MatchString(kind) {
		return nil // a kind is never a path
	}
	return r.list(kind + "-post.d")
}

// list returns the hooks that run in <Dir>/<sub>, in name order.
func (r *Runner) list(sub string) []string {
	dir := filepath.Join(r.cfg.Dir, sub)
	ents, err := os.ReadDir(dir)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			r.warnOnce(dir, "hook directory unreadable", "err", err)
		}
		return nil
	}
	var out []string
	for _, e := range ents { // ReadDir sorts by name
		p := filepath.Join(dir, e.Name())
		if !validName.MatchString(e.Name()) {
			r.warnOnce(p, "hook ignored: name must match ^[a-zA-Z0-9_-]+$")
			continue
		}
		fi, err := os.Stat(p) // follows symlinks, as run-parts does
		if err != nil || !fi.Mode().IsRegular() {
			r.warnOnce(p, "hook ignored: not a regular file")
			continue
		}
		if fi.Mode().Perm()&0o111 == 0 {
			r.warnOnce(p, "hook ignored: not executable")
			continue
		}
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

func (r *Runner) warnOnce(path, msg string, args ...any) {
	r.mu.Lock()
	seen := r.warned[path]
	r.warned[path] = true
	r.mu.Unlock()
	if !seen {
		r.log.Warn(msg, append([]any{"path", path}, args...)...)
		if r.cfg.Ignored != nil {
			r.cfg.Ignored(path, msg)
		}
	}
}

// Env returns the DROVER_EVENT_* variables of ev.
func Env(ev api.Event) []string {
	return []string{
		"DROVER_EVENT_ID=" + strconv.FormatInt(ev.ID, 10),
		"DROVER_EVENT_KIND=" + ev.Kind,
		"DROVER_EVENT_DEVICE=" + ev.Device,
		"DROVER_EVENT_LEVEL=" + ev.Level,
		"DROVER_EVENT_PRIORITY=" + ev.Priority,
		"DROVER_EVENT_PACKAGE=" + ev.Package,
		"DROVER_EVENT_TIME=" + ev.Time.UTC().Format(time.RFC3339Nano),
	}
}

// Run runs the hooks of kind for ev, one after the other in name order,
// and returns what each did. It returns early only when ctx is done.
func (r *Runner) Run(ctx context.Context, kind string, ev api.Event) []Result {
	paths := r.Hooks(kind)
	if len(paths) == 0 {
		return nil
	}
	stdin, err := json.Marshal(ev)
	if err != nil {
		return []Result{{Name: kind, Err: fmt.Errorf("encode event: %w", err)}}
	}
	env := append(append(os.Environ(), r.cfg.Env...), Env(ev)...)
	out := make([]Result, 0, len(paths))
	for _, p := range paths {
		if ctx.Err() != nil {
			break
		}
		res := r.runOne(ctx, p, stdin, env)
		if res.Err != nil {
			r.log.Warn("hook failed", "path", p, "event", ev.ID, "err", res.Err, "duration", res.Duration)
		} else {
			r.log.Debug("hook ran", "path", p, "event", ev.ID, "duration", res.Duration)
		}
		out = append(out, res)
	}
	return out
}

// RunDir runs every hook of the directory <Dir>/<name>.d (a gate, not an
// event's hooks: rollout-gate.d) one after the other in name order, each
// with stdin and env added to its environment, and returns what each did.
// It stops at the first that fails, and early when ctx is done.
func (r *Runner) RunDir(ctx context.Context, name string, stdin []byte, env []string) []Result {
	if !validName.MatchString(name) {
		return nil
	}
	paths := r.list(name + ".d")
	env = append(append(os.Environ(), r.cfg.Env...), env...)
	var out []Result
	for _, p := range paths {
		if ctx.Err() != nil {
			break
		}
		res := r.runOne(ctx, p, stdin, env)
		out = append(out, res)
		if res.Err != nil {
			r.log.Warn("hook failed", "path", p, "err", res.Err, "duration", res.Duration)
			break
		}
	}
	return out
}

func (r *Runner) runOne(ctx context.Context, path string, stdin []byte, env []string) Result {
	res := Result{Name: filepath.Base(path), Path: path}
	var buf limitedBuffer
	start := time.Now()
	// Its own process group, so a timeout kills whatever it started too.
	// A grandchild that escaped the group may hold the output pipe open:
	// stop waiting for it soon after the kill.
	run, err := proc.Run(ctx, proc.Cmd{
		Path: path, Dir: filepath.Dir(path), Env: env,
		Stdin:  stdin,
		Stdout: &buf, Stderr: &buf,
		Timeout:   r.cfg.Timeout,
		WaitDelay: time.Second,
	})
	res.Duration = time.Since(start)
	res.Output = buf.Bytes()
	switch {
	case err == nil:
	case run.TimedOut:
		res.Err = fmt.Errorf("%s: %w after %v", res.Name, ErrTimeout, r.cfg.Timeout)
	default:
		res.Err = fmt.Errorf("%s: %w", res.Name, err)
	}
	return res
}

// limitedBuffer keeps the first maxOutput bytes written to it.
type limitedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := maxOutput - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (b *limitedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}
