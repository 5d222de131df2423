package install

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"

	"github.com/drover-dev/drover/internal/api"
)

// applyRoot runs a root-mode step: conflict check, new preinst, plan and
// journal, staged copies beside their targets, durable, old prerm,
// commit (renames, obsolete files out), new postinst and configure,
// state, old postrm.
func (e *Engine) applyRoot(ctx context.Context, s *step) (postrmErr, err error) {
	s.app.Prefix = e.cfg.Root
	// Conflicts are refused before any script runs.
	if _, _, err := e.planRoot(s); err != nil {
		return nil, err
	}
	if err := e.run(ctx, s, "preinst", s.app, s.m, e.cfg.Root); err != nil {
		return nil, err
	}
	if err := e.point("preinst"); err != nil {
		return nil, err
	}
	// Plan again: preinst may have changed the disk.
	j, modes, err := e.planRoot(s)
	if err != nil {
		return nil, err
	}
	if err := e.writeJournal(j); err != nil {
		return nil, err
	}
	if err := e.point("journal-staging"); err != nil {
		return nil, err
	}
	if err := e.stageRoot(ctx, j, s.tree, modes, s.t.Progress); err != nil {
		return nil, e.undoStaging(j, err)
	}
	if err := e.point("unpacked"); err != nil {
		return nil, err
	}
	if err := syncFS(rootDirs(e.cfg.Root, j), e.syncEach); err != nil {
		return nil, e.undoStaging(j, err)
	}
	if err := e.point("synced"); err != nil {
		return nil, err
	}
	if err := e.retireOld(ctx, s, j); err != nil {
		return nil, err
	}
	if err := e.commitRoot(j); err != nil {
		return nil, e.undo(ctx, j, err)
	}
	if err := syncFS(rootDirs(e.cfg.Root, j), e.syncEach); err != nil {
		return nil, e.undo(ctx, j, err)
	}
	if err := e.setPhase(j, phaseSwitched); err != nil {
		return nil, e.undo(ctx, j, err)
	}
	if err := e.point("journal-switched"); err != nil {
		return nil, err
	}
	if err := e.configureRoot(ctx, s, j); err != nil { // debs.go
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

// resolve returns the on-disk path of rel under the root: its parent
// resolved with SecureJoin (a symlink on disk never leads out of the
// root), its last element not followed (a rename replaces a symlink
// there, it never writes through it).
func (e *Engine) resolve(rel string) (string, error) {
	parent := e.cfg.Root
	if d := path.Dir(rel); d != "." {
		var err error
		if parent, err = securejoin.SecureJoin(e.cfg.Root, d); err != nil {
			return "", fmt.Errorf("resolve %s: %w", rel, err)
		}
	}
	return filepath.Join(parent, path.Base(rel)), nil
}

// sideName is a name beside base for staged content: ".drover-new.base"
// (or ".drover-old.base" for a restore), hashed when too long.
func sideName(kind, base string) string {
	n := ".drover-" + kind + "." + base
	if len(n) > 255 {
		h := sha256.Sum256([]byte(base))
		n = ".drover-" + kind + "." + hex.EncodeToString(h[:8])
	}
	return n
}

// planRoot checks the new tree against the disk and the other apps and
// returns the journal of the step (phase staging) and the modes of the
// directories it will create.
func (e *Engine) planRoot(s *step) (*journal, map[string]uint32, error) {
	root := e.cfg.Root
	// Owners by path and by where the path is on disk: two names can
	// be one file when an on-disk symlink aliases a directory.
	owners := map[string]string{}
	for _, a := range e.state.Apps {
		if a.key() == s.app.key() || a.Install != api.InstallRoot {
			continue
		}
		for _, p := range a.Paths {
			owners[p] = a.label()
			if t, err := e.resolve(p); err == nil {
				owners[t] = a.label()
			}
		}
	}
	targets := map[string]string{} // on-disk target -> new path
	oldBy := map[string]api.File{}
	for _, f := range s.oldTree {
		oldBy[f.Path] = f
	}
	var oldOwned, oldDirs map[string]bool
	if s.old != nil {
		oldOwned, oldDirs = set(s.old.Paths), set(s.old.Dirs)
	}
	j := &journal{
		Op: opApply, Mode: api.InstallRoot, Phase: phaseStaging, Action: s.action,
		Package: s.m.Coordinate().String(), NewDigest: s.t.Digest, Old: s.old, New: s.app,
	}
	if s.old != nil {
		j.OldDigest = s.old.Digest
	}

	// Directories, parents first.
	need := neededDirs(s.tree)
	dirModes := map[string]uint32{}
	for _, f := range s.tree {
		if f.Type == api.TypeDir {
			dirModes[f.Path] = f.Mode & 0o777
		}
	}
	// A listed directory may resolve elsewhere inside the root (an
	// on-disk symlink above it); what counts is the physical path
	// relative to the root, and every missing directory on it.
	modes := map[string]uint32{}
	phys := map[string]bool{}
	var created []string
	for _, d := range sortedKeys(need) {
		full, err := securejoin.SecureJoin(root, d)
		if err != nil {
			return nil, nil, fmt.Errorf("resolve %s: %w", d, err)
		}
		rel, err := filepath.Rel(root, full)
		if err != nil || rel == "." || strings.HasPrefix(rel, "..") {
			return nil, nil, fmt.Errorf("%s: resolves to the root itself: %w", d, ErrConflict)
		}
		for _, a := range ancestorsTopDown(filepath.ToSlash(rel)) {
			if phys[a] {
				continue
			}
			phys[a] = true
			p := filepath.Join(root, filepath.FromSlash(a))
			fi, err := os.Lstat(p)
			switch {
			case errors.Is(err, fs.ErrNotExist):
				j.CreatedDirs = append(j.CreatedDirs, p)
				created = append(created, a)
				mode, ok := dirModes[d]
				if !ok || a != filepath.ToSlash(rel) {
					mode = 0o755
				}
				modes[p] = mode
			case err != nil:
				return nil, nil, err
			case !fi.IsDir():
				return nil, nil, fmt.Errorf("%s: exists and is not a directory: %w", a, ErrConflict)
			}
		}
	}
	newDirs := set(created)
	for d := range oldDirs {
		if phys[d] {
			newDirs[d] = true
		}
	}

	// Files and symlinks.
	var paths []string
	for _, f := range s.tree {
		if f.Type == api.TypeDir {
			continue
		}
		paths = append(paths, f.Path)
		if o, ok := owners[f.Path]; ok {
			return nil, nil, fmt.Errorf("%s is owned by %s: %w", f.Path, o, ErrConflict)
		}
		target, err := e.resolve(f.Path)
		if err != nil {
			return nil, nil, err
		}
		if o, ok := owners[target]; ok {
			return nil, nil, fmt.Errorf("%s is on disk a file owned by %s: %w", f.Path, o, ErrConflict)
		}
		if p, ok := targets[target]; ok {
			return nil, nil, fmt.Errorf("%s and %s are one file on disk: %w", p, f.Path, ErrConflict)
		}
		targets[target] = f.Path
		if f.Type == api.TypeSymlink {
			// The link must stay inside the root from where it really
			// is, which an on-disk symlink above it may have moved.
			rel, err := filepath.Rel(root, filepath.Dir(target))
			if err != nil {
				return nil, nil, err
			}
			d := 0
			if rel != "." {
				d = strings.Count(rel, string(filepath.Separator)) + 1
			}
			if linkUps(f.Target) > d {
				return nil, nil, fmt.Errorf("symlink %s: target %q leaves the root", f.Path, f.Target)
			}
		}
		ent := rootEntry{Path: f.Path, Target: target, Staged: filepath.Join(filepath.Dir(target), sideName("new", filepath.Base(target)))}
		fi, lerr := os.Lstat(target)
		if lerr != nil && !errors.Is(lerr, fs.ErrNotExist) {
			return nil, nil, lerr
		}
		if lerr == nil && fi.IsDir() {
			return nil, nil, fmt.Errorf("%s: a directory is in the way: %w", f.Path, ErrConflict)
		}
		switch {
		case oldOwned[f.Path]:
			of := oldBy[f.Path]
			ent.Owned = true
			if of.Type == api.TypeFile {
				ent.OldDigest = of.Digest
			}
			if lerr == nil && sameContent(of, f) {
				continue // unchanged: an upgrade moves only what changed
			}
		case lerr == nil:
			same, err := matches(target, fi, f)
			if err != nil {
				return nil, nil, err
			}
			if !same {
				return nil, nil, fmt.Errorf("%s exists, is not drover's and differs: %w", f.Path, ErrConflict)
			}
			ent.Adopted = true
		}
		j.Entries = append(j.Entries, ent)
	}
	newFiles := set(paths)

	// What the old build owned and the new one does not.
	if s.old != nil {
		for _, p := range s.old.Paths {
			if newFiles[p] {
				continue
			}
			target, err := e.resolve(p)
			if err != nil {
				return nil, nil, err
			}
			if _, ok := targets[target]; ok {
				continue // the same file on disk is a new path now: keep it
			}
			ent := rootEntry{Path: p, Target: target, Owned: true}
			if of := oldBy[p]; of.Type == api.TypeFile {
				ent.OldDigest = of.Digest
			}
			j.Obsolete = append(j.Obsolete, ent)
		}
		obs := []string{}
		for _, d := range s.old.Dirs {
			if !phys[d] {
				obs = append(obs, d)
			}
		}
		dirs, err := e.resolveDirsDeepFirst(obs)
		if err != nil {
			return nil, nil, err
		}
		j.ObsoleteDirs = dirs
	}
	slices.Sort(paths)
	s.app.Paths = paths
	s.app.Dirs = sortedKeys(newDirs)
	return j, modes, nil
}

// resolveDirsDeepFirst resolves directories under the root, children
// before their parents.
func (e *Engine) resolveDirsDeepFirst(rel []string) ([]string, error) {
	rel = slices.Clone(rel)
	slices.Sort(rel)
	slices.Reverse(rel)
	var out []string
	for _, d := range rel {
		full, err := securejoin.SecureJoin(e.cfg.Root, d)
		if err != nil {
			return nil, err
		}
		out = append(out, full)
	}
	return out, nil
}

// matches reports whether an existing path nobody owns already holds
// exactly what f would put there.
func matches(target string, fi os.FileInfo, f api.File) (bool, error) {
	switch f.Type {
	case api.TypeSymlink:
		if fi.Mode()&fs.ModeSymlink == 0 {
			return false, nil
		}
		t, err := os.Readlink(target)
		return err == nil && t == f.Target, err
	case api.TypeFile:
		if !fi.Mode().IsRegular() || fi.Size() != f.Size {
			return false, nil
		}
		d, err := fileDigest(target)
		return d == f.Digest, err
	}
	return false, nil
}

func fileDigest(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func set(xs []string) map[string]bool {
	m := make(map[string]bool, len(xs))
	for _, x := range xs {
		m[x] = true
	}
	return m
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// rootDirs lists the directories a root-mode journal touches, for
// syncFS.
func rootDirs(root string, j *journal) []string {
	seen := map[string]bool{root: true}
	out := []string{root}
	add := func(d string) {
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	for _, en := range j.Entries {
		add(filepath.Dir(en.Target))
	}
	for _, en := range j.Obsolete {
		add(filepath.Dir(en.Target))
	}
	for _, d := range j.CreatedDirs {
		add(filepath.Dir(d))
	}
	for _, d := range j.ObsoleteDirs {
		add(filepath.Dir(d))
	}
	return out
}

// stageRoot creates the missing directories and writes each changed
// entry beside its target.
func (e *Engine) stageRoot(ctx context.Context, j *journal, tree []api.File, modes map[string]uint32, progress func(int, int, int64, int64)) error {
	for _, d := range j.CreatedDirs {
		if err := os.Mkdir(d, 0o755); err != nil && !(errors.Is(err, fs.ErrExist) && isDir(d)) {
			return err
		}
	}
	if err := e.point("dirs-created"); err != nil {
		return err
	}
	by := map[string]api.File{}
	for _, f := range tree {
		by[f.Path] = f
	}
	var files []copyJob
	for i, en := range j.Entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		// One crash point mid-way (after the first entry) stands for
		// them all: recovery treats any part of the staging alike.
		if i == 1 {
			if err := e.point("stage-1"); err != nil {
				return err
			}
		}
		f := by[en.Path]
		if err := removeIfExists(en.Staged); err != nil {
			return err
		}
		switch f.Type {
		case api.TypeFile:
			files = append(files, copyJob{f: f, dst: en.Staged})
		case api.TypeSymlink:
			if err := os.Symlink(f.Target, en.Staged); err != nil {
				return err
			}
		}
	}
	if err := writeBlobs(ctx, engineBlobs{e}, files, e.syncEach, progress); err != nil {
		return err
	}
	for _, d := range j.CreatedDirs {
		if err := os.Chmod(d, os.FileMode(modes[d])); err != nil {
			return err
		}
	}
	return nil
}

// commitRoot renames the staged entries over their targets and removes
// what the old build owned and the new one does not.
func (e *Engine) commitRoot(j *journal) error {
	for i, en := range j.Entries {
		if err := os.Rename(en.Staged, en.Target); err != nil {
			return err
		}
		if err := e.point(fmt.Sprintf("renamed-%d", i)); err != nil {
			return err
		}
	}
	return e.removeObsolete(j, "obsolete")
}

// retireOld runs the old version's prerm, then marks the journal
// committed: from there on recovery finishes or undoes the step as a
// whole. Before the mark, a failure undoes the staging. Shared by both
// install modes.
func (e *Engine) retireOld(ctx context.Context, s *step, j *journal) error {
	if s.old != nil {
		if err := e.run(ctx, s, "prerm", s.old, s.oldM, s.old.Prefix); err != nil {
			return e.undoStaging(j, err)
		}
	}
	if err := e.point("prerm"); err != nil {
		return err
	}
	if err := e.setPhase(j, phaseCommit); err != nil {
		return e.undoStaging(j, err)
	}
	return e.point("journal-committed")
}

// removeObsolete deletes the paths and then the empty folders the journal
// lists as obsolete, with a crash point named point-N after each path;
// idempotent, so recovery may run it again.
func (e *Engine) removeObsolete(j *journal, point string) error {
	for i, en := range j.Obsolete {
		if err := removeIfExists(en.Target); err != nil {
			return err
		}
		if err := e.point(fmt.Sprintf("%s-%d", point, i)); err != nil {
			return err
		}
	}
	for _, d := range j.ObsoleteDirs {
		if err := rmdirEmpty(d); err != nil {
			return err
		}
	}
	return nil
}

// rollbackStagingRoot removes staged copies and the directories the step
// created; targets were never touched.
func (e *Engine) rollbackStagingRoot(j *journal) error {
	for _, en := range j.Entries {
		if err := removeIfExists(en.Staged); err != nil {
			return err
		}
	}
	if err := e.point("unstaged"); err != nil {
		return err
	}
	for _, d := range slices.Backward(j.CreatedDirs) {
		if err := rmdirEmpty(d); err != nil {
			return err
		}
	}
	if err := syncFS(rootDirs(e.cfg.Root, j), e.syncEach); err != nil {
		return err
	}
	if err := e.deleteJournal(); err != nil {
		return err
	}
	return e.gcBuilds()
}

// rollbackRoot undoes a (maybe partly) committed step: each entry whose
// staged copy still exists was never renamed, so its target is the old
// one; any other gets the old build's content back from the blob cache
// (or goes, if the old build did not have it); obsolete files come back
// the same way. Idempotent: Recover repeats it.
func (e *Engine) rollbackRoot(ctx context.Context, j *journal) error {
	if j.Phase != phaseRollback {
		if err := e.setPhase(j, phaseRollback); err != nil {
			return err
		}
		if err := e.point("rollback-journal"); err != nil {
			return err
		}
	}
	oldBy := map[string]api.File{}
	if j.Old != nil {
		m, err := e.loadManifest(j.Old.Digest)
		if err != nil {
			return err
		}
		tree, err := appTree(m, j.Old.Have, j.Old.Templates)
		if err != nil {
			return err
		}
		for _, f := range tree {
			oldBy[f.Path] = f
		}
	}
	for i, en := range j.Entries {
		staged, err := exists(en.Staged)
		if err != nil {
			return err
		}
		switch {
		case staged:
			err = removeIfExists(en.Staged)
		case en.Adopted:
		case en.Owned:
			err = e.restore(ctx, oldBy, en)
		default:
			err = removeIfExists(en.Target)
		}
		if err == nil {
			// A restore copy an earlier, interrupted attempt left.
			err = removeIfExists(oldSide(en.Target))
		}
		if err != nil {
			return err
		}
		if err := e.point(fmt.Sprintf("rollback-%d", i)); err != nil {
			return err
		}
	}
	for i, en := range j.Obsolete {
		if err := e.point(fmt.Sprintf("rollback-obsolete-%d", i)); err != nil {
			return err
		}
		// Nothing but the commit removes an obsolete path, so if it is
		// there it is the old content.
		if ok, err := exists(en.Target); err != nil {
			return err
		} else if ok {
			continue
		}
		if err := e.restore(ctx, oldBy, en); err != nil {
			return err
		}
	}
	for _, d := range slices.Backward(j.CreatedDirs) {
		if err := rmdirEmpty(d); err != nil {
			return err
		}
	}
	if err := syncFS(rootDirs(e.cfg.Root, j), e.syncEach); err != nil {
		return err
	}
	return e.restoreOldState(j)
}

// restore writes the old build's entry for en.Path at en.Target: a
// ".drover-old." copy beside it renamed over it, parents recreated if a
// commit removed them.
func (e *Engine) restore(ctx context.Context, oldBy map[string]api.File, en rootEntry) error {
	of, ok := oldBy[en.Path]
	if !ok {
		return fmt.Errorf("restore %s: not in the old build", en.Path)
	}
	if err := e.ensureParents(en.Path, oldBy); err != nil {
		return err
	}
	tmp := oldSide(en.Target)
	if err := removeIfExists(tmp); err != nil {
		return err
	}
	switch of.Type {
	case api.TypeFile:
		if err := writeBlob(ctx, engineBlobs{e}, of, tmp, false); err != nil {
			return fmt.Errorf("restore %s: %w", en.Path, err)
		}
	case api.TypeSymlink:
		if err := os.Symlink(of.Target, tmp); err != nil {
			return err
		}
	default:
		return fmt.Errorf("restore %s: type %s", en.Path, of.Type)
	}
	return os.Rename(tmp, en.Target)
}

// oldSide is the name of a restore copy beside target.
func oldSide(target string) string {
	return filepath.Join(filepath.Dir(target), sideName("old", filepath.Base(target)))
}

// ensureParents creates the missing directories above rel under the
// root (after a commit removed them).
func (e *Engine) ensureParents(rel string, oldBy map[string]api.File) error {
	d := path.Dir(rel)
	if d == "." {
		return nil
	}
	full, err := securejoin.SecureJoin(e.cfg.Root, d)
	if err != nil {
		return err
	}
	prel, err := filepath.Rel(e.cfg.Root, full)
	if err != nil {
		return err
	}
	for _, a := range ancestorsTopDown(filepath.ToSlash(prel)) {
		p := filepath.Join(e.cfg.Root, filepath.FromSlash(a))
		fi, err := os.Lstat(p)
		if err == nil {
			if !fi.IsDir() {
				return fmt.Errorf("%s: not a directory", a)
			}
			continue
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		mode := uint32(0o755)
		if f, ok := oldBy[a]; ok && f.Type == api.TypeDir {
			mode = f.Mode & 0o777
		}
		if err := os.Mkdir(p, os.FileMode(mode)); err != nil {
			return err
		}
		if err := os.Chmod(p, os.FileMode(mode)); err != nil {
			return err
		}
	}
	return nil
}

// ancestorsTopDown returns "a", "a/b", "a/b/c" for "a/b/c".
func ancestorsTopDown(rel string) []string {
	if rel == "." || rel == "" {
		return nil
	}
	var out []string
	for i := 0; i < len(rel); i++ {
		if rel[i] == '/' {
			out = append(out, rel[:i])
		}
	}
	return append(out, rel)
}

// planRemoveRoot lists in j what a root-mode removal deletes: the paths
// the app owns and the directories it created.
func (e *Engine) planRemoveRoot(j *journal, tree []api.File) error {
	by := map[string]api.File{}
	for _, f := range tree {
		by[f.Path] = f
	}
	for _, p := range j.Old.Paths {
		target, err := e.resolve(p)
		if err != nil {
			return err
		}
		en := rootEntry{Path: p, Target: target, Owned: true}
		if f := by[p]; f.Type == api.TypeFile {
			en.OldDigest = f.Digest
		}
		j.Obsolete = append(j.Obsolete, en)
	}
	dirs, err := e.resolveDirsDeepFirst(j.Old.Dirs)
	if err != nil {
		return err
	}
	j.ObsoleteDirs = dirs
	return nil
}

// removeRootFiles deletes what planRemoveRoot listed; idempotent.
func (e *Engine) removeRootFiles(j *journal) error {
	if err := e.removeObsolete(j, "removed"); err != nil {
		return err
	}
	return syncFS(rootDirs(e.cfg.Root, j), e.syncEach)
}
