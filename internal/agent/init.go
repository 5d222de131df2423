package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/atomicfile"
	"github.com/drover-dev/drover/internal/fleet"
	"github.com/drover-dev/drover/internal/pkgfile"
	"github.com/drover-dev/drover/internal/plan"
	"github.com/drover-dev/drover/internal/proc"
)

// defaultInitTimeout bounds one init program when Config.InitTimeout is 0.
const defaultInitTimeout = 10 * time.Minute

// initTail is how much of an init program's output its event carries.
const initTail = 4096

// initFile holds the records of the init entries that succeeded here.
func (a *Agent) initFile() string { return filepath.Join(a.cfg.Home, "system", "init.json") }

// initRecords reads the init records; none when the file does not exist.
// A file that cannot be read is an error, not "nothing ran": running
// every join program again by mistake is worse than stopping.
func (a *Agent) initRecords() ([]api.InitRecord, error) {
	b, err := os.ReadFile(a.initFile())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("init records: %w", err)
	}
	var recs []api.InitRecord
	if err := json.Unmarshal(b, &recs); err != nil {
		return nil, fmt.Errorf("init records %s: %w (move it away to run every init entry again)", a.initFile(), err)
	}
	return recs, nil
}

// reportedInit is what a report says ran: the records, or none when they
// cannot be read (the convergence says why).
func (a *Agent) reportedInit() []api.InitRecord {
	recs, _ := a.initRecords()
	return recs
}

// runInit runs the pending init entries of res in order, before any app
// step. The first failure stops it: its error stops the convergence, so
// the device keeps its last good state and the agent's backoff retries.
// Each success is recorded at once, so a later failure or a restart
// never runs it again.
func (a *Agent) runInit(ctx context.Context, res *api.Resolved) error {
	if len(res.Init) == 0 {
		return nil
	}
	// What the server sent names files here (the scratch folder, the
	// log): check it as hostile before anything runs.
	for _, e := range res.Init {
		if err := checkInit(e); err != nil {
			return err
		}
	}
	done, err := a.initRecords()
	if err != nil {
		return err
	}
	for _, e := range plan.PendingInit(res.Init, done) {
		if err := a.runInitEntry(ctx, e); err != nil {
			return err
		}
		done = plan.RecordInit(done, api.InitRecord{Group: e.Group, Name: e.Name, Version: e.Version,
			Digest: e.Digest, Run: e.Run, Done: a.now().UTC()})
		b, err := json.MarshalIndent(done, "", "  ")
		if err == nil {
			err = atomicfile.WriteFile(a.initFile(), b, 0o600)
		}
		if err != nil {
			return fmt.Errorf("record init %s of group %s: %w", e.Name, e.Group, err)
		}
	}
	return nil
}

// checkInit refuses an init entry whose group, name, build digest or run
// could not have come from a valid group document.
func checkInit(e api.ResolvedInit) error {
	switch _, _, err := api.ParsePackageName(e.Name); {
	case err != nil:
		return fmt.Errorf("init entry from the server: %w", err)
	case !fleet.ValidGroupName(e.Group):
		return fmt.Errorf("init entry %s from the server: bad group %q", e.Name, e.Group)
	case !api.ValidDigest(e.Digest):
		return fmt.Errorf("init entry %s from the server: bad digest %q", e.Name, e.Digest)
	}
	if err := pkgfile.CheckRunPath(e.Run); err != nil {
		return fmt.Errorf("init entry %s from the server: run: %w", e.Name, err)
	}
	return nil
}

