package pkgfile

import (
	"archive/tar"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/drover-dev/drover/internal/api"
)

// Names inside a package source directory and a package file.
const (
	SpecFile     = "drover.yaml"
	ManifestName = "manifest.json"
	blobPrefix   = "blobs/"
	filesDir     = "files"
	scriptsDir   = "scripts"
)

// blobSource is where Build reads a blob's content from when it writes the
// package file.
type blobSource struct {
	path string // absolute path in the source directory
	size int64
}

// builder collects the manifest and the blobs of one source directory.
type builder struct {
	dir   string
	m     *api.Manifest
	blobs map[string]blobSource
}

// Build reads the package source directory dir and writes one package file
// to w. It returns the manifest, the exact manifest.json bytes and their
// SHA-256 in hex (the build's identity).
//
// The output depends only on the names, permission bits and contents in
// dir: building the same tree twice, whatever its timestamps or owners,
// gives byte-identical files. Errors about the source wrap ErrInvalid.
func Build(dir string, w io.Writer) (m *api.Manifest, manifestJSON []byte, digest string, err error) {
	b := &builder{dir: dir, blobs: map[string]blobSource{}}
	if err := b.collect(); err != nil {
		return nil, nil, "", err
	}
	if err := ValidateManifest(b.m); err != nil {
		return nil, nil, "", err
	}
	if len(b.blobs)+1 > DefaultMaxEntries {
		return nil, nil, "", invalidf("%d distinct contents, more than the %d entries a reader accepts", len(b.blobs), DefaultMaxEntries-1)
	}
	var total int64
	for _, src := range b.blobs {
		total += src.size
	}
	if total > DefaultMaxTotal {
		return nil, nil, "", invalidf("%d bytes of content, more than the %d a reader accepts", total, int64(DefaultMaxTotal))
	}
	manifestJSON, err = json.Marshal(b.m)
	if err != nil {
		return nil, nil, "", fmt.Errorf("encode manifest: %w", err)
	}
	if len(manifestJSON) > DefaultMaxManifest {
		return nil, nil, "", invalidf("manifest.json: %d bytes, more than the %d a reader accepts", len(manifestJSON), DefaultMaxManifest)
	}
	sum := sha256.Sum256(manifestJSON)
	if err := b.write(w, manifestJSON); err != nil {
		return nil, nil, "", err
	}
	return b.m, manifestJSON, hex.EncodeToString(sum[:]), nil
}

// collect reads drover.yaml and the trees into b.m and b.blobs.
func (b *builder) collect() error {
	data, err := readSpecFile(filepath.Join(b.dir, SpecFile))
	if err != nil {
		return err
	}
	spec, err := ParseSpec(data)
	if err != nil {
		return err
	}
	b.m = &api.Manifest{
		Group:    spec.Group,
		Name:     spec.Name,
		Version:  spec.Version,
		Tags:     spec.Tags,
		Install:  spec.Install,
		Depends:  spec.Depends,
		Params:   spec.Params,
		Services: spec.Services,
		Files:    []api.File{},
	}
	entries, err := os.ReadDir(b.dir)
	if err != nil {
		return fmt.Errorf("read package source: %w", err)
	}
	seenOverlay := map[string]string{}
	for _, e := range entries {
		name := e.Name()
		switch {
		case name == filesDir:
			if err := b.tree(name, nil, e); err != nil {
				return err
			}
		case strings.HasPrefix(name, filesDir+"@"):
			tags, err := overlayTags(strings.TrimPrefix(name, filesDir+"@"))
			if err != nil {
				return invalidf("%s: %v", name, err)
			}
			key := overlayKey(tags)
			if other, ok := seenOverlay[key]; ok {
				return invalidf("%s and %s: the same tag set", other, name)
			}
			seenOverlay[key] = name
			if err := b.tree(name, tags, e); err != nil {
				return err
			}
		case name == scriptsDir:
			if err := b.scripts(e); err != nil {
				return err
			}
		case name == debsDir:
			if err := b.debs(e); err != nil {
				return err
			}
		}
	}
	slices.SortFunc(b.m.Files, func(x, y api.File) int {
		return cmp.Or(strings.Compare(overlayKey(x.Overlay), overlayKey(y.Overlay)), strings.Compare(x.Path, y.Path))
	})
	return b.templates(spec.Templates)
}

func readSpecFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, invalidf("no %s in the package source", SpecFile)
		}
		return nil, fmt.Errorf("read %s: %w", SpecFile, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxSpecSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", SpecFile, err)
	}
	return data, nil
}

// overlayTags parses the TAGS of a files@TAGS directory.
func overlayTags(s string) ([]string, error) {
	if s == "" {
		return nil, errors.New("empty tag set")
	}
	tags := strings.Split(s, ",")
	for _, t := range tags {
		if !api.ValidTag(t) {
			return nil, fmt.Errorf("tag %q: want letters, digits, '.', '_', '+' and '-'", t)
		}
	}
	slices.Sort(tags)
	if len(slices.Compact(slices.Clone(tags))) != len(tags) {
		return nil, errors.New("a tag is listed twice")
	}
	return tags, nil
}

// tree adds every entry under the top-level directory name as files of
// the overlay with tags (nil: the generic tree).
func (b *builder) tree(name string, tags []string, e fs.DirEntry) error {
	if !e.IsDir() {
		return invalidf("%s: not a directory", name)
	}
	root := filepath.Join(b.dir, name)
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("read package source: %w", err)
		}
		if p == root {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return fmt.Errorf("read package source: %w", err)
		}
		rel = filepath.ToSlash(rel)
		where := name + "/" + rel
		if err := checkPath(rel); err != nil {
			return invalidf("%s: %v", where, err)
		}
		info, err := d.Info()
		if err != nil {
			return fmt.Errorf("read package source: %w", err)
		}
		mode := info.Mode()
		if mode&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0 {
			return invalidf("%s: setuid, setgid and sticky bits are not supported", where)
		}
		f := api.File{Path: rel, Mode: uint32(mode.Perm()), Overlay: tags}
		switch {
		case mode.IsDir():
			f.Type = api.TypeDir
		case mode.IsRegular():
			f.Type = api.TypeFile
			f.Digest, f.Size, err = b.addBlob(p, where)
			if err != nil {
				return err
			}
		case mode&fs.ModeSymlink != 0:
			f.Type = api.TypeSymlink
			if f.Target, err = os.Readlink(p); err != nil {
				return fmt.Errorf("read package source: %w", err)
			}
			// The target is checked with the whole tree in ValidateManifest;
			// an absolute one can be refused with the path named now.
			if filepath.IsAbs(f.Target) {
				return invalidf("%s: symlink target %q is absolute; want a path relative to the link", where, f.Target)
			}
		default:
			return invalidf("%s: %s is not a regular file, directory or symlink", where, fileKind(mode))
		}
		b.m.Files = append(b.m.Files, f)
		return nil
	})
}

func fileKind(mode fs.FileMode) string {
	switch {
	case mode&fs.ModeCharDevice != 0:
		return "a character device"
	case mode&fs.ModeDevice != 0:
		return "a device"
	case mode&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case mode&fs.ModeSocket != 0:
		return "a socket"
	}
	return "an unsupported file type"
}

