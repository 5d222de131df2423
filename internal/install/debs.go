package install

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/proc"
)

// A root-mode build may carry Debian packages (api.Manifest.Debs). They
// are installed with dpkg after the build's files are switched in and
// before its postinst, and removed with the build unless another
// installed build carries a package of the same name. When dpkg fails
// (a dependency that cannot be met included), or the postinst or
// configure after it does, dpkg's packages are put back as they were
// before the step, and the step's files are rolled back as for any
// failure: the device stays in its last good state.

// dpkgError is a dpkg run that failed. It unwraps to a *ScriptError
// (Script "dpkg") so that the step's event carries dpkg's output.
type dpkgError struct {
	op      string // --install, --remove, --purge
	summary string
	se      *ScriptError
}

func (e *dpkgError) Error() string {
	return fmt.Sprintf("dpkg %s exited %d: %s", e.op, e.se.Code, e.summary)
}

func (e *dpkgError) Unwrap() error { return e.se }

// dpkgSummary is the gist of dpkg's output: its first error with the
// indented lines that explain it, on one line.
func dpkgSummary(out string) string {
	var parts []string
	for line := range strings.SplitSeq(out, "\n") {
		t := strings.TrimSpace(line)
		switch {
		case len(parts) == 0:
			if strings.HasPrefix(t, "dpkg: ") && !strings.HasPrefix(t, "dpkg: warning:") {
				parts = append(parts, t)
			}
		case strings.HasPrefix(line, " ") && t != "":
			parts = append(parts, t)
		default:
			return strings.Join(parts, " ")
		}
	}
	if len(parts) > 0 {
		return strings.Join(parts, " ")
	}
	return lastLine(out)
}

// debState is one package in dpkg's database.
type debState struct {
	Version string
	// Installed: dpkg's status is "installed" (not half-installed,
	// unpacked, config-files, ...).
	Installed bool
}

// dpkgArgs are the arguments every dpkg and dpkg-query run starts with.
func (e *Engine) dpkgArgs() []string {
	if e.cfg.Root == "/" {
		return nil
	}
	return []string{"--root=" + e.cfg.Root}
}

// dpkgQuery returns what dpkg's database holds: name → state.
func (e *Engine) dpkgQuery(ctx context.Context) (map[string]debState, error) {
	var out, errb strings.Builder
	args := append(e.dpkgArgs(), "--show", "--showformat=${Package}\t${Version}\t${db:Status-Status}\n")
	if _, err := proc.Run(ctx, proc.Cmd{Path: e.dpkgQueryPath(), Args: args, Stdout: &out, Stderr: &errb, Timeout: e.cfg.ScriptTimeout}); err != nil {
		return nil, fmt.Errorf("dpkg-query: %v: %s", err, strings.TrimSpace(errb.String()))
	}
	db := map[string]debState{}
	sc := bufio.NewScanner(strings.NewReader(out.String()))
	for sc.Scan() {
		f := strings.Split(sc.Text(), "\t")
		if len(f) != 3 || f[2] == "not-installed" {
			continue
		}
		db[f[0]] = debState{Version: f[1], Installed: f[2] == "installed"}
	}
	return db, nil
}

func (e *Engine) dpkgPath() string {
	if e.cfg.Dpkg != "" {
		return e.cfg.Dpkg
	}
	return "dpkg"
}

// dpkgQueryPath is dpkg-query beside Config.Dpkg.
func (e *Engine) dpkgQueryPath() string {
	if e.cfg.Dpkg != "" {
		return filepath.Join(filepath.Dir(e.cfg.Dpkg), "dpkg-query")
	}
	return "dpkg-query"
}

