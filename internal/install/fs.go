package install

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/atomicfile"
	"github.com/drover-dev/drover/internal/blob"
)

// randSuffix returns 8 random hex characters for temporary names.
func randSuffix() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// syncFS makes everything written on the filesystems holding these
// directories durable with one syncfs(2) per filesystem. It is far
// cheaper than an fsync per file when a package has many small files
// (see BenchmarkDurable), and it also covers the directory entries.
// With each set, it falls back to fsyncing the directories, for callers
// that fsynced every file already.
func syncFS(dirs []string, each bool) error {
	seen := map[uint64]bool{}
	for _, d := range dirs {
		if each {
			if err := atomicfile.SyncDir(d); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
			continue
		}
		var st unix.Stat_t
		if err := unix.Stat(d, &st); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue
			}
			return fmt.Errorf("stat %s: %w", d, err)
		}
		if seen[st.Dev] {
			continue
		}
		seen[st.Dev] = true
		f, err := os.Open(d)
		if err != nil {
			return err
		}
		err = unix.Syncfs(int(f.Fd()))
		f.Close()
		if err != nil {
			return fmt.Errorf("syncfs %s: %w", d, err)
		}
	}
	return nil
}

// writeBlob creates dst (which must not exist) with the content of the
// file's blob and its mode. The copy goes *os.File to *os.File so the
// kernel can use copy_file_range; the size is checked against the
// manifest on both ends and the content against the digest (a mismatch is
// a *CorruptBlobError). With sync set, the file is fsynced.
func writeBlob(ctx context.Context, blobs Blobs, f api.File, dst string, sync bool) error {
	src, err := blobs.Open(ctx, f.Digest)
	if err != nil {
		return fmt.Errorf("blob %s of %s: %w", f.Digest, f.Path, err)
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil {
		return fmt.Errorf("blob %s of %s: %w", f.Digest, f.Path, err)
	}
	if st.Size() != f.Size {
		return fmt.Errorf("blob %s of %s: %d bytes, manifest says %d", f.Digest, f.Path, st.Size(), f.Size)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	// The cache is not trusted: hash while copying and refuse content
	// that is not the blob (a same-size corruption passes every size
	// check).
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(out, h), src)
	if err == nil && n != f.Size {
		err = fmt.Errorf("blob %s of %s: copied %d bytes, manifest says %d", f.Digest, f.Path, n, f.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); err == nil && got != f.Digest {
		out.Close()
		_ = os.Remove(dst)
		return &CorruptBlobError{Digest: f.Digest, Path: f.Path, Got: got}
	}
	if err == nil {
		err = out.Chmod(os.FileMode(f.Mode & 0o777))
	}
	if err == nil && sync {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", dst, err)
	}
	return nil
}

// copyJob is one file to write from the blob cache.
type copyJob struct {
	f   api.File
	dst string
}

// copyWorkers is how many files are written at once. A cold blob cache
// costs one small random read per file; several in flight keep the disk
// busy (measured: 5,000 files, 1.27 s with one writer against about 0.6 s
// with eight; see docs/benchmarks.md).
const copyWorkers = 8

// writeBlobs writes every job, several at once; the first error stops the
// rest and is returned. progress, if not nil, hears of each file written.
func writeBlobs(ctx context.Context, blobs Blobs, jobs []copyJob, syncEach bool, progress func(int, int, int64, int64)) error {
	if len(jobs) == 0 {
		return nil
	}
	var (
		mu         sync.Mutex
		filesDone  int
		bytesDone  int64
		bytesTotal int64
	)
	for _, j := range jobs {
		bytesTotal += j.f.Size
	}
	done := func(size int64) {
		if progress == nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		filesDone++
		bytesDone += size
		progress(filesDone, len(jobs), bytesDone, bytesTotal)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	work := make(chan copyJob)
	errc := make(chan error, copyWorkers)
	var wg sync.WaitGroup
	for range min(copyWorkers, len(jobs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range work {
				if err := writeBlob(ctx, blobs, j.f, j.dst, syncEach); err != nil {
					errc <- err
					cancel()
					return
				}
				done(j.f.Size)
			}
		}()
	}
feed:
	for _, j := range jobs {
		select {
		case work <- j:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		return err
	}
	return ctx.Err()
}

// removeIfExists removes a file, symlink or empty directory; a missing
// one is no error.
func removeIfExists(p string) error {
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// rmdirEmpty removes dir if it exists and is empty; a non-empty or
// missing directory is no error.
func rmdirEmpty(dir string) error {
	err := unix.Rmdir(dir)
	if err == nil || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST) {
		return nil
	}
	return fmt.Errorf("rmdir %s: %w", dir, err)
}

// rmdirUp removes dir and then its parents while they are empty,
// stopping at (and never removing) stop.
func rmdirUp(dir, stop string) error {
	for dir != stop && len(dir) > len(stop) {
		if _, err := os.Lstat(dir); err == nil {
			err := unix.Rmdir(dir)
			if errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST) {
				return nil
			}
			if err != nil && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("rmdir %s: %w", dir, err)
			}
		}
		dir = filepath.Dir(dir)
	}
	return nil
}

// exists reports whether p exists (without following a final symlink).
func exists(p string) (bool, error) {
	_, err := os.Lstat(p)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	return false, err
}

// CorruptBlobError is a cached blob whose content does not hash to its
// digest: the cache is not trusted at install. The caller may drop the
// blob from its cache and fetch it again.
type CorruptBlobError struct {
	Digest string
	Path   string // the file of the package it was to become
	Got    string // what the content hashes to, if known
}

func (e *CorruptBlobError) Error() string {
	if e.Got == "" {
		return fmt.Sprintf("blob %s of %s: %v", e.Digest, e.Path, blob.ErrDigestMismatch)
	}
	return fmt.Sprintf("blob %s of %s: content hashes to %s: %v", e.Digest, e.Path, e.Got, blob.ErrDigestMismatch)
}

// Unwrap makes errors.Is(err, blob.ErrDigestMismatch) hold.
func (e *CorruptBlobError) Unwrap() error { return blob.ErrDigestMismatch }
