// Package atomicfile writes files so that a reader, or a restart after a
// crash, sees the old content or the new, never a mix (restic's sequence):
// a temporary file of its own beside the target, created O_EXCL and
// O_NOFOLLOW under a random name (nothing planted there can redirect the
// write), the exact mode whatever the umask, fsync, rename, fsync of the
// folder. It is the one file writer of drover's state: journals, state
// files, the event spool, rendered templates, certificates, units and
// package files.
package atomicfile

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// WriteFile replaces path with data, mode perm.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	tmp, err := writeTemp(path, data, perm)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return SyncDir(filepath.Dir(path))
}

// WriteNew creates path with data, mode perm, and never replaces an
// existing file: the error then wraps fs.ErrExist. The temporary file is
// hard-linked to path, so path never holds half the data; on a file system
// without hard links it falls back to an O_EXCL write.
func WriteNew(path string, data []byte, perm os.FileMode) error {
	tmp, err := writeTemp(path, data, perm)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("write %s: %w", path, fs.ErrExist)
		}
		if err := writeExcl(path, data, perm); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	return SyncDir(filepath.Dir(path))
}

// SyncDir fsyncs a folder so the names created, renamed or removed in it
// are on disk.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// writeTemp writes data, durably, to a new temporary file beside path and
// returns its name.
func writeTemp(path string, data []byte, perm os.FileMode) (string, error) {
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", err
	}
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp-"+hex.EncodeToString(rnd[:]))
	if err := writeExcl(tmp, data, perm); err != nil {
		_ = os.Remove(tmp)
		return "", err
	}
	return tmp, nil
}

// writeExcl creates p (which must not exist, and is never followed as a
// symlink) with data and mode perm, and fsyncs it.
func writeExcl(p string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, perm&0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm) // the umask must neither widen nor narrow it
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