// dpkg runs dpkg with op and its arguments for the app's step; its
// output goes to a log file of the app, like a script's.
func (e *Engine) dpkg(ctx context.Context, app *appState, op string, args ...string) error {
	if err := os.MkdirAll(e.cfg.LogDir, 0o755); err != nil {
		return err
	}
	slug := strings.NewReplacer(":", "_", "/", "_").Replace(app.label())
	logPath := filepath.Join(e.cfg.LogDir, fmt.Sprintf("%s-%s-dpkg%s.log", e.cfg.Now().UTC().Format("20060102T150405.000000000Z"), slug, op))
	lf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return err
	}
	defer lf.Close()
	// Never a question on a terminal: keep changed conffiles, take
	// defaults, no debconf dialog.
	full := append(e.dpkgArgs(), "--force-confdef", "--force-confold", op)
	full = append(full, args...)
	e.log.Info("running dpkg", "package", app.label(), "args", full, "log", logPath)
	res, runErr := proc.Run(ctx, proc.Cmd{
		Path: e.dpkgPath(), Args: full,
		Env:    append(os.Environ(), "DEBIAN_FRONTEND=noninteractive"),
		Stdout: lf, Stderr: lf,
		Timeout: e.cfg.ScriptTimeout,
	})
	if runErr == nil {
		return nil
	}
	code := res.Code
	var ee *exec.ExitError
	if !errors.As(runErr, &ee) || res.TimedOut || ctx.Err() != nil {
		fmt.Fprintf(lf, "drover: %v\n", runErr)
		code = -1
	}
	out := proc.Tail(logPath, tailSize)
	de := &dpkgError{op: op, summary: dpkgSummary(out), se: &ScriptError{Script: "dpkg", Code: code, Output: out, Log: logPath}}
	e.log.Warn("dpkg failed", "package", app.label(), "err", de.Error())
	return de
}

// debFile copies a .deb out of the blob cache into dir, checking its
// digest on the way, and returns its path.
func (e *Engine) debFile(ctx context.Context, dir string, d api.Deb) (string, error) {
	src, err := e.cfg.Blobs.Open(ctx, d.Digest)
	if err != nil {
		return "", fmt.Errorf("deb %s: blob %s: %w", d.Name, d.Digest, err)
	}
	defer src.Close()
	p := filepath.Join(dir, fmt.Sprintf("%s_%s_%s.deb", d.Name, strings.ReplaceAll(d.Version, ":", "%3a"), d.Arch))
	out, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(out, h), src)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("deb %s: %w", d.Name, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != d.Digest {
		return "", fmt.Errorf("deb %s: content has digest %s, want %s", d.Name, got, d.Digest)
	}
	return p, nil
}

