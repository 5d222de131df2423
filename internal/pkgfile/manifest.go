// Package pkgfile is drover's package format (DESIGN §3): the source
// directory an author writes (drover.yaml, files/, files@TAGS/, scripts/,
// templates), the package file built from it (a zstd-compressed tar of
// manifest.json and content-addressed blobs), and a reader that treats
// every package file as hostile until each entry, limit and digest has
// been checked.
//
// ValidateManifest is the security core: the server runs it on push and
// the agent before install, so a manifest that passes it can be unpacked
// without any path leaving the install root.
package pkgfile

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/drover-dev/drover/internal/api"
)

// Sentinel errors, checked with errors.Is.
var (
	// ErrInvalid wraps every error about bad input: drover.yaml, a source
	// tree, a manifest or a package file.
	ErrInvalid = errors.New("invalid package")
	// ErrDigestMismatch means a blob's content does not hash to its name.
	// Errors that wrap it wrap ErrInvalid too.
	ErrDigestMismatch = errors.New("digest mismatch")
)

// invalidf returns an error wrapping ErrInvalid.
func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// Path limits, those of Linux (PATH_MAX, NAME_MAX).
const (
	maxPathLen    = 4096
	maxElementLen = 255
)

// checkPath checks a manifest path: relative, slash-separated, clean (no
// empty, "." or ".." elements), no NUL or backslash, within length limits.
// Backslashes are refused so that no platform can read one as a separator.
func checkPath(p string) error {
	switch {
	case p == "":
		return errors.New("empty path")
	case len(p) > maxPathLen:
		return fmt.Errorf("path longer than %d bytes", maxPathLen)
	case strings.HasPrefix(p, "/"):
		return fmt.Errorf("path %q is absolute", p)
	case strings.ContainsRune(p, 0):
		return fmt.Errorf("path %q contains NUL", p)
	case strings.ContainsRune(p, '\\'):
		return fmt.Errorf("path %q contains a backslash", p)
	}
	for el := range strings.SplitSeq(p, "/") {
		switch {
		case el == "":
			return fmt.Errorf("path %q has an empty element", p)
		case el == "." || el == "..":
			return fmt.Errorf("path %q has a %q element", p, el)
		case len(el) > maxElementLen:
			return fmt.Errorf("path %q has an element longer than %d bytes", p, maxElementLen)
		}
	}
	return nil
}

// overlayKey names a file's tree: "" for the generic tree, else its tags
// joined by commas. Files are sorted by (overlayKey, path).
func overlayKey(tags []string) string { return strings.Join(tags, ",") }

// DecodeManifest decodes manifest.json and validates it. Unknown JSON
// fields are ignored (a newer builder may add fields; the wire rule is
// add, never change), but everything known must pass ValidateManifest.
func DecodeManifest(data []byte) (*api.Manifest, error) {
	var m api.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, invalidf("manifest.json: %v", err)
	}
	if err := ValidateManifest(&m); err != nil {
		return nil, err
	}
	return &m, nil
}

// path kinds, bits of one path across all trees of a manifest.
const (
	kindDir = 1 << iota
	kindFile
	kindSymlink
)