// runInitEntry fetches, unpacks and runs one init entry, with its events.
func (a *Agent) runInitEntry(ctx context.Context, e api.ResolvedInit) error {
	pkg := e.Name + ":" + e.Version
	what := fmt.Sprintf("init %s of group %s: %s", pkg, e.Group, e.Run)
	a.event(api.Event{Kind: api.KindInitStart, Level: api.LevelInfo, Priority: api.PriorityLow, Package: pkg, Message: what})
	a.flushEvents(ctx)
	logPath := filepath.Join(a.cfg.Home, "logs", "init-"+e.Group+"-"+e.Name+".log")
	code, err := a.execInit(ctx, e, logPath)
	if err != nil {
		payload := map[string]any{"group": e.Group, "name": e.Name, "version": e.Version, "digest": e.Digest,
			"run": e.Run, "error": err.Error(), "log": logPath}
		msg := fmt.Sprintf("%s: %v", what, err)
		var ie *initError
		if errors.As(err, &ie) {
			payload["exit_code"] = code
			payload["output"] = ie.output
			if last := lastLine(ie.output); last != "" {
				msg += ": " + last
			}
		}
		a.event(api.Event{Kind: api.KindInitFailed, Level: api.LevelError, Priority: api.PriorityHigh, Package: pkg,
			Message: msg, Payload: mustJSON(payload)})
		a.flushEvents(ctx)
		return errors.New(msg)
	}
	a.event(api.Event{Kind: api.KindInitDone, Level: api.LevelInfo, Priority: api.PriorityLow, Package: pkg, Message: what,
		Payload: mustJSON(map[string]any{"group": e.Group, "name": e.Name, "version": e.Version, "digest": e.Digest,
			"run": e.Run, "log": logPath, "output": proc.Tail(logPath, initTail)})})
	a.flushEvents(ctx)
	return nil
}

// initError is an init program that ran and failed; output is the tail
// of what this run wrote.
type initError struct {
	err    error
	output string
}

func (e *initError) Error() string { return e.err.Error() }
func (e *initError) Unwrap() error { return e.err }

// execInit unpacks e's build into <home>/system/init/<digest> (removed
// afterwards) and runs its program there, its output appended to
// logPath. It returns the exit code of a program that ran.
func (a *Agent) execInit(ctx context.Context, e api.ResolvedInit, logPath string) (int, error) {
	m, err := a.manifest(ctx, api.ResolvedApp{Name: e.Name, Version: e.Version, Digest: e.Digest})
	if err != nil {
		return 0, err
	}
	// The server checked the program when the document was set; the
	// device checks it again in the tree it will unpack.
	if err := pkgfile.CheckProgram(pkgfile.Tree(m, a.tags), e.Run); err != nil {
		return 0, fmt.Errorf("run: %w", err)
	}
	if err := a.fetch(withTransfer(ctx, e.Name+":"+e.Version, m), neededDigests(m, a.tags)); err != nil {
		return 0, err
	}
	dir := filepath.Join(a.cfg.Home, "system", "init", e.Digest)
	if err := os.RemoveAll(dir); err != nil { // what a crash left
		return 0, err
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	if err := a.engine.UnpackScratch(ctx, m, a.tags, dir); err != nil {
		return 0, err
	}
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return 0, err
	}
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	start, err := f.Seek(0, 2)
	if err != nil {
		return 0, err
	}
	fmt.Fprintf(f, "=== %s %s %s of group %s: %s\n", a.now().UTC().Format(time.RFC3339), e.Name, e.Version, e.Group, e.Run)
	p := os.Getenv("PATH")
	if p == "" {
		p = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	}
	timeout := a.cfg.InitTimeout
	if timeout <= 0 {
		timeout = defaultInitTimeout
	}
	r, err := proc.Run(ctx, proc.Cmd{
		Path: filepath.Join(dir, filepath.FromSlash(e.Run)),
		Dir:  dir,
		Env: []string{"PATH=" + p, "DROVER_DEVICE=" + a.cfg.Device, "DROVER_GROUP=" + e.Group, "DROVER_PREFIX=" + dir, "DROVER_ROOT=" + a.cfg.Root,
			"DROVER_PACKAGE=" + m.Coordinate().String(), "DROVER_VERSION=" + e.Version},
		Stdout: f, Stderr: f, Timeout: timeout,
	})
	if err == nil {
		return 0, nil
	}
	if r.TimedOut {
		err = fmt.Errorf("timed out after %v", timeout)
	}
	end, _ := f.Seek(0, 2)
	return r.Code, &initError{err: err, output: proc.Tail(logPath, min(initTail, end-start))}
}

// lastLine is the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}
