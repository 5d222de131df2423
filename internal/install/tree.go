package install

import (
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/drover-dev/drover/internal/api"
)

// overlayKey names an overlay tree by its tags, sorted and comma-joined,
// so files@b,a and files@a,b are one overlay.
func overlayKey(tags []string) string {
	s := slices.Clone(tags)
	slices.Sort(s)
	return strings.Join(s, ",")
}

// overlays returns the keys of the overlays of m that fit have, in the
// order they are laid over the generic tree: fewer tags first, ties by
// key.
func overlays(m *api.Manifest, have []string) []string {
	hs := map[string]bool{}
	for _, h := range have {
		hs[h] = true
	}
	type ov struct {
		key string
		n   int
	}
	seen := map[string]bool{}
	var fit []ov
	for _, f := range m.Files {
		if len(f.Overlay) == 0 {
			continue
		}
		k := overlayKey(f.Overlay)
		if seen[k] {
			continue
		}
		seen[k] = true
		ok := true
		for _, t := range f.Overlay {
			if !hs[t] {
				ok = false
				break
			}
		}
		if ok {
			fit = append(fit, ov{k, len(f.Overlay)})
		}
	}
	slices.SortFunc(fit, func(a, b ov) int {
		if a.n != b.n {
			return a.n - b.n
		}
		return strings.Compare(a.key, b.key)
	})
	keys := make([]string, len(fit))
	for i, o := range fit {
		keys[i] = o.key
	}
	return keys
}

// selectTree returns the file tree of m for a device that has the tags
// in have: the generic tree, then each fitting overlay laid over it (a
// later entry replaces an earlier one of the same path). The result is
// sorted by path, so a directory comes before everything in it, and is
// checked as a whole: valid paths, supported types, no entry below a
// file or symlink, symlinks that stay inside the install root.
func selectTree(m *api.Manifest, have []string) ([]api.File, error) {
	if m == nil {
		return nil, fmt.Errorf("no manifest")
	}
	byPath := map[string]api.File{}
	layer := func(key string) error {
		inLayer := map[string]bool{}
		for _, f := range m.Files {
			k := ""
			if len(f.Overlay) > 0 {
				k = overlayKey(f.Overlay)
			}
			if k != key {
				continue
			}
			if inLayer[f.Path] {
				return fmt.Errorf("path %q listed twice in tree %q", f.Path, key)
			}
			inLayer[f.Path] = true
			byPath[f.Path] = f
		}
		return nil
	}
	if err := layer(""); err != nil {
		return nil, err
	}
	for _, k := range overlays(m, have) {
		if err := layer(k); err != nil {
			return nil, err
		}
	}
	tree := make([]api.File, 0, len(byPath))
	for _, f := range byPath {
		tree = append(tree, f)
	}
	slices.SortFunc(tree, func(a, b api.File) int { return strings.Compare(a.Path, b.Path) })
	for _, f := range tree {
		if err := checkEntry(f); err != nil {
			return nil, err
		}
		// Every ancestor must be a directory (listed or implied), so
		// writing the tree never goes through a file or a symlink of
		// the tree itself.
		for d := path.Dir(f.Path); d != "."; d = path.Dir(d) {
			if a, ok := byPath[d]; ok && a.Type != api.TypeDir {
				return nil, fmt.Errorf("path %q: parent %q is a %s, not a directory", f.Path, d, a.Type)
			}
		}
	}
	return tree, nil
}

// checkEntry validates one tree entry on its own.
func checkEntry(f api.File) error {
	if err := checkPath(f.Path); err != nil {
		return err
	}
	switch f.Type {
	case api.TypeDir:
	case api.TypeFile:
		if !validDigest(f.Digest) {
			return fmt.Errorf("file %q: digest %q is not a hex SHA-256", f.Path, f.Digest)
		}
		if f.Size < 0 {
			return fmt.Errorf("file %q: negative size", f.Path)
		}
	case api.TypeSymlink:
		if err := checkLinkTarget(f.Path, f.Target); err != nil {
			return err
		}
	default:
		// Devices, fifos, sockets and hard links are never created.
		return fmt.Errorf("path %q: type %q is not supported (want file, dir or symlink)", f.Path, f.Type)
	}
	return nil
}

// checkPath accepts a relative slash path without empty, "." or ".."
// elements.
func checkPath(p string) error {
	if p == "" {
		return fmt.Errorf("empty path")
	}
	if strings.ContainsRune(p, 0) {
		return fmt.Errorf("path %q: contains NUL", p)
	}
	if strings.HasPrefix(p, "/") {
		return fmt.Errorf("path %q: absolute", p)
	}
	for _, el := range strings.Split(p, "/") {
		switch el {
		case "", ".", "..":
			return fmt.Errorf("path %q: empty, '.' or '..' element", p)
		}
		if len(el) > 255 {
			return fmt.Errorf("path %q: element longer than 255 bytes", p)
		}
	}
	return nil
}

// checkLinkTarget accepts a symlink target that stays inside the install
// root however the kernel resolves it: relative, and every ".." comes
// before any name, at most as many as the link's own depth. A ".." after
// a name could climb out through an inner symlink (s -> ".", then
// "s/..") even when the target looks inside lexically.
func checkLinkTarget(p, target string) error {
	if target == "" {
		return fmt.Errorf("symlink %q: empty target", p)
	}
	if strings.ContainsRune(target, 0) {
		return fmt.Errorf("symlink %q: target contains NUL", p)
	}
	if strings.HasPrefix(target, "/") {
		return fmt.Errorf("symlink %q: absolute target %q", p, target)
	}
	ups := linkUps(target)
	if ups < 0 {
		return fmt.Errorf("symlink %q: target %q has '..' after a name", p, target)
	}
	if ups > depth(p) {
		return fmt.Errorf("symlink %q: target %q leaves the install root", p, target)
	}
	return nil
}

// linkUps counts the leading ".." elements of a relative target, or -1
// when a ".." follows a name.
func linkUps(target string) int {
	ups, named := 0, false
	for _, el := range strings.Split(target, "/") {
		switch el {
		case "", ".":
		case "..":
			if named {
				return -1
			}
			ups++
		default:
			named = true
		}
	}
	return ups
}

// depth is the number of directories above p inside the install root:
// 0 for "a", 1 for "a/b".
func depth(p string) int { return strings.Count(p, "/") }

// validDigest reports whether d is a lowercase hex SHA-256.
func validDigest(d string) bool {
	if len(d) != 64 {
		return false
	}
	for _, c := range d {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
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