// ValidateManifest checks a manifest from anywhere. Beyond the field
// rules it guarantees, for every combination of overlays an agent may lay
// over the generic tree:
//   - every path is clean and relative, so joined to the install root it
//     stays inside;
//   - no entry's path goes through a file or symlink entry (the classic
//     "write through a symlink an earlier entry made");
//   - every symlink target is relative and resolves inside the root, even
//     when it passes through other symlinks of the package;
//   - a path is a directory in every tree or in none.
//
// Files must be sorted by (overlay, path), which also rules out duplicates.
// Every error wraps ErrInvalid.
func ValidateManifest(m *api.Manifest) error {
	if m == nil {
		return invalidf("manifest: missing")
	}
	c := m.Coordinate()
	if err := c.Validate(); err != nil {
		return invalidf("manifest: %v", err)
	}
	if err := validateInstall(m.Install); err != nil {
		return invalidf("manifest: %v", err)
	}
	if err := checkTagSet(m.Tags); err != nil {
		return invalidf("manifest: tags: %v", err)
	}
	seenDep := map[string]bool{}
	for _, d := range m.Depends {
		if err := validateDependency(d, c.PackageName(), seenDep); err != nil {
			return invalidf("manifest: depends: %v", err)
		}
	}
	for _, name := range sortedKeys(m.Params) {
		if _, err := validateParam(name, m.Params[name]); err != nil {
			return invalidf("manifest: params: %s: %v", name, err)
		}
	}
	seenSvc := map[string]bool{}
	for _, s := range m.Services {
		if err := validateService(s, seenSvc); err != nil {
			return invalidf("manifest: services: %v", err)
		}
	}
	for _, name := range sortedKeys(m.Scripts) {
		if !slices.Contains(api.ScriptNames, name) {
			return invalidf("manifest: script %q: want one of %s", name, strings.Join(api.ScriptNames, ", "))
		}
		if d := m.Scripts[name]; !api.ValidDigest(d) {
			return invalidf("manifest: script %s: digest %q: want 64 lowercase hex characters", name, d)
		}
	}
	if err := validateDebs(m); err != nil {
		return err
	}
	kinds, err := checkFiles(m.Files)
	if err != nil {
		return err
	}
	seenDest := map[string]bool{}
	for _, t := range m.Templates {
		if err := validateTemplate(t, seenDest); err != nil {
			return invalidf("manifest: template: %v", err)
		}
		if !api.ValidDigest(t.Digest) {
			return invalidf("manifest: template %s: digest %q: want 64 lowercase hex characters", t.Src, t.Digest)
		}
		// A template is rendered into the tree at configure: it must not
		// replace a directory or be written through a file or symlink.
		if kinds[t.Dest]&kindDir != 0 {
			return invalidf("manifest: template dest %q is a directory of the package", t.Dest)
		}
		if a, k := nonDirAncestor(t.Dest, kinds); a != "" {
			return invalidf("manifest: template dest %q goes through %s %q", t.Dest, kindName(k), a)
		}
	}
	return nil
}

// checkTagSet checks that tags are valid, sorted and without duplicates,
// the canonical form the builder writes.
func checkTagSet(tags []string) error {
	for i, t := range tags {
		if !api.ValidTag(t) {
			return fmt.Errorf("tag %q: want letters, digits, '.', '_', '+' and '-'", t)
		}
		if i > 0 && tags[i-1] >= t {
			return fmt.Errorf("tags %q: want sorted, without duplicates", tags)
		}
	}
	return nil
}

// checkFiles checks each entry, then the tree as a whole. It returns the
// kinds of every path, across all trees.
func checkFiles(files []api.File) (map[string]int, error) {
	kinds := make(map[string]int, len(files))
	sizes := map[string]int64{}
	var prevKey, prevPath string
	for i, f := range files {
		if err := checkPath(f.Path); err != nil {
			return nil, invalidf("manifest: file %d: %v", i, err)
		}
		// An empty overlay is the generic tree, as nil is.
		if err := checkTagSet(f.Overlay); err != nil {
			return nil, invalidf("manifest: file %q: overlay: %v", f.Path, err)
		}
		key := overlayKey(f.Overlay)
		if i > 0 {
			if key == prevKey && f.Path == prevPath {
				return nil, invalidf("manifest: file %s: listed twice", ref(f))
			}
			if key < prevKey || (key == prevKey && f.Path < prevPath) {
				return nil, invalidf("manifest: file %s: files not sorted by overlay and path", ref(f))
			}
		}
		prevKey, prevPath = key, f.Path
		if f.Mode > 0o777 {
			return nil, invalidf("manifest: file %s: mode %#o: only permission bits (no setuid, setgid or sticky)", ref(f), f.Mode)
		}
		var kind int
		switch f.Type {
		case api.TypeFile:
			kind = kindFile
			if !api.ValidDigest(f.Digest) {
				return nil, invalidf("manifest: file %s: digest %q: want 64 lowercase hex characters", ref(f), f.Digest)
			}
			if f.Size < 0 {
				return nil, invalidf("manifest: file %s: negative size", ref(f))
			}
			if s, ok := sizes[f.Digest]; ok && s != f.Size {
				return nil, invalidf("manifest: file %s: size %d, but another file with digest %s has size %d", ref(f), f.Size, f.Digest, s)
			}
			sizes[f.Digest] = f.Size
			if f.Target != "" {
				return nil, invalidf("manifest: file %s: a regular file has no target", ref(f))
			}
		case api.TypeDir, api.TypeSymlink:
			kind = kindDir
			if f.Type == api.TypeSymlink {
				kind = kindSymlink
				if f.Target == "" {
					return nil, invalidf("manifest: symlink %s: no target", ref(f))
				}
			} else if f.Target != "" {
				return nil, invalidf("manifest: directory %s: a directory has no target", ref(f))
			}
			if f.Digest != "" || f.Size != 0 {
				return nil, invalidf("manifest: %s %s: only files have a digest and size", f.Type, ref(f))
			}
		default:
			return nil, invalidf("manifest: file %s: type %q: want file, dir or symlink", ref(f), f.Type)
		}
		kinds[f.Path] |= kind
	}
	for _, f := range files {
		k := kinds[f.Path]
		if k&kindDir != 0 && k&^kindDir != 0 {
			return nil, invalidf("manifest: %q is a directory in one tree and not in another", f.Path)
		}
		if a, ak := nonDirAncestor(f.Path, kinds); a != "" {
			if ak&kindSymlink != 0 {
				return nil, invalidf("manifest: %s goes through symlink %q: writing through a symlink that another entry made", ref(f), a)
			}
			return nil, invalidf("manifest: %s goes through %q, which is a file", ref(f), a)
		}
	}
	for _, f := range files {
		if f.Type == api.TypeSymlink {
			if err := checkTarget(f.Path, f.Target, kinds); err != nil {
				return nil, invalidf("manifest: symlink %s: %v", ref(f), err)
			}
		}
	}
	return kinds, nil
}

