package install

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/Masterminds/semver/v3"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/atomicfile"
	"github.com/drover-dev/drover/internal/pkgfile"
)

// applyPrefix runs a prefix-mode step: new preinst, unpack into a hidden
// sibling folder, make it durable, rename it to its version folder, old
// prerm, switch `current`, new postinst and configure, state, old
// postrm, GC. The first error is err; postrmErr is a failing postrm of
// the old build, after which the new one stays installed.
func (e *Engine) applyPrefix(ctx context.Context, s *step) (postrmErr, err error) {
	pkgDir, err := PackageDir(e.cfg.SoftwareRoot, s.app.Name, s.app.Instance)
	if err != nil {
		return nil, err
	}
	j := &journal{
		Op: opApply, Mode: api.InstallPrefix, Phase: phaseStaging, Action: s.action,
		Package: s.m.Coordinate().String(), NewDigest: s.t.Digest, Old: s.old, New: s.app, PkgDir: pkgDir,
	}
	if s.old != nil {
		j.OldDigest = s.old.Digest
	}
	// A rollback to the kept previous build reuses its folder: no
	// unpacking, no blob needed.
	if p := prevOf(s.old); p != nil && p.Digest == s.t.Digest && p.Prefix != "" &&
		sameTree(s.tree, withTemplates(pkgfile.Tree(s.m, p.Have), p.Templates)) && isDir(p.Prefix) {
		j.Dest, j.Reuse = p.Prefix, true
	} else {
		if j.Dest, err = freeName(pkgDir, s.m.Version, s.t.Digest); err != nil {
			return nil, err
		}
		j.Partial = filepath.Join(pkgDir, "."+s.m.Version+".partial-"+randSuffix())
	}
	s.app.Prefix = j.Dest
	if err := e.writeJournal(j); err != nil {
		return nil, err
	}
	if err := e.point("journal-staging"); err != nil {
		return nil, err
	}
	// preinst of a fresh version runs before unpacking, in the package
	// folder; of a reused folder, in that folder.
	if err := os.MkdirAll(pkgDir, 0o755); err != nil {
		return nil, e.undoStaging(j, err)
	}
	cwd := pkgDir
	if j.Reuse {
		cwd = j.Dest
	}
	if err := e.run(ctx, s, "preinst", s.app, s.m, cwd); err != nil {
		return nil, e.undoStaging(j, err)
	}
	if err := e.point("preinst"); err != nil {
		return nil, err
	}
	if !j.Reuse {
		if err := e.unpack(ctx, s.tree, j.Partial, s.t.Progress); err != nil {
			return nil, e.undoStaging(j, err)
		}
		if err := e.point("unpacked"); err != nil {
			return nil, err
		}
		// The data must be on disk before anything points at it.
		if err := e.durable(j.Partial, s.tree); err != nil {
			return nil, e.undoStaging(j, err)
		}
		if err := e.point("synced"); err != nil {
			return nil, err
		}
		if err := os.Rename(j.Partial, j.Dest); err != nil {
			return nil, e.undoStaging(j, err)
		}
		if err := atomicfile.SyncDir(pkgDir); err != nil {
			return nil, e.undoStaging(j, err)
		}
		if err := e.point("staged"); err != nil {
			return nil, err
		}
	}
	if err := e.retireOld(ctx, s, j); err != nil {
		return nil, err
	}
	if err := switchCurrent(pkgDir, filepath.Base(j.Dest)); err != nil {
		return nil, e.undo(ctx, j, err)
	}
	if err := e.point("switched"); err != nil {
		return nil, err
	}
	if err := e.setPhase(j, phaseSwitched); err != nil {
		return nil, e.undo(ctx, j, err)
	}
	if err := e.point("journal-switched"); err != nil {
		return nil, err
	}
	if err := e.configure(ctx, s, j.Dest); err != nil {
		return nil, e.undo(ctx, j, err)
	}
	if err := e.setPhase(j, phaseConfigured); err != nil {
		return nil, e.undo(ctx, j, err)
	}
	if err := e.point("journal-configured"); err != nil {
		return nil, err
	}
	return e.finishApply(ctx, j, s)
}

