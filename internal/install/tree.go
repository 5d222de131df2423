package install

import (
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/pkgfile"
)

// selectTree returns the file tree of m for a device that has the tags
// in have, sorted by path so a directory comes before everything in it.
// The manifest is first checked with pkgfile.ValidateManifest, the very
// checks the server applies at push (clean relative paths, file, dir and
// symlink only, nothing below a file or symlink, symlinks that stay
// inside the root), and the tree is pkgfile.Tree's, the one the agent
// downloads for.
func selectTree(m *api.Manifest, have []string) ([]api.File, error) {
	if m == nil {
		return nil, fmt.Errorf("no manifest")
	}
	if err := pkgfile.ValidateManifest(m); err != nil {
		return nil, err
	}
	return pkgfile.Tree(m, have), nil
}

// sameTree reports whether two trees put the same things on disk.
func sameTree(a, b []api.File) bool {
	return slices.EqualFunc(a, b, func(x, y api.File) bool { return x.Path == y.Path && sameContent(x, y) })
}

// linkUps counts the leading ".." elements of a relative target (the
// manifest check refuses a ".." after a name).
func linkUps(target string) int {
	ups := 0
	for _, el := range strings.Split(target, "/") {
		if el == ".." {
			ups++
		}
	}
	return ups
}

// neededDirs returns every directory the tree needs: the listed ones and
// every ancestor of every path.
func neededDirs(tree []api.File) map[string]bool {
	need := map[string]bool{}
	for _, f := range tree {
		if f.Type == api.TypeDir {
			need[f.Path] = true
		}
		for d := path.Dir(f.Path); d != "."; d = path.Dir(d) {
			need[d] = true
		}
	}
	return need
}

// sameContent reports whether two entries of one path put the same
// thing on disk.
func sameContent(a, b api.File) bool {
	if a.Type != b.Type || a.Mode&0o777 != b.Mode&0o777 {
		return false
	}
	switch a.Type {
	case api.TypeFile:
		return a.Digest == b.Digest && a.Size == b.Size
	case api.TypeSymlink:
		return a.Target == b.Target
	}
	return true
}