// nonDirAncestor returns the first proper ancestor of p that is a file or
// symlink in any tree, and its kind; "" if there is none.
func nonDirAncestor(p string, kinds map[string]int) (string, int) {
	for i := 0; i < len(p); i++ {
		if p[i] == '/' {
			if k := kinds[p[:i]]; k&^kindDir != 0 {
				return p[:i], k
			}
		}
	}
	return "", 0
}

// ref names a file entry for an error: its path, and its overlay tree
// unless it is in the generic one.
func ref(f api.File) string {
	if len(f.Overlay) == 0 {
		return strconv.Quote(f.Path)
	}
	return fmt.Sprintf("%q (files@%s)", f.Path, overlayKey(f.Overlay))
}

func kindName(k int) string {
	if k&kindSymlink != 0 {
		return "symlink"
	}
	return "file"
}

// checkTarget checks that the symlink at link, pointing to target, stays
// inside the install root. The walk is the kernel's, done on the package's
// own tree: a path element that is a symlink of the package leads wherever
// that symlink leads, which is inside the root by the same check; so
// escaping needs a ".." that climbs above the root, or a ".." after a
// symlink (where lexical and real parents differ). Both are refused, and
// so is a ".." after any name: in root mode a name may be a symlink on the
// device's disk that the package never lists. The link's own directory
// holds no symlinks (checkFiles saw to that).
func checkTarget(link, target string, kinds map[string]int) error {
	switch {
	case len(target) > maxPathLen:
		return fmt.Errorf("target longer than %d bytes", maxPathLen)
	case strings.HasPrefix(target, "/"):
		return fmt.Errorf("target %q is absolute; want a path relative to the link", target)
	case strings.ContainsRune(target, 0):
		return fmt.Errorf("target %q contains NUL", target)
	case strings.ContainsRune(target, '\\'):
		return fmt.Errorf("target %q contains a backslash", target)
	}
	// cur is the lexical position, a slash-separated path; empty is the
	// root. A byte slice keeps long targets linear.
	var cur []byte
	if i := strings.LastIndexByte(link, '/'); i >= 0 {
		cur = append(cur, link[:i]...)
	}
	via := ""      // the first symlink of the package the walk passed through
	named := false // a name came before: on the device it may be a symlink
	for el := range strings.SplitSeq(target, "/") {
		switch el {
		case "", ".":
		case "..":
			if via != "" {
				return fmt.Errorf("target %q uses \"..\" after passing through symlink %q", target, via)
			}
			if named {
				// In root mode the tree is laid over a disk the
				// package does not own: a name that is a directory
				// here may be a symlink there.
				return fmt.Errorf("target %q has \"..\" after a name", target)
			}
			if len(cur) == 0 {
				return fmt.Errorf("target %q leaves the install root", target)
			}
			cur = cur[:max(bytes.LastIndexByte(cur, '/'), 0)]
		default:
			named = true
			if len(el) > maxElementLen {
				return fmt.Errorf("target %q has an element longer than %d bytes", target, maxElementLen)
			}
			if via != "" {
				// Only downward steps remain; they cannot leave the root.
				continue
			}
			if len(cur) > 0 {
				cur = append(cur, '/')
			}
			cur = append(cur, el...)
			if kinds[string(cur)]&kindSymlink != 0 {
				via = string(cur)
			}
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
