package blob_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/blob"
	"github.com/drover-dev/drover/internal/blob/blobtest"
)

func newFileStore(t *testing.T, dir string) *blob.FileStore {
	t.Helper()
	s, err := blob.NewFileStore(blob.FileConfig{Dir: dir})
	if err != nil {
		t.Fatalf("NewFileStore(%s) = %v", dir, err)
	}
	return s
}

func TestFileStore(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) blob.Store {
		return newFileStore(t, t.TempDir())
	})
}

func TestFileStoreNoSync(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) blob.Store {
		s, err := blob.NewFileStore(blob.FileConfig{Dir: t.TempDir(), NoSync: true})
		if err != nil {
			t.Fatalf("NewFileStore = %v", err)
		}
		return s
	})
}

func TestFileStoreLayout(t *testing.T) {
	dir := t.TempDir()
	s := newFileStore(t, dir)
	data := []byte("layout")
	d := blob.Digest(data)
	if err := s.Put(context.Background(), d, bytes.NewReader(data)); err != nil {
		t.Fatalf("Put = %v", err)
	}
	want := filepath.Join(dir, "sha256", d[:2], d)
	if got := s.Path(d); got != want {
		t.Errorf("Path(%s) = %s, want %s", d, got, want)
	}
	fi, err := os.Stat(want)
	if err != nil {
		t.Fatalf("blob file: %v", err)
	}
	if got := fi.Mode().Perm(); got != 0o444 {
		t.Errorf("blob mode = %v, want -r--r--r--", got)
	}
	if got := s.Path("not-a-digest"); got != "" {
		t.Errorf("Path(invalid) = %q, want empty", got)
	}
	tmp, err := os.ReadDir(filepath.Join(dir, "tmp"))
	if err != nil || len(tmp) != 0 {
		t.Errorf("tmp holds %d entries (%v) after Put, want none", len(tmp), err)
	}
}

// A crash between creating the temp file and renaming it leaves a temp
// file behind; reopening the store removes it and keeps finished blobs.
func TestFileStoreCrashLeftovers(t *testing.T) {
	dir := t.TempDir()
	s := newFileStore(t, dir)
	kept := []byte("finished before the crash")
	d := blob.Digest(kept)
	if err := s.Put(context.Background(), d, bytes.NewReader(kept)); err != nil {
		t.Fatalf("Put = %v", err)
	}
	partial := blob.Digest([]byte("interrupted upload"))
	leftovers := []string{
		filepath.Join(dir, "tmp", partial[:16]+"-123456"),
		filepath.Join(dir, "tmp", "stray-dir", "inner"),
	}
	for _, p := range leftovers {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("half"), 0o444); err != nil {
			t.Fatal(err)
		}
	}

	s = newFileStore(t, dir)
	entries, err := os.ReadDir(filepath.Join(dir, "tmp"))
	if err != nil || len(entries) != 0 {
		t.Errorf("after reopen tmp holds %d entries (%v), want none", len(entries), err)
	}
	if _, err := s.Stat(context.Background(), partial); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Stat(interrupted) = %v, want ErrNotFound", err)
	}
	if err := blob.Verify(context.Background(), s, d); err != nil {
		t.Errorf("Verify(finished blob) after reopen = %v, want nil", err)
	}
}

func TestFileStoreVerifyDetectsCorruption(t *testing.T) {
	s := newFileStore(t, t.TempDir())
	data := []byte("original")
	d := blob.Digest(data)
	if err := s.Put(context.Background(), d, bytes.NewReader(data)); err != nil {
		t.Fatalf("Put = %v", err)
	}
	p := s.Path(d)
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("bitrot!!"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := blob.Verify(context.Background(), s, d); !errors.Is(err, blob.ErrDigestMismatch) {
		t.Errorf("Verify(corrupt) = %v, want ErrDigestMismatch", err)
	}
}

func TestFileStoreListIgnoresStrays(t *testing.T) {
	dir := t.TempDir()
	s := newFileStore(t, dir)
	d := blob.Digest([]byte("real"))
	if err := s.Put(context.Background(), d, strings.NewReader("real")); err != nil {
		t.Fatalf("Put = %v", err)
	}
	other := blob.Digest([]byte("misplaced"))
	strays := []string{
		filepath.Join(dir, "sha256", "README"),
		filepath.Join(dir, "sha256", d[:2], "notes.txt"),
		filepath.Join(dir, "sha256", d[:2], other), // wrong fan-out dir
	}
	for _, p := range strays {
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	err := s.List(context.Background(), func(digest string, _ int64) error {
		got = append(got, digest)
		return nil
	})
	if err != nil || len(got) != 1 || got[0] != d {
		t.Errorf("List = %v, %v, want [%s], nil", got, err, d)
	}
}

func TestNewFileStoreNoDir(t *testing.T) {
	if _, err := blob.NewFileStore(blob.FileConfig{}); err == nil {
		t.Error("NewFileStore(no Dir) = nil error, want an error")
	}
}

// Digests arrive from URLs; a string that passes ValidDigest must map to
// a path inside the store, and anything else must be refused.
func FuzzFileStoreDigest(f *testing.F) {
	for _, s := range []string{blob.Digest(nil), "../../etc/passwd", "", strings.Repeat("a", 64), "aa/../" + strings.Repeat("b", 58)} {
		f.Add(s)
	}
	dir := f.TempDir()
	s, err := blob.NewFileStore(blob.FileConfig{Dir: dir, NoSync: true})
	if err != nil {
		f.Fatal(err)
	}
	root := filepath.Join(dir, "sha256") + string(filepath.Separator)
	f.Fuzz(func(t *testing.T, digest string) {
		_, err := s.Stat(context.Background(), digest)
		if !api.ValidDigest(digest) {
			if !errors.Is(err, blob.ErrInvalidDigest) {
				t.Errorf("Stat(%q) = %v, want ErrInvalidDigest", digest, err)
			}
			return
		}
		if !errors.Is(err, blob.ErrNotFound) {
			t.Errorf("Stat(%q) = %v, want ErrNotFound", digest, err)
		}
		if p := s.Path(digest); !strings.HasPrefix(p, root) || filepath.Clean(p) != p {
			t.Errorf("Path(%q) = %q, want a clean path under %s", digest, p, root)
		}
	})
}

// A blob folder made before, open to all, is made private.
func TestFileStorePrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "blobs")
	if err := os.MkdirAll(filepath.Join(dir, "sha256"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := blob.NewFileStore(blob.FileConfig{Dir: dir}); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{dir, filepath.Join(dir, "sha256"), filepath.Join(dir, "tmp")} {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if m := fi.Mode().Perm(); m != 0o700 {
			t.Errorf("%s has mode %v, want 0700", d, m)
		}
	}
}
