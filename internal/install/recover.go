package install

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/drover-dev/drover/internal/api"
)

// Recover finishes or undoes a step a crash interrupted, as its journal
// says (docs/install.md):
//
//   - staging: the staged content is removed; the old build was never
//     touched.
//   - commit, switched, rollback: the step is rolled back to the old
//     build (prefix: `current` back; root: old content back from the
//     blob cache, new-only paths removed). A build whose postinst and
//     configure did not both finish is never left installed; the agent
//     re-plans and runs the whole step again, scripts included.
//   - configured: rolled forward (state, GC). The old build's postrm,
//     if it had not run, is not run.
//   - a removal in any phase: rolled forward; postrm is not run.
//
// Then it removes staging leftovers, version folders that are neither
// current nor previous, and kept manifests and scripts of builds no
// longer installed. Recover is idempotent and crash-safe itself: its
// steps are the same idempotent ones, so a crash during Recover and
// another Recover still converge.
func (e *Engine) Recover(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.dead {
		return ErrCrash
	}
	e.recovering = true
	defer func() { e.recovering = false }()

	st, err := loadState(filepath.Join(e.cfg.StateDir, "state.json"))
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	e.state = st
	removeTemps(e.cfg.StateDir)
	removeTemps(filepath.Join(e.cfg.StateDir, "manifests"))

	j, err := e.readJournal()
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return fmt.Errorf("recover: %w", err)
	default:
		e.log.Warn("recovering an interrupted step", "package", j.Package, "op", j.Op, "phase", j.Phase)
		if err := e.recoverStep(ctx, j); err != nil {
			if e.dead {
				return err
			}
			return fmt.Errorf("recover %s %s: %w", j.Action, j.Package, err)
		}
	}

	var errs []error
	for _, a := range e.state.Apps {
		if a.Install != api.InstallPrefix {
			continue
		}
		pkgDir, err := PackageDir(e.cfg.SoftwareRoot, a.Name, a.Instance)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		errs = append(errs, e.gcVersions(pkgDir, a))
	}
	errs = append(errs, e.gcBuilds())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	return nil
}

func (e *Engine) recoverStep(ctx context.Context, j *journal) error {
	if j.Op == opRemove {
		return e.finishRemove(j, nil)
	}
	if j.Op != opApply || j.New == nil {
		return fmt.Errorf("journal: unknown op %q", j.Op)
	}
	switch j.Phase {
	case phaseStaging:
		if j.Mode == api.InstallRoot {
			return e.rollbackStagingRoot(j)
		}
		return e.rollbackStagingPrefix(j)
	case phaseCommit, phaseSwitched, phaseRollback:
		if err := e.recoverDebs(ctx, j); err != nil { // debs.go
			return err
		}
		return e.rollback(ctx, j)
	case phaseConfigured:
		_, err := e.finishApply(ctx, j, nil)
		return err
	}
	return fmt.Errorf("journal: unknown phase %q", j.Phase)
}

// removeTemps removes the temp files atomicWrite leaves when a crash
// comes between create and rename.
func removeTemps(dir string) {
	ents, _ := os.ReadDir(dir)
	for _, de := range ents {
		if n := de.Name(); strings.HasPrefix(n, ".") && strings.Contains(n, ".tmp-") {
			_ = os.Remove(filepath.Join(dir, n))
		}
	}
}
