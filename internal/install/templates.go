package install

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/atomicfile"
	"github.com/drover-dev/drover/internal/blob"
	"github.com/drover-dev/drover/internal/param"
)

// templateMode is the mode of a rendered template.
const templateMode = 0o640

// renderedDir keeps the content of every rendered template an installed
// or previous build uses, by digest, so a rollback restores it without
// rendering again.
func (e *Engine) renderedDir() string { return filepath.Join(e.cfg.StateDir, "rendered") }

// keepTemplates checks t's templates against m, stores their content in
// the rendered store and returns them as tree entries.
func (e *Engine) keepTemplates(m *api.Manifest, ts []param.Rendered) ([]api.File, error) {
	if len(ts) == 0 {
		return nil, nil
	}
	dests := map[string]bool{}
	for _, t := range m.Templates {
		dests[t.Dest] = true
	}
	if err := os.MkdirAll(e.renderedDir(), 0o700); err != nil {
		return nil, err
	}
	// A template may render a secret parameter: then only its owner
	// reads it, as in prefix mode (param.PrivateTemplates).
	mode := uint32(templateMode)
	if param.HasSecret(m.Params) {
		mode = 0o600
	}
	var out []api.File
	seen := map[string]bool{}
	for _, t := range ts {
		if !dests[t.Dest] || seen[t.Dest] {
			return nil, fmt.Errorf("template %q: not a template of the build, or given twice", t.Dest)
		}
		seen[t.Dest] = true
		d := blob.Digest(t.Data)
		p := filepath.Join(e.renderedDir(), d)
		if ok, err := exists(p); err != nil {
			return nil, err
		} else if !ok {
			if err := atomicfile.WriteFile(p, t.Data, 0o600); err != nil {
				return nil, fmt.Errorf("template %s: %w", t.Dest, err)
			}
		}
		out = append(out, api.File{Path: t.Dest, Type: api.TypeFile, Mode: mode, Size: int64(len(t.Data)), Digest: d})
	}
	slices.SortFunc(out, func(a, b api.File) int { return strings.Compare(a.Path, b.Path) })
	return out, nil
}

// withTemplates lays rendered templates over a build's tree: a template
// replaces an entry of the same path; the result is sorted by path.
func withTemplates(tree, templates []api.File) []api.File {
	if len(templates) == 0 {
		return tree
	}
	byPath := make(map[string]api.File, len(tree)+len(templates))
	for _, f := range tree {
		byPath[f.Path] = f
	}
	for _, f := range templates {
		byPath[f.Path] = f
	}
	out := make([]api.File, 0, len(byPath))
	for _, f := range byPath {
		out = append(out, f)
	}
	slices.SortFunc(out, func(a, b api.File) int { return strings.Compare(a.Path, b.Path) })
	return out
}

// appTree is the tree an app has on disk: its build's files and its
// rendered templates.
func appTree(m *api.Manifest, have []string, templates []api.File) ([]api.File, error) {
	tree, err := selectTree(m, have)
	if err != nil {
		return nil, err
	}
	return withTemplates(tree, templates), nil
}

// blobs is the engine's content source: rendered templates first, then
// the blob cache.
type engineBlobs struct{ e *Engine }

func (b engineBlobs) Open(ctx context.Context, digest string) (*os.File, error) {
	if api.ValidDigest(digest) {
		f, err := os.Open(filepath.Join(b.e.renderedDir(), digest))
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	return b.e.cfg.Blobs.Open(ctx, digest)
}

// gcRendered removes rendered templates no installed or previous build
// uses, nor the step in the journal.
func (e *Engine) gcRendered(j *journal) error {
	keep := map[string]bool{}
	add := func(fs []api.File) {
		for _, f := range fs {
			keep[f.Digest] = true
		}
	}
	addApp := func(a *appState) {
		if a == nil {
			return
		}
		add(a.Templates)
		if a.Previous != nil {
			add(a.Previous.Templates)
		}
	}
	for _, a := range e.state.Apps {
		addApp(a)
	}
	if j != nil {
		addApp(j.Old)
		addApp(j.New)
	}
	ents, err := os.ReadDir(e.renderedDir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, de := range ents {
		if !keep[de.Name()] {
			errs = append(errs, removeIfExists(filepath.Join(e.renderedDir(), de.Name())))
		}
	}
	return errors.Join(errs...)
}