// installDebs runs dpkg --install on debs (all at once, so they may
// depend on each other).
func (e *Engine) installDebs(ctx context.Context, app *appState, debs []api.Deb) error {
	if len(debs) == 0 {
		return nil
	}
	dir, err := os.MkdirTemp(e.cfg.StateDir, "debs-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	var files []string
	for _, d := range debs {
		p, err := e.debFile(ctx, dir, d)
		if err != nil {
			return err
		}
		files = append(files, p)
	}
	return e.dpkg(ctx, app, "--install", files...)
}

// debsCarried returns the names of the debs that installed builds other
// than the app (name, instance) carry.
func (e *Engine) debsCarried(name, instance string) map[string]bool {
	out := map[string]bool{}
	for _, a := range e.state.Apps {
		if a.Name == name && a.Instance == instance {
			continue
		}
		m, err := e.loadManifest(a.Digest)
		if err != nil {
			continue
		}
		for _, d := range m.Debs {
			out[d.Name] = true
		}
	}
	return out
}

// orphanDebs returns, sorted, the names of old's debs that neither keep
// nor another installed build carries, and that dpkg has.
func (e *Engine) orphanDebs(app *appState, old, keep []api.Deb, db map[string]debState) []string {
	others := e.debsCarried(app.Name, app.Instance)
	var out []string
	for _, d := range old {
		_, inDB := db[d.Name]
		kept := slices.ContainsFunc(keep, func(k api.Deb) bool { return k.Name == d.Name })
		if inDB && !kept && !others[d.Name] {
			out = append(out, d.Name)
		}
	}
	slices.Sort(out)
	return out
}

// configureRoot is the root-mode configure: the build's debs through
// dpkg (install what dpkg lacks at that version, remove what only the
// old build carried), then postinst and configure. A failure of any
// puts dpkg's packages back as they were. What dpkg had before is in
// the journal first, so that recovery after a crash does the same.
func (e *Engine) configureRoot(ctx context.Context, s *step, j *journal) error {
	var oldDebs []api.Deb
	if s.oldM != nil {
		oldDebs = s.oldM.Debs
	}
	if len(s.m.Debs) == 0 && len(oldDebs) == 0 {
		return e.configure(ctx, s, e.cfg.Root)
	}
	db, err := e.dpkgQuery(ctx)
	if err != nil {
		return err
	}
	before := map[string]debState{}
	for _, n := range debNames(s.m, s.oldM) {
		before[n] = db[n] // the zero debState: dpkg did not have it
	}
	j.DebsBefore = before
	if err := e.writeJournal(j); err != nil {
		return err
	}
	var todo []api.Deb
	for _, d := range s.m.Debs {
		if st := db[d.Name]; !st.Installed || st.Version != d.Version {
			todo = append(todo, d)
		}
	}
	orphans := e.orphanDebs(s.app, oldDebs, s.m.Debs, db)
	if err := e.installDebs(ctx, s.app, todo); err != nil {
		return e.restoreDebs(ctx, s.app, s.oldM, before, err)
	}
	if len(orphans) > 0 {
		if err := e.dpkg(ctx, s.app, "--remove", orphans...); err != nil {
			return e.restoreDebs(ctx, s.app, s.oldM, before, err)
		}
	}
	if err := e.point("debs"); err != nil {
		return err
	}
	if err := e.configure(ctx, s, e.cfg.Root); err != nil {
		return e.restoreDebs(ctx, s.app, s.oldM, before, err)
	}
	return nil
}

// debNames are the names of the debs of the new and the old build.
func debNames(m, oldM *api.Manifest) []string {
	var names []string
	for _, mm := range []*api.Manifest{m, oldM} {
		if mm == nil {
			continue
		}
		for _, d := range mm.Debs {
			if !slices.Contains(names, d.Name) {
				names = append(names, d.Name)
			}
		}
	}
	slices.Sort(names)
	return names
}

// recoverDebs, on recovery of an interrupted step that ran dpkg, puts
// dpkg's packages back as the journal says they were.
func (e *Engine) recoverDebs(ctx context.Context, j *journal) error {
	if len(j.DebsBefore) == 0 || j.New == nil {
		return nil
	}
	var oldM *api.Manifest
	if j.Old != nil {
		m, err := e.loadManifest(j.Old.Digest)
		if err != nil {
			return err
		}
		oldM = m
	}
	if err := e.restoreDebs(ctx, j.New, oldM, j.DebsBefore, nil); err != nil {
		return err
	}
	j.DebsBefore = nil
	return e.writeJournal(j)
}

// restoreDebs answers a failed step: each package of before goes back to
// what dpkg had then: purged if it was not there, reinstalled from the
// old build's .deb if that is the version it had. It returns cause
// (nil on recovery), with what went wrong restoring.
func (e *Engine) restoreDebs(ctx context.Context, app *appState, oldM *api.Manifest, before map[string]debState, cause error) error {
	if e.dead {
		return cause
	}
	wrap := func(err error) error {
		if cause == nil {
			return fmt.Errorf("restoring Debian packages: %w", err)
		}
		return fmt.Errorf("%w (and restoring Debian packages: %v)", cause, err)
	}
	now, err := e.dpkgQuery(ctx)
	if err != nil {
		return wrap(err)
	}
	var purge []string
	var reinstall []api.Deb
	for _, n := range slices.Sorted(maps.Keys(before)) {
		was := before[n]
		cur, has := now[n]
		switch {
		case was == (debState{}) && has:
			purge = append(purge, n)
		case was != (debState{}) && (!has || cur != was):
			var old []api.Deb
			if oldM != nil {
				old = oldM.Debs
			}
			i := slices.IndexFunc(old, func(d api.Deb) bool { return d.Name == n && d.Version == was.Version })
			if i < 0 {
				e.log.Warn("cannot restore a Debian package: no .deb of its old version", "deb", n, "version", was.Version)
				continue
			}
			reinstall = append(reinstall, old[i])
		}
	}
	var errs []error
	if len(purge) > 0 {
		errs = append(errs, e.dpkg(ctx, app, "--purge", purge...))
	}
	if len(reinstall) > 0 {
		errs = append(errs, e.installDebs(ctx, app, reinstall))
	}
	if err := errors.Join(errs...); err != nil {
		return wrap(err)
	}
	return cause
}

// removeDebs runs dpkg --remove on the app's debs that no other
// installed build carries, before its files go. A failure leaves the
// app installed.
func (e *Engine) removeDebs(ctx context.Context, app *appState, m *api.Manifest) error {
	if len(m.Debs) == 0 {
		return nil
	}
	db, err := e.dpkgQuery(ctx)
	if err != nil {
		return err
	}
	orphans := e.orphanDebs(app, m.Debs, nil, db)
	if len(orphans) == 0 {
		return nil
	}
	return e.dpkg(ctx, app, "--remove", orphans...)
}
