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
}

// File pushes the package file at path.
func File(ctx context.Context, up Uploader, path string) (Result, error) {
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
		// Hide r's Close: the HTTP client closes a request body it is
		// given, and the reader must live on for the next blob.
		if err := up.PutBlob(ctx, digest, size, struct{ io.Reader }{r}); err != nil {
			return res, fmt.Errorf("push %s: upload blob %s: %w", path, digest, err)
		}
		res.Sent++
		res.SentBytes += size
	}
	res.Build, err = up.PushManifest(ctx, r.ManifestJSON())
	if err != nil {
		return res, fmt.Errorf("push %s: %w", path, err)
	}
	return res, nil
}