func prevOf(a *appState) *prevState {
	if a == nil {
		return nil
	}
	return a.Previous
}

func isDir(p string) bool {
	fi, err := os.Lstat(p)
	return err == nil && fi.IsDir()
}

// freeName picks the new version folder: <version>, or, when another
// build of the same version holds that name, <version>+<digest prefix>
// (semver build metadata), so the folder `current` points at is never
// written to.
func freeName(pkgDir, version, digest string) (string, error) {
	cands := []string{version, version + "+" + digest[:12]}
	for n := 2; n < 100; n++ {
		cands = append(cands, version+"+"+digest[:12]+"."+strconv.Itoa(n))
	}
	for _, c := range cands {
		p := filepath.Join(pkgDir, c)
		ok, err := exists(p)
		if err != nil {
			return "", err
		}
		if !ok {
			return p, nil
		}
	}
	return "", fmt.Errorf("no free version folder for %s in %s", version, pkgDir)
}

// unpack writes the tree into dir, which must not exist.
func (e *Engine) unpack(ctx context.Context, tree []api.File, dir string, progress func(int, int, int64, int64)) error {
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	var dirs []api.File
	var files []copyJob
	for _, f := range tree {
		if err := ctx.Err(); err != nil {
			return err
		}
		// The tree is checked: every ancestor is a directory we made, so
		// no write here goes through a symlink.
		p := filepath.Join(dir, filepath.FromSlash(f.Path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		switch f.Type {
		case api.TypeDir:
			if err := os.Mkdir(p, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
				return err
			}
			dirs = append(dirs, f)
		case api.TypeFile:
			files = append(files, copyJob{f: f, dst: p})
		case api.TypeSymlink:
			if err := os.Symlink(f.Target, p); err != nil {
				return err
			}
		default:
			return fmt.Errorf("path %q: type %q is not supported", f.Path, f.Type)
		}
	}
	// One crash point mid-way stands for them all: recovery treats any
	// part of the staging alike.
	if err := e.point("unpack-1"); err != nil {
		return err
	}
	if err := writeBlobs(ctx, engineBlobs{e}, files, e.syncEach, progress); err != nil {
		return err
	}
	// Modes last: a read-only directory must first receive its files.
	for _, f := range dirs {
		if err := os.Chmod(filepath.Join(dir, filepath.FromSlash(f.Path)), os.FileMode(f.Mode&0o777)); err != nil {
			return err
		}
	}
	return nil
}

// durable makes an unpacked folder durable: one syncfs of its
// filesystem, or (syncEach) an fsync of each directory after the
// per-file fsyncs of unpack.
func (e *Engine) durable(dir string, tree []api.File) error {
	if !e.syncEach {
		return syncFS([]string{dir}, false)
	}
	dirs := []string{dir}
	for d := range neededDirs(tree) {
		dirs = append(dirs, filepath.Join(dir, filepath.FromSlash(d)))
	}
	return syncFS(dirs, true)
}

// switchCurrent points pkgDir/current at name: a new symlink renamed
// over the old one, so any reader sees the old or the new target.
func switchCurrent(pkgDir, name string) error {
	tmp := filepath.Join(pkgDir, ".current.tmp-"+randSuffix())
	if err := os.Symlink(name, tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(pkgDir, "current")); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return atomicfile.SyncDir(pkgDir)
}

// configure runs postinst, the Configure hook and the configure script
// of the new build.
func (e *Engine) configure(ctx context.Context, s *step, loc string) error {
	if err := e.run(ctx, s, "postinst", s.app, s.m, loc); err != nil {
		return err
	}
	if err := e.point("postinst"); err != nil {
		return err
	}
	if s.t.Configure != nil {
		if err := s.t.Configure(ctx, loc); err != nil {
			return fmt.Errorf("configure: %w", err)
		}
	}
	if err := e.run(ctx, s, "configure", s.app, s.m, loc); err != nil {
		return err
	}
	return e.point("configure")
}

// undoStaging answers a failure before the switch: staged content goes,
// the old build was never touched. After a simulated crash it does
// nothing, as a dead process would.
func (e *Engine) undoStaging(j *journal, cause error) error {
	if e.dead {
		return cause
	}
	var err error
	if j.Mode == api.InstallRoot {
		err = e.rollbackStagingRoot(j)
	} else {
		err = e.rollbackStagingPrefix(j)
	}
	if e.dead {
		return err
	}
	if err != nil {
		return fmt.Errorf("%w (and undoing the step: %v)", cause, err)
	}
	return cause
}

// undo answers a failure after the switch began: back to the old build.
func (e *Engine) undo(ctx context.Context, j *journal, cause error) error {
	if e.dead {
		return cause
	}
	if err := e.rollback(ctx, j); err != nil {
		if e.dead {
			return err
		}
		return fmt.Errorf("%w (and rolling back: %v)", cause, err)
	}
	return cause
}

func (e *Engine) rollback(ctx context.Context, j *journal) error {
	if j.Mode == api.InstallRoot {
		return e.rollbackRoot(ctx, j)
	}
	return e.rollbackPrefix(j)
}

// rollbackStagingPrefix removes the staging and new version folders.
func (e *Engine) rollbackStagingPrefix(j *journal) error {
	if j.Partial != "" {
		if err := os.RemoveAll(j.Partial); err != nil {
			return err
		}
	}
	if err := e.removeNewDest(j); err != nil {
		return err
	}
	if err := e.point("unstaged"); err != nil {
		return err
	}
	if err := e.dropFreshPkgDir(j); err != nil {
		return err
	}
	if err := e.deleteJournal(); err != nil {
		return err
	}
	return e.gcBuilds()
}

// removeNewDest removes the step's new version folder unless it is one
// the old state refers to (a reused previous folder).
func (e *Engine) removeNewDest(j *journal) error {
	if j.Reuse || j.Dest == "" {
		return nil
	}
	if o := j.Old; o != nil && (o.Prefix == j.Dest || o.Previous != nil && o.Previous.Prefix == j.Dest) {
		return nil
	}
	return os.RemoveAll(j.Dest)
}

// rollbackPrefix puts `current` back on the old version folder (or
// removes it after a fresh install), removes the new folder and
// restores the old state entry. Idempotent: Recover repeats it.
func (e *Engine) rollbackPrefix(j *journal) error {
	if j.Phase != phaseRollback {
		if err := e.setPhase(j, phaseRollback); err != nil {
			return err
		}
		if err := e.point("rollback-journal"); err != nil {
			return err
		}
	}
	if j.Old != nil {
		if err := switchCurrent(j.PkgDir, filepath.Base(j.Old.Prefix)); err != nil {
			return err
		}
	} else if isDir(j.PkgDir) {
		if err := removeIfExists(filepath.Join(j.PkgDir, "current")); err != nil {
			return err
		}
		if err := atomicfile.SyncDir(j.PkgDir); err != nil {
			return err
		}
	}
	if err := e.point("rollback-switched"); err != nil {
		return err
	}
	if j.Partial != "" {
		if err := os.RemoveAll(j.Partial); err != nil {
			return err
		}
	}
	if err := e.removeNewDest(j); err != nil {
		return err
	}
	if err := e.dropFreshPkgDir(j); err != nil {
		return err
	}
	return e.restoreOldState(j)
}

// dropFreshPkgDir removes, after a fresh install is undone, what the
// engine made in the package folder (a temp symlink a crash left, say)
// and the folder itself with its parents while they are empty.
func (e *Engine) dropFreshPkgDir(j *journal) error {
	if j.Old != nil {
		return nil
	}
	ents, err := os.ReadDir(j.PkgDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, de := range ents {
		if n := de.Name(); n == "current" || ours(n) {
			if err := os.RemoveAll(filepath.Join(j.PkgDir, n)); err != nil {
				return err
			}
		}
	}
	return rmdirUp(j.PkgDir, e.cfg.SoftwareRoot)
}

// restoreOldState makes state.json hold the old entry again and closes
// the journal.
func (e *Engine) restoreOldState(j *journal) error {
	next := e.state.clone()
	if j.Old != nil {
		next.put(j.Old.clone())
	} else {
		next.drop(j.New.Name, j.New.Instance)
	}
	if err := next.write(e.cfg.StateDir); err != nil {
		return err
	}
	e.state = next
	if err := e.point("rollback-state"); err != nil {
		return err
	}
	if err := e.deleteJournal(); err != nil {
		return err
	}
	if err := e.gcBuilds(); err != nil {
		e.log.Warn("removing kept builds", "err", err)
	}
	return e.point("rollback-done")
}

// finishApply rolls a configured step forward: state.json gets the new
// build, the old build's postrm runs (live steps only: s != nil), old
// version folders and kept builds are collected, the journal goes.
func (e *Engine) finishApply(ctx context.Context, j *journal, s *step) (postrmErr, err error) {
	next := e.state.clone()
	next.put(j.New.clone())
	if err := next.write(e.cfg.StateDir); err != nil {
		return nil, err
	}
	e.state = next
	if err := e.point("state-written"); err != nil {
		return nil, err
	}
	if s != nil && s.old != nil {
		postrmErr = e.run(ctx, s, "postrm", s.old, s.oldM, s.old.Prefix)
		if err := e.point("postrm"); err != nil {
			return nil, err
		}
	}
	if j.Mode == api.InstallPrefix {
		if err := e.gcVersions(j.PkgDir, j.New); err != nil {
			e.log.Warn("removing old version folders", "package", j.Package, "err", err)
		}
		if err := e.point("gc"); err != nil {
			return nil, err
		}
	}
	if err := e.deleteJournal(); err != nil {
		return nil, err
	}
	if err := e.gcBuilds(); err != nil {
		e.log.Warn("removing kept builds", "err", err)
	}
	if err := e.point("done"); err != nil {
		return nil, err
	}
	e.log.Info("applied", "package", j.Package, "digest", j.NewDigest)
	return postrmErr, nil
}

// gcVersions removes, in a package folder, every version folder but the
// app's current and previous ones, and staging leftovers. Only names
// that are versions (or our hidden temp names) are touched: a nested
// package folder (group com.example.foo inside package com.example:foo)
// is never a version.
func (e *Engine) gcVersions(pkgDir string, app *appState) error {
	keep := map[string]bool{"current": true, filepath.Base(app.Prefix): true}
	if app.Previous != nil && app.Previous.Prefix != "" {
		keep[filepath.Base(app.Previous.Prefix)] = true
	}
	ents, err := os.ReadDir(pkgDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, de := range ents {
		n := de.Name()
		if keep[n] || !ours(n) {
			continue
		}
		errs = append(errs, os.RemoveAll(filepath.Join(pkgDir, n)))
	}
	return errors.Join(errs...)
}

// ours reports whether a name in a package folder is one the engine
// makes: a version folder or a hidden temp name.
func ours(n string) bool {
	if strings.HasPrefix(n, ".") {
		return strings.Contains(n, ".partial-") || strings.HasPrefix(n, ".current.tmp-")
	}
	_, err := semver.StrictNewVersion(n)
	return err == nil
}

// removePrefixFiles takes a prefix-mode app off the disk: `current`
// first (the app is gone at once), then its version folders.
func (e *Engine) removePrefixFiles(j *journal) error {
	if !isDir(j.PkgDir) {
		return nil
	}
	if err := removeIfExists(filepath.Join(j.PkgDir, "current")); err != nil {
		return err
	}
	if err := atomicfile.SyncDir(j.PkgDir); err != nil {
		return err
	}
	if err := e.point("removed-current"); err != nil {
		return err
	}
	ents, err := os.ReadDir(j.PkgDir)
	if err != nil {
		return err
	}
	for _, de := range ents {
		if ours(de.Name()) {
			if err := os.RemoveAll(filepath.Join(j.PkgDir, de.Name())); err != nil {
				return err
			}
		}
	}
	if err := atomicfile.SyncDir(j.PkgDir); err != nil {
		return err
	}
	return e.point("removed-files")
}
