// Package push uploads package files to a server: it asks which blobs the
// server lacks, streams only those out of the file, then registers the
// manifest. The server verifies every digest again; a blob that does not
// match its name is refused by both ends.
package push

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/pkgfile"
)

// Uploader is what push needs of the server; *client.Client has it.
type Uploader interface {
	Missing(ctx context.Context, digests []string) ([]string, error)
	PutBlob(ctx context.Context, digest string, size int64, r io.Reader) error
	PushManifest(ctx context.Context, manifestJSON []byte) (api.Build, error)
}

// Result says what one push did.
type Result struct {
	Build api.Build
	// Blobs is how many blobs the package refers to; Sent how many of
	// them were uploaded, SentBytes their size.
	Blobs     int
	Sent      int
	SentBytes int64
	// ManifestSize is the length of the manifest as pushed: with its
	// digest, what a signature of the build covers.
	ManifestSize int64
}

// Progress is told how many bytes of the blobs to upload are sent, of how
// many. The total is known once the server has said what it lacks.
type Progress func(sent, total int64)

// File pushes the package file at path; progress, if not nil, follows the
// upload.
func File(ctx context.Context, up Uploader, path string, progress Progress) (Result, error) {
	f, err := os.Open(path)
	if err != nil {
		return Result{}, err
	}
	defer f.Close()
	r, err := pkgfile.NewReader(f, pkgfile.Limits{})
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", path, err)
	}
	defer r.Close()
	m := r.Manifest()
	res := Result{Blobs: len(m.Digests())}
	missing, err := up.Missing(ctx, m.Digests())
	if err != nil {
		return res, fmt.Errorf("push %s: %w", path, err)
	}
	want := make(map[string]bool, len(missing))
	for _, d := range missing {
		want[d] = true
	}
	total := uploadSize(m, want)
	if progress == nil {
		progress = func(int64, int64) {}
	}
	progress(0, total)
	for {
		digest, size, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return res, fmt.Errorf("%s: %w", path, err)
		}
		if !want[digest] {
			continue
		}
		body := &countingReader{r: r, add: func(n int64) {
			res.SentBytes += n
			total = max(total, res.SentBytes)
			progress(res.SentBytes, total)
		}}
		if err := up.PutBlob(ctx, digest, size, body); err != nil {
			return res, fmt.Errorf("push %s: upload blob %s: %w", path, digest, err)
		}
		res.Sent++
	}
	res.ManifestSize = int64(len(r.ManifestJSON()))
	res.Build, err = up.PushManifest(ctx, r.ManifestJSON())
	if err != nil {
		return res, fmt.Errorf("push %s: %w", path, err)
	}
	return res, nil
}

// uploadSize adds up the sizes of the wanted blobs the manifest knows
// (file entries carry sizes; scripts and templates do not, and are small).
func uploadSize(m *api.Manifest, want map[string]bool) int64 {
	var total int64
	seen := map[string]bool{}
	for _, f := range m.Files {
		if want[f.Digest] && !seen[f.Digest] {
			seen[f.Digest] = true
			total += f.Size
		}
	}
	return total
}

// countingReader reports bytes as they are read. It also hides the
// package reader's Close: the HTTP client closes a request body it is
// given, and the reader must live on for the next blob.
type countingReader struct {
	r   io.Reader
	add func(int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.add(int64(n))
	}
	return n, err
}
