package blob

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/privdir"
)

// FileConfig configures a FileStore.
type FileConfig struct {
	// Dir holds the store: Dir/sha256/ab/abcd... for blobs and Dir/tmp
	// for uploads in progress. It is created if missing.
	Dir string
	// NoSync skips fsync of each blob and its directory before a Put
	// returns. Only for tests and throwaway caches: without the syncs a
	// power loss can lose a blob that Put reported stored (never leave a
	// partial one under its name, which the rename prevents either way).
	NoSync bool
}

// FileStore is a Store on a local file system. Each blob is one read-only
// file named by its digest, so callers may serve or copy it directly.
//
// A directory belongs to one FileStore: NewFileStore removes the temp
// files it finds, so a second process sharing Dir would see an upload of
// its own fail (and could retry), never a corrupt blob.
type FileStore struct {
	blobs string // Dir/sha256
	tmp   string // Dir/tmp
	sync  bool
}

var _ Store = (*FileStore)(nil)

// Blobs are read-only: nothing may change content under its digest.
const blobMode = 0o444

// NewFileStore opens the store in cfg.Dir, creating it if needed, and
// removes temp files that a crash left behind.
func NewFileStore(cfg FileConfig) (*FileStore, error) {
	if cfg.Dir == "" {
		return nil, errors.New("blob store: no directory given")
	}
	s := &FileStore{
		blobs: filepath.Join(cfg.Dir, "sha256"),
		tmp:   filepath.Join(cfg.Dir, "tmp"),
		sync:  !cfg.NoSync,
	}
	// Private folders: a blob folder made before may be open to all.
	for _, d := range []string{cfg.Dir, s.blobs, s.tmp} {
		if err := privdir.Make(d); err != nil {
			return nil, fmt.Errorf("blob store: %w", err)
		}
	}
	// Leftovers are uploads that never finished: none was renamed to a
	// digest name, so removing them loses nothing.
	entries, err := os.ReadDir(s.tmp)
	if err != nil {
		return nil, fmt.Errorf("blob store: %w", err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(s.tmp, e.Name())); err != nil {
			return nil, fmt.Errorf("blob store: remove leftover temp file: %w", err)
		}
	}
	return s, nil
}

// Path returns where the blob with this digest lives (whether or not it
// exists): Dir/sha256/ab/abcd..., fanned out by the first two hex digits
// so no directory grows too large. It returns "" for an invalid digest.
func (s *FileStore) Path(digest string) string {
	if !api.ValidDigest(digest) {
		return ""
	}
	return filepath.Join(s.blobs, digest[:2], digest)
}

// Put implements Store: the content goes to a temp file in Dir/tmp, is
// hashed on the way, made read-only, synced, and renamed into place, and
// then the directory is synced, so a crash never leaves a partial blob
// under its digest name.
func (s *FileStore) Put(ctx context.Context, digest string, r io.Reader) error {
	if !api.ValidDigest(digest) {
		return fmt.Errorf("put blob %q: %w", digest, ErrInvalidDigest)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("put blob %s: %w", digest, err)
	}
	final := s.Path(digest)
	if _, err := os.Lstat(final); err == nil {
		return nil
	}
	f, err := os.CreateTemp(s.tmp, digest[:16]+"-*")
	if err != nil {
		return fmt.Errorf("put blob %s: %w", digest, err)
	}
	renamed := false
	defer func() {
		if !renamed {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(f, h), ctxReader{ctx, r}); err != nil {
		return fmt.Errorf("put blob %s: %w", digest, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != digest {
		return fmt.Errorf("put blob %s: content hashes to %s: %w", digest, got, ErrDigestMismatch)
	}
	if err := f.Chmod(blobMode); err != nil {
		return fmt.Errorf("put blob %s: %w", digest, err)
	}
	if s.sync {
		if err := f.Sync(); err != nil {
			return fmt.Errorf("put blob %s: %w", digest, err)
		}
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("put blob %s: %w", digest, err)
	}
	// A caller that gave up gets no blob it did not wait for.
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("put blob %s: %w", digest, err)
	}
	dir := filepath.Dir(final)
	if err := s.mkdir(dir); err != nil {
		return fmt.Errorf("put blob %s: %w", digest, err)
	}
	// A concurrent Put of the same digest may rename over us: both files
	// hold the same verified bytes, and rename is atomic.
	if err := os.Rename(f.Name(), final); err != nil {
		return fmt.Errorf("put blob %s: %w", digest, err)
	}
	renamed = true
	if s.sync {
		if err := syncDir(dir); err != nil {
			return fmt.Errorf("put blob %s: %w", digest, err)
		}
	}
	return nil
}

// Open implements Store.
func (s *FileStore) Open(ctx context.Context, digest string) (*os.File, error) {
	if !api.ValidDigest(digest) {
		return nil, fmt.Errorf("open blob %q: %w", digest, ErrInvalidDigest)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("open blob %s: %w", digest, err)
	}
	f, err := os.Open(s.Path(digest))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("open blob %s: %w", digest, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("open blob %s: %w", digest, err)
	}
	return f, nil
}

// Stat implements Store.
func (s *FileStore) Stat(ctx context.Context, digest string) (int64, error) {
	if !api.ValidDigest(digest) {
		return 0, fmt.Errorf("stat blob %q: %w", digest, ErrInvalidDigest)
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("stat blob %s: %w", digest, err)
	}
	fi, err := os.Stat(s.Path(digest))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("stat blob %s: %w", digest, ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("stat blob %s: %w", digest, err)
	}
	return fi.Size(), nil
}

// Delete implements Store.
func (s *FileStore) Delete(ctx context.Context, digest string) error {
	if !api.ValidDigest(digest) {
		return fmt.Errorf("delete blob %q: %w", digest, ErrInvalidDigest)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("delete blob %s: %w", digest, err)
	}
	if err := os.Remove(s.Path(digest)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete blob %s: %w", digest, err)
	}
	return nil
}

// List implements Store. FileStore lists in ascending digest order and
// ignores files that are not named like a blob.
func (s *FileStore) List(ctx context.Context, fn func(digest string, size int64) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("list blobs: %w", err)
	}
	fanout, err := os.ReadDir(s.blobs)
	if err != nil {
		return fmt.Errorf("list blobs: %w", err)
	}
	for _, d := range fanout {
		if !d.IsDir() || len(d.Name()) != 2 {
			continue
		}
		entries, err := os.ReadDir(filepath.Join(s.blobs, d.Name()))
		if err != nil {
			return fmt.Errorf("list blobs: %w", err)
		}
		for _, e := range entries {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("list blobs: %w", err)
			}
			name := e.Name()
			if !api.ValidDigest(name) || name[:2] != d.Name() || !e.Type().IsRegular() {
				continue
			}
			fi, err := e.Info()
			if errors.Is(err, fs.ErrNotExist) {
				continue // deleted since ReadDir
			}
			if err != nil {
				return fmt.Errorf("list blobs: %w", err)
			}
			if err := fn(name, fi.Size()); err != nil {
				return err
			}
		}
	}
	return nil
}

// mkdir creates dir if missing and, when syncing, makes its entry in the
// parent durable, so a blob renamed into it cannot vanish with it.
func (s *FileStore) mkdir(dir string) error {
	err := os.Mkdir(dir, privdir.Mode)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if s.sync {
		return syncDir(filepath.Dir(dir))
	}
	return nil
}

// syncDir fsyncs a directory so renames and creations in it survive a
// power loss.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