// addBlob hashes the regular file at path and records it as a blob.
func (b *builder) addBlob(path, where string) (digest string, size int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, fmt.Errorf("read package source: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	size, err = io.Copy(h, f)
	if err != nil {
		return "", 0, fmt.Errorf("read %s: %w", where, err)
	}
	if size > DefaultMaxBlob {
		return "", 0, invalidf("%s: %d bytes, more than the %d a reader accepts", where, size, int64(DefaultMaxBlob))
	}
	digest = hex.EncodeToString(h.Sum(nil))
	if _, ok := b.blobs[digest]; !ok {
		b.blobs[digest] = blobSource{path: path, size: size}
	}
	return digest, size, nil
}

// scripts adds the scripts/ directory.
func (b *builder) scripts(e fs.DirEntry) error {
	if !e.IsDir() {
		return invalidf("%s: not a directory", scriptsDir)
	}
	dir := filepath.Join(b.dir, scriptsDir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("read package source: %w", err)
	}
	for _, s := range entries {
		where := scriptsDir + "/" + s.Name()
		if !slices.Contains(api.ScriptNames, s.Name()) {
			return invalidf("%s: not a script name; want one of %s", where, strings.Join(api.ScriptNames, ", "))
		}
		if !s.Type().IsRegular() {
			return invalidf("%s: not a regular file", where)
		}
		digest, _, err := b.addBlob(filepath.Join(dir, s.Name()), where)
		if err != nil {
			return err
		}
		if b.m.Scripts == nil {
			b.m.Scripts = map[string]string{}
		}
		b.m.Scripts[s.Name()] = digest
	}
	return nil
}

// templates adds each template source as a blob. Sources are opened
// through an os.Root so that a symlink cannot pull in a file from outside
// the package source.
func (b *builder) templates(ts []api.Template) error {
	if len(ts) == 0 {
		return nil
	}
	root, err := os.OpenRoot(b.dir)
	if err != nil {
		return fmt.Errorf("read package source: %w", err)
	}
	defer root.Close()
	for _, t := range ts {
		where := "template " + t.Src
		info, err := root.Stat(filepath.FromSlash(t.Src))
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return invalidf("%s: not found in the package source", where)
			}
			if pe, ok := errors.AsType[*fs.PathError](err); ok {
				err = pe.Err
			}
			return invalidf("%s: %v", where, err)
		}
		if !info.Mode().IsRegular() {
			return invalidf("%s: not a regular file", where)
		}
		f, err := root.Open(filepath.FromSlash(t.Src))
		if err != nil {
			return invalidf("%s: %v", where, err)
		}
		h := sha256.New()
		size, err := io.Copy(h, f)
		f.Close()
		if err != nil {
			return fmt.Errorf("read %s: %w", where, err)
		}
		if size > DefaultMaxBlob {
			return invalidf("%s: %d bytes, more than the %d a reader accepts", where, size, int64(DefaultMaxBlob))
		}
		t.Digest = hex.EncodeToString(h.Sum(nil))
		if _, ok := b.blobs[t.Digest]; !ok {
			// The blob is re-read by path when written; resolve it now,
			// inside the root, to the path os.Root opened.
			b.blobs[t.Digest] = blobSource{path: filepath.Join(b.dir, filepath.FromSlash(t.Src)), size: size}
		}
		b.m.Templates = append(b.m.Templates, t)
	}
	return nil
}

// epoch is every entry's modification time, so that output does not
// depend on when or from which checkout a package was built.
var epoch = time.Unix(0, 0)

// write writes the package file: zstd of a tar holding manifest.json, then
// each distinct blob in digest order. Every header is fixed but for name
// and size. A single-threaded encoder at a fixed level is deterministic.
func (b *builder) write(w io.Writer, manifestJSON []byte) error {
	zw, err := zstd.NewWriter(w, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedDefault))
	if err != nil {
		return fmt.Errorf("package file: %w", err)
	}
	tw := tar.NewWriter(zw)
	header := func(name string, size int64) *tar.Header {
		return &tar.Header{
			Typeflag: tar.TypeReg,
			Name:     name,
			Size:     size,
			Mode:     0o644,
			ModTime:  epoch,
			Format:   tar.FormatUSTAR,
		}
	}
	if err := tw.WriteHeader(header(ManifestName, int64(len(manifestJSON)))); err != nil {
		return fmt.Errorf("package file: %w", err)
	}
	if _, err := tw.Write(manifestJSON); err != nil {
		return fmt.Errorf("package file: %w", err)
	}
	for _, d := range sortedKeys(b.blobs) {
		src := b.blobs[d]
		if err := tw.WriteHeader(header(blobPrefix+d, src.size)); err != nil {
			return fmt.Errorf("package file: %w", err)
		}
		if err := copyBlob(tw, src, d); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("package file: %w", err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("package file: %w", err)
	}
	return nil
}

// copyBlob copies a source file into the archive, checking it still has
// the content it was hashed with: a file changed during the build would
// otherwise produce a package whose blob does not match its manifest.
func copyBlob(w io.Writer, src blobSource, digest string) error {
	f, err := os.Open(src.path)
	if err != nil {
		return fmt.Errorf("read package source: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(w, h), io.LimitReader(f, src.size))
	if err != nil {
		return fmt.Errorf("package file: %s: %w", src.path, err)
	}
	if n != src.size || hex.EncodeToString(h.Sum(nil)) != digest {
		return fmt.Errorf("%s changed during the build", src.path)
	}
	return nil
}
