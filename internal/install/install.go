// Package install is the agent's install engine. It puts one build of a
// package on disk, switches the device to it, runs the package's
// scripts, and takes it away again, such that a kill -9 at any
// instruction leaves, after Recover, every package wholly at its old or
// wholly at its new build, with state.json agreeing with the disk.
//
// Two install modes (DESIGN §3):
//
//   - prefix (copkg): the build goes to a versioned folder
//     <software-root>/<group path>/<name>/<version>/ and the symlink
//     .../current is switched to it with one atomic rename. The previous
//     version folder is kept for a rollback without download.
//   - root (jamesd): files land at their paths under Root; they are
//     staged beside their targets, then renamed into place, under a
//     journal that Recover rolls back or forward after a crash.
//
// docs/install.md describes layout, journal phases, recovery, script
// order and environment.
package install

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/drover-dev/drover/internal/param"
	"github.com/drover-dev/drover/internal/plan"
	"github.com/drover-dev/drover/internal/privdir"

	"github.com/drover-dev/drover/internal/api"
)

// Errors callers branch on.
var (
	// ErrCrash is what a Config.Crash hook returns to simulate a crash:
	// the engine stops dead where it is, as kill -9 would, and refuses
	// any further call.
	ErrCrash = errors.New("simulated crash")
	// ErrConflict: in root mode, a target path is owned by another
	// package, or exists, is not drover's and differs from the new
	// content.
	ErrConflict = errors.New("conflict")
	// ErrNotInstalled: no such app, or no kept manifest of that digest.
	ErrNotInstalled = errors.New("not installed")
	// ErrRecoverFirst: a step was interrupted and its journal is still
	// there; call Recover before anything else.
	ErrRecoverFirst = errors.New("an interrupted step is in the journal: recover first")
)

// Blobs is the part of the blob cache the engine reads: a blob by its
// SHA-256, as an *os.File so copies can use copy_file_range.
type Blobs interface {
	Open(ctx context.Context, digest string) (*os.File, error)
}

// Config configures an Engine.
type Config struct {
	// SoftwareRoot holds prefix-mode installs:
	// <software-root>/<group path>/<name>[@<instance>]/<version>/ and
	// .../current.
	SoftwareRoot string
	// Root is where root-mode files land (default "/").
	Root string
	// StateDir is the engine's own: journal.json, state.json,
	// manifests/, scripts/.
	StateDir string
	// LogDir receives one log file per script run (default
	// StateDir/logs).
	LogDir string
	// Device is exported to scripts as DROVER_DEVICE.
	Device string
	Blobs  Blobs
	Logger *slog.Logger
	Now    func() time.Time
	// ScriptTimeout bounds one script run (default 10m).
	ScriptTimeout time.Duration
	// Crash, if set, is called at named points of every step (see
	// docs/install.md; Recover's points are prefixed "recover/"). Any
	// error it returns stops the engine dead, leaving the disk as it
	// is, the way kill -9 would: tests use it to prove recovery.
	Crash func(point string) error
	// Dpkg is the dpkg program that installs the Debian packages of
	// root-mode builds (default "dpkg" in PATH; dpkg-query is looked for
	// beside it). dpkg runs with --root when Root is not "/".
	Dpkg string
}

// Engine installs and removes packages. Its methods are safe for
// concurrent use; steps run one at a time. One process only may use a
// StateDir.
type Engine struct {
	cfg   Config
	log   *slog.Logger
	mu    sync.Mutex
	state *stateFile
	// dead is set by a simulated crash.
	dead       bool
	recovering bool
	// syncEach makes unpacking fsync every file instead of one syncfs
	// per filesystem (for BenchmarkDurable).
	syncEach bool
}

