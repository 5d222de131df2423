package param

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/drover-dev/drover/internal/api"
)

// Rendering a template must not write through anything planted beside its
// dest (the old fixed temp name dest+".drover-tmp" was followed if it was
// a symlink), and a new rendered file, which may hold secrets, is not
// world-readable; a file already there keeps its mode.
func TestWriteTemplatesSafe(t *testing.T) {
	loc := t.TempDir()
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("untouched"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(loc, "etc"), 0o777); err != nil {
		t.Fatal(err)
	}
	// A local user plants symlinks at the temp names a writer might use.
	for _, n := range []string{"app.conf.drover-tmp", ".app.conf.drover-tmp"} {
		if err := os.Symlink(victim, filepath.Join(loc, "etc", n)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(loc, "kept.conf"), []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	m := &api.Manifest{Templates: []api.Template{
		{Src: "app.conf.tmpl", Dest: "etc/app.conf", Digest: "a"},
		{Src: "kept.conf.tmpl", Dest: "kept.conf", Digest: "b"},
	}}
	src := map[string]string{"a": "token={{.Params.token}}\n", "b": "k={{.Params.token}}\n"}
	open := func(_ context.Context, d string) (io.ReadCloser, error) {
		return io.NopCloser(strings.NewReader(src[d])), nil
	}
	d := Data{Params: map[string]any{"token": "s3cret"}}
	if err := WriteTemplates(context.Background(), loc, m, d, open); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "untouched" {
		t.Errorf("file behind a planted symlink was written: %q", b)
	}
	for _, c := range []struct {
		path, content string
		mode          os.FileMode
	}{
		{"etc/app.conf", "token=s3cret\n", 0o640},
		{"kept.conf", "k=s3cret\n", 0o600},
	} {
		p := filepath.Join(loc, c.path)
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(p); string(b) != c.content || fi.Mode() != c.mode {
			t.Errorf("%s: %q mode %v, want %q mode %v", c.path, b, fi.Mode(), c.content, c.mode)
		}
	}
}
