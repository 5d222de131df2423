package push

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/pkgfile"
)

// fakeRepo is a server that already holds some blobs.
type fakeRepo struct {
	have     map[string][]byte
	manifest []byte
}

func (f *fakeRepo) Missing(_ context.Context, digests []string) ([]string, error) {
	var out []string
	for _, d := range digests {
		if _, ok := f.have[d]; !ok {
			out = append(out, d)
		}
	}
	return out, nil
}

func (f *fakeRepo) PutBlob(_ context.Context, digest string, size int64, r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(data)
	if hex.EncodeToString(sum[:]) != digest || int64(len(data)) != size {
		return &api.Error{Code: api.EINVALID, Message: "digest mismatch"}
	}
	f.have[digest] = data
	return nil
}

func (f *fakeRepo) PushManifest(_ context.Context, m []byte) (api.Build, error) {
	f.manifest = m
	return api.Build{Coordinate: "com.example:p:1.0.0"}, nil
}

func TestFileUploadsOnlyMissingWithProgress(t *testing.T) {
	src := t.TempDir()
	write := func(rel, content string) {
		p := filepath.Join(src, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("drover.yaml", "group: com.example\nname: p\nversion: 1.0.0\n")
	write("files/a", "aaaa")
	write("files/b", "bbbbbbbb")
	var buf bytes.Buffer
	if _, _, _, err := pkgfile.Build(src, &buf); err != nil {
		t.Fatal(err)
	}
	pkg := filepath.Join(t.TempDir(), "p.drover")
	if err := os.WriteFile(pkg, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("aaaa"))
	repo := &fakeRepo{have: map[string][]byte{hex.EncodeToString(sum[:]): []byte("aaaa")}}
	var last, lastTotal int64
	res, err := File(context.Background(), repo, pkg, func(sent, total int64) { last, lastTotal = sent, total })
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != 1 || res.SentBytes != 8 || res.Blobs != 2 {
		t.Errorf("File = %+v, want 1 of 2 blobs sent, 8 bytes", res)
	}
	if last != 8 || lastTotal != 8 {
		t.Errorf("last progress = %d of %d, want 8 of 8", last, lastTotal)
	}
	if repo.manifest == nil {
		t.Error("the manifest was not pushed")
	}
}