// Target is one build to install.
type Target struct {
	Manifest *api.Manifest
	Digest   string // manifest digest: the build's identity
	// Have is device tags ∪ entry tags: it selects the overlays.
	Have []string
	// Tags are the desired-state entry's tags, recorded as is.
	Tags []string
	// Action is the step's kind as the plan decided it (install,
	// upgrade, downgrade, reinstall): scripts see it as DROVER_ACTION.
	// Empty asks plan.Change, the plan's own rule.
	Action   string
	Instance string
	// Params are exported to scripts as DROVER_PARAM_<NAME>.
	Params map[string]string
	// Templates are the build's rendered templates (param.RenderTemplates):
	// installed with its files as files the app owns, mode 0640 (they may
	// hold parameter values), under the same ownership, conflict,
	// journal, rollback and removal rules.
	Templates []param.Rendered
	// Configure, if set, runs at the configure step just before the
	// configure script, with the install location (the agent renders
	// templates here). An error counts as a failed configure: the step
	// is rolled back.
	Configure func(ctx context.Context, location string) error
	// Progress, if set, is called as files are written: files and bytes
	// done of the step's total. It is called from several goroutines, one
	// call at a time.
	Progress func(filesDone, filesTotal int, bytesDone, bytesTotal int64)
}

// New returns an engine over the state in cfg.StateDir. It does not
// recover: call Recover before any step.
func New(cfg Config) (*Engine, error) {
	if cfg.StateDir == "" {
		return nil, fmt.Errorf("install: no state directory")
	}
	if cfg.Blobs == nil {
		return nil, fmt.Errorf("install: no blob cache")
	}
	if cfg.Root == "" {
		cfg.Root = "/"
	}
	var err error
	for _, p := range []*string{&cfg.Root, &cfg.SoftwareRoot, &cfg.StateDir, &cfg.LogDir} {
		if *p == "" {
			continue
		}
		if *p, err = filepath.Abs(*p); err != nil {
			return nil, fmt.Errorf("install: %w", err)
		}
	}
	// SecureJoin wants a root without symlinks in it.
	if r, err := filepath.EvalSymlinks(cfg.Root); err == nil {
		cfg.Root = r
	}
	if cfg.LogDir == "" {
		cfg.LogDir = filepath.Join(cfg.StateDir, "logs")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ScriptTimeout <= 0 {
		cfg.ScriptTimeout = 10 * time.Minute
	}
	for _, d := range []string{cfg.StateDir, filepath.Join(cfg.StateDir, "manifests"), filepath.Join(cfg.StateDir, "scripts")} {
		if err := privdir.Make(d); err != nil {
			return nil, fmt.Errorf("install: %w", err)
		}
	}
	st, err := loadState(filepath.Join(cfg.StateDir, "state.json"))
	if err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	return &Engine{cfg: cfg, log: cfg.Logger, state: st}, nil
}

// point is a named crash point.
func (e *Engine) point(name string) error {
	if e.cfg.Crash == nil {
		return nil
	}
	if e.recovering {
		name = "recover/" + name
	}
	if err := e.cfg.Crash(name); err != nil {
		e.dead = true
		return err
	}
	return nil
}

// ready refuses a step after a simulated crash or with a journal on disk.
func (e *Engine) ready() error {
	if e.dead {
		return ErrCrash
	}
	if ok, err := exists(e.journalPath()); err != nil {
		return err
	} else if ok {
		return ErrRecoverFirst
	}
	return nil
}

// PackageDir is the folder of a prefix-mode app:
// <software-root>/<group path>/<name>, or <name>@<instance> for a named
// instance so instances never share files.
func PackageDir(softwareRoot, name, instance string) (string, error) {
	group, n, err := api.ParsePackageName(name)
	if err != nil {
		return "", err
	}
	if instance != "" {
		if !api.ValidName(instance) {
			return "", fmt.Errorf("instance %q: want letters, digits, '.', '-' and '_'", instance)
		}
		n += "@" + instance
	}
	parts := append([]string{softwareRoot}, strings.Split(group, ".")...)
	return filepath.Join(append(parts, n)...), nil
}

// step is one Apply in the making.
type step struct {
	t       Target
	m       *api.Manifest
	action  string // install, upgrade, downgrade, reinstall
	old     *appState
	oldM    *api.Manifest
	app     *appState // the new state entry
	tree    []api.File
	oldTree []api.File
}

// Apply installs the build t, or upgrades, downgrades or reinstalls the
// installed app of the same name and instance to it. The same build,
// with the same overlays, already installed is a no-op (only recorded
// tags are updated).
//
// A failure before the switch leaves the old build untouched; a failing
// postinst or configure switches back to the old build. Either way the
// error is returned (a *ScriptError for a script) and the device is in
// its last good state. A failing postrm of the old build is the one
// error returned with a non-nil app: the new build is installed.
func (e *Engine) Apply(ctx context.Context, t Target) (*api.InstalledApp, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.ready(); err != nil {
		return nil, err
	}
	s, noop, err := e.newStep(t)
	if err != nil {
		return nil, err
	}
	if noop != nil {
		return noop, nil
	}
	coord := s.m.Coordinate().String()
	if err := e.saveBuild(ctx, t.Digest, s.m); err != nil {
		_ = e.gcBuilds()
		return nil, fmt.Errorf("%s %s: %w", s.action, coord, err)
	}
	if err := e.point("prepared"); err != nil {
		return nil, err
	}
	e.log.Info("applying", "package", coord, "digest", t.Digest, "action", s.action, "mode", s.app.Install)
	var postrmErr error
	if s.app.Install == api.InstallRoot {
		postrmErr, err = e.applyRoot(ctx, s)
	} else {
		postrmErr, err = e.applyPrefix(ctx, s)
	}
	if err != nil {
		if e.dead {
			return nil, err
		}
		if ok, _ := exists(e.journalPath()); !ok {
			// Failed before its journal (conflict, preinst): drop the
			// kept manifest and scripts of the build that never came.
			if gerr := e.gcBuilds(); gerr != nil {
				e.log.Warn("removing kept builds", "err", gerr)
			}
		}
		return nil, fmt.Errorf("%s %s: %w", s.action, coord, err)
	}
	out := s.app.public()
	if postrmErr != nil {
		return &out, fmt.Errorf("%s %s: installed, but postrm of %s: %w", s.action, coord, s.old.Version, postrmErr)
	}
	return &out, nil
}

// newStep validates t and prepares the step; a no-op returns the
// installed app instead.
func (e *Engine) newStep(t Target) (*step, *api.InstalledApp, error) {
	m := t.Manifest
	if m == nil {
		return nil, nil, fmt.Errorf("apply: no manifest")
	}
	c := m.Coordinate()
	// The server's checks at push, exactly (pkgfile.ValidateManifest):
	// coordinate, scripts, digests, paths, types, symlinks.
	tree, err := selectTree(m, t.Have)
	if err != nil {
		return nil, nil, fmt.Errorf("apply %s: %w", c, err)
	}
	templates, err := e.keepTemplates(m, t.Templates)
	if err != nil {
		return nil, nil, fmt.Errorf("apply %s: %w", c, err)
	}
	tree = withTemplates(tree, templates)
	if !api.ValidDigest(t.Digest) {
		return nil, nil, fmt.Errorf("apply %s: digest %q is not a hex SHA-256", c, t.Digest)
	}
	if t.Instance != "" && !api.ValidName(t.Instance) {
		return nil, nil, fmt.Errorf("apply %s: instance %q: want letters, digits, '.', '-' and '_'", c, t.Instance)
	}
	mode := m.Install
	if mode == "" {
		mode = api.InstallPrefix
	}
	if mode != api.InstallPrefix && mode != api.InstallRoot {
		return nil, nil, fmt.Errorf("apply %s: install mode %q: want prefix or root", c, mode)
	}
	if mode == api.InstallPrefix && e.cfg.SoftwareRoot == "" {
		return nil, nil, fmt.Errorf("apply %s: prefix mode needs a software root", c)
	}
	have := api.NormalizeTags(t.Have)
	s := &step{t: t, m: m, tree: tree, action: "install"}
	name := c.PackageName()
	if cur := e.state.find(name, t.Instance); cur != nil {
		if cur.Install != mode {
			return nil, nil, fmt.Errorf("apply %s: install mode changes from %s to %s: remove %s first", c, cur.Install, mode, cur.label())
		}
		oldM, err := e.loadManifest(cur.Digest)
		if err != nil {
			return nil, nil, fmt.Errorf("apply %s: installed build: %w", c, err)
		}
		oldTree, err := appTree(oldM, cur.Have, cur.Templates)
		if err != nil {
			return nil, nil, fmt.Errorf("apply %s: installed build: %w", c, err)
		}
		if cur.Digest == t.Digest && sameTree(tree, oldTree) {
			if !slices.Equal(cur.Tags, t.Tags) {
				next := e.state.clone()
				next.find(name, t.Instance).Tags = slices.Clone(t.Tags)
				if err := next.write(e.cfg.StateDir); err != nil {
					return nil, nil, err
				}
				e.state = next
				cur = next.find(name, t.Instance)
			}
			out := cur.public()
			return nil, &out, nil
		}
		s.old, s.oldM, s.oldTree = cur.clone(), oldM, oldTree
		// The plan decides the kind; the engine only checks it fits.
		switch a := plan.Action(t.Action); a {
		case plan.Upgrade, plan.Downgrade, plan.Reinstall:
			s.action = string(a)
		case "", plan.Install:
			s.action = string(plan.Change(cur.Version, m.Version))
		default:
			return nil, nil, fmt.Errorf("apply %s: step kind %q: want install, upgrade, downgrade or reinstall", c, t.Action)
		}
	} else if t.Action != "" && plan.Action(t.Action) != plan.Install {
		e.log.Warn("nothing installed: the step is an install", "package", c.String(), "action", t.Action)
	}
	s.app = &appState{
		Name: name, Version: m.Version, Digest: t.Digest, Tags: slices.Clone(t.Tags),
		Instance: t.Instance, Install: mode, Have: have, Params: t.Params, Templates: templates,
	}
	if s.old != nil {
		s.app.Previous = &prevState{Version: s.old.Version, Digest: s.old.Digest, Prefix: s.old.Prefix, Have: s.old.Have, Templates: s.old.Templates}
	}
	return s, nil, nil
}

// public is the app as the agent reports it.
func (a *appState) public() api.InstalledApp {
	out := api.InstalledApp{
		Name: a.Name, Version: a.Version, Tags: slices.Clone(a.Tags), Digest: a.Digest,
		Instance: a.Instance, Install: a.Install,
	}
	if out.Tags == nil {
		out.Tags = []string{}
	}
	if a.Previous != nil {
		out.Previous = a.Previous.Version
	}
	return out
}

// run runs a script of build (app, m) for the step s.
func (e *Engine) run(ctx context.Context, s *step, script string, app *appState, m *api.Manifest, cwd string) error {
	r := scriptRun{app: app, m: m, script: script, cwd: cwd, version: s.app.Version, action: s.action, params: s.t.Params}
	if s.old != nil {
		r.oldVersion = s.old.Version
	}
	return e.runScript(ctx, r)
}

// Remove runs prerm, removes every file the app owns, then postrm. A
// failing prerm leaves the app installed. A failing postrm is returned,
// but the app is gone.
func (e *Engine) Remove(ctx context.Context, name, instance string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.ready(); err != nil {
		return err
	}
	app := e.state.find(name, instance)
	if app == nil {
		return fmt.Errorf("remove %s: %w", name, ErrNotInstalled)
	}
	app = app.clone()
	m, err := e.loadManifest(app.Digest)
	if err != nil {
		// Without its manifest the app can still go: state.json lists
		// what it owns. Its scripts are lost with the manifest.
		e.log.Warn("removing without the kept manifest: no scripts run", "package", app.label(), "err", err)
		g, n, perr := api.ParsePackageName(app.Name)
		if perr != nil {
			return fmt.Errorf("remove %s: %w", app.label(), err)
		}
		m = &api.Manifest{Group: g, Name: n, Version: app.Version, Install: app.Install}
	}
	coord := m.Coordinate().String()
	r := scriptRun{app: app, m: m, version: app.Version, action: "remove", params: app.Params}
	r.script, r.cwd = "prerm", app.Prefix
	if err := e.runScript(ctx, r); err != nil {
		return fmt.Errorf("remove %s: %w", coord, err)
	}
	if err := e.point("prerm"); err != nil {
		return err
	}
	if err := e.removeDebs(ctx, app, m); err != nil { // debs.go
		return fmt.Errorf("remove %s: %w", coord, err)
	}
	j := &journal{Op: opRemove, Mode: app.Install, Phase: phaseCommit, Action: "remove", Package: coord, OldDigest: app.Digest, Old: app}
	if app.Install == api.InstallRoot {
		tree, err := appTree(m, app.Have, app.Templates)
		if err != nil {
			return fmt.Errorf("remove %s: %w", coord, err)
		}
		if err := e.planRemoveRoot(j, tree); err != nil {
			return fmt.Errorf("remove %s: %w", coord, err)
		}
	} else {
		pkgDir, err := PackageDir(e.cfg.SoftwareRoot, app.Name, app.Instance)
		if err != nil {
			return fmt.Errorf("remove %s: %w", coord, err)
		}
		j.PkgDir = pkgDir
	}
	if err := e.writeJournal(j); err != nil {
		return fmt.Errorf("remove %s: %w", coord, err)
	}
	if err := e.point("journal-committed"); err != nil {
		return err
	}
	e.log.Info("removing", "package", coord)
	postrm := func() error {
		r.script, r.cwd = "postrm", e.cfg.Root
		if app.Install == api.InstallPrefix {
			r.cwd = j.PkgDir
		}
		return e.runScript(ctx, r)
	}
	if err := e.finishRemove(j, postrm); err != nil {
		if e.dead {
			return err
		}
		return fmt.Errorf("remove %s: %w", coord, err)
	}
	return nil
}

// finishRemove removes the app's files and state entry, runs postrm (if
// given: not on recovery), and drops the journal. Every part is
// idempotent, so Recover simply calls it again.
func (e *Engine) finishRemove(j *journal, postrm func() error) error {
	var err error
	if j.Mode == api.InstallRoot {
		err = e.removeRootFiles(j)
	} else {
		err = e.removePrefixFiles(j)
	}
	if err != nil {
		return err
	}
	next := e.state.clone()
	next.drop(j.Old.Name, j.Old.Instance)
	if err := next.write(e.cfg.StateDir); err != nil {
		return err
	}
	e.state = next
	if err := e.point("state-written"); err != nil {
		return err
	}
	var scriptErr error
	if postrm != nil {
		scriptErr = postrm()
		if err := e.point("postrm"); err != nil {
			return err
		}
	}
	if j.Mode == api.InstallPrefix {
		if err := rmdirUp(j.PkgDir, e.cfg.SoftwareRoot); err != nil {
			return err
		}
	}
	if err := e.deleteJournal(); err != nil {
		return err
	}
	if err := e.gcBuilds(); err != nil {
		e.log.Warn("removing kept builds", "err", err)
	}
	if err := e.point("done"); err != nil {
		return err
	}
	return scriptErr
}

// Installed lists the installed apps, sorted by name and instance.
func (e *Engine) Installed() []api.InstalledApp {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]api.InstalledApp, 0, len(e.state.Apps))
	for _, a := range e.state.Apps {
		out = append(out, a.public())
	}
	return out
}

// Location returns the install location of an installed app: its
// version folder (prefix mode) or the root (root mode).
func (e *Engine) Location(name, instance string) (string, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if a := e.state.find(name, instance); a != nil {
		return a.Prefix, true
	}
	return "", false
}

// Manifest returns the manifest of an installed or previous build.
func (e *Engine) Manifest(digest string) (*api.Manifest, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.loadManifest(digest)
}

// Referenced lists, sorted, the blob digests (files, scripts, templates)
// of every installed and previous build, so the agent's cache GC keeps
// them: they are what a rollback or a root-mode restore reads.
func (e *Engine) Referenced() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	seen := map[string]bool{}
	add := func(digest string) {
		m, err := e.loadManifest(digest)
		if err != nil {
			e.log.Warn("kept manifest missing", "digest", digest, "err", err)
			return
		}
		for _, d := range m.Digests() {
			seen[d] = true
		}
	}
	for _, a := range e.state.Apps {
		add(a.Digest)
		if a.Previous != nil {
			add(a.Previous.Digest)
		}
	}
	out := make([]string, 0, len(seen))
	for d := range seen {
		out = append(out, d)
	}
	slices.Sort(out)
	return out
}
