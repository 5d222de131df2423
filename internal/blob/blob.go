// Package blob stores content-addressed blobs: file contents keyed by the
// lowercase hex SHA-256 of their bytes (JPackages' blobs, restic's storage
// contract). The server keeps its repository in a Store and every agent
// keeps its local cache in one, so this package must never link a
// database driver.
//
// Store is the one contract; FileStore is the implementation on a local
// file system. Every implementation runs the conformance suite in
// package blobtest.
package blob

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
)

// Sentinel errors, checked with errors.Is. They are permanent: retrying the
// same call gives the same answer.
var (
	// ErrNotFound means no blob is stored under the digest.
	ErrNotFound = errors.New("blob not found")
	// ErrDigestMismatch means content does not hash to the digest it was
	// stored or put under.
	ErrDigestMismatch = errors.New("blob digest mismatch")
	// ErrInvalidDigest means a digest is not 64 lowercase hex characters.
	ErrInvalidDigest = errors.New("invalid blob digest")
)

// Digest returns the digest of data.
func Digest(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// Store is a content-addressed blob store. All methods are safe for
// concurrent use, and all refuse an invalid digest with ErrInvalidDigest.
type Store interface {
	// Put stores r's content under digest. It hashes while writing and
	// refuses content whose SHA-256 differs (ErrDigestMismatch) or whose
	// reading fails or is cancelled: then nothing is stored under digest.
	// A blob appears whole or not at all, even if the process crashes.
	//
	// Put is idempotent: if the blob exists it returns nil, possibly
	// without reading r at all, so callers must not rely on r being
	// drained. Concurrent Puts of the same digest are safe.
	Put(ctx context.Context, digest string, r io.Reader) error

	// Open returns the blob's content for reading; the caller closes it.
	// It is an *os.File so callers can use copy_file_range and
	// http.ServeContent. Open does not re-hash the content: a reader that
	// must trust the bytes (the agent, before installing) hashes as it
	// reads, or calls Verify. ErrNotFound if missing.
	Open(ctx context.Context, digest string) (*os.File, error)

	// Stat returns the blob's size in bytes. ErrNotFound if missing.
	Stat(ctx context.Context, digest string) (size int64, err error)

	// Delete removes the blob. Deleting a missing blob is not an error,
	// so Delete is idempotent. A file already opened stays readable.
	Delete(ctx context.Context, digest string) error

	// List calls fn for every stored blob, in no particular order, on the
	// caller's goroutine. A blob put or deleted during List may or may not
	// be seen. If fn returns an error, List stops and returns it
	// (unwrapped, so callers can stop early with a sentinel of their own).
	List(ctx context.Context, fn func(digest string, size int64) error) error
}

// Verify re-reads the blob under digest from s and checks its SHA-256
// (restic re-checks every read). It returns ErrDigestMismatch for a
// corrupt blob and ErrNotFound for a missing one.
func Verify(ctx context.Context, s Store, digest string) error {
	f, err := s.Open(ctx, digest)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, ctxReader{ctx, f}); err != nil {
		return fmt.Errorf("verify blob %s: %w", digest, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != digest {
		return fmt.Errorf("verify blob %s: content hashes to %s: %w", digest, got, ErrDigestMismatch)
	}
	return nil
}

// ctxReader stops a long copy once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
