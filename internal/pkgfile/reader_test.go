package pkgfile

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/google/go-cmp/cmp"
	"github.com/klauspost/compress/zstd"

	"github.com/drover-dev/drover/internal/api"
)

// readAll reads every blob of a package file into a map by digest.
func readAll(t *testing.T, data []byte, lim Limits) (*Reader, map[string][]byte, error) {
	t.Helper()
	r, err := NewReader(bytes.NewReader(data), lim)
	if err != nil {
		return nil, nil, err
	}
	t.Cleanup(func() { r.Close() })
	blobs := map[string][]byte{}
	for {
		d, size, err := r.Next()
		if err == io.EOF {
			return r, blobs, nil
		}
		if err != nil {
			return r, blobs, err
		}
		content, err := io.ReadAll(r)
		if err != nil {
			return r, blobs, err
		}
		if int64(len(content)) != size {
			t.Errorf("blob %s: read %d bytes, Next said %d", d, len(content), size)
		}
		blobs[d] = content
	}
}

func TestRoundTrip(t *testing.T) {
	dir := simpleDir(t)
	m, mjson, digest, data := build(t, dir)

	r, blobs, err := readAll(t, data, Limits{})
	if err != nil {
		t.Fatalf("reading a built package: %v", err)
	}
	if r.Digest() != digest {
		t.Errorf("Digest() = %s, want %s", r.Digest(), digest)
	}
	if !bytes.Equal(r.ManifestJSON(), mjson) {
		t.Errorf("ManifestJSON() differs from what Build returned")
	}
	if r.Manifest().Coordinate() != m.Coordinate() || len(r.Manifest().Files) != len(m.Files) {
		t.Errorf("Manifest() = %v with %d files, want %v with %d", r.Manifest().Coordinate(), len(r.Manifest().Files), m.Coordinate(), len(m.Files))
	}

	// Every blob holds the content of the source file it came from, and
	// each distinct content is there once.
	want := map[string][]byte{}
	add := func(rel, digest string) {
		content, err := os.ReadFile(filepath.Join(dir, rel))
		if err != nil {
			t.Fatal(err)
		}
		want[digest] = content
	}
	for _, f := range m.Files {
		if f.Type == api.TypeFile {
			tree := "files"
			if len(f.Overlay) > 0 {
				tree = "files@" + map[string]string{"armv7l": "armv7l", "armv7l,neon": "neon,armv7l"}[overlayKey(f.Overlay)]
			}
			add(tree+"/"+f.Path, f.Digest)
		}
	}
	for name, d := range m.Scripts {
		add("scripts/"+name, d)
	}
	for _, tm := range m.Templates {
		add(tm.Src, tm.Digest)
	}
	if diff := cmp.Diff(want, blobs); diff != "" {
		t.Errorf("blobs mismatch (-want +got):\n%s", diff)
	}
	if len(blobs) != len(m.Digests()) {
		t.Errorf("read %d blobs, manifest refers to %d", len(blobs), len(m.Digests()))
	}
}

func TestReaderSkipsUnreadBlobs(t *testing.T) {
	_, _, _, data := build(t, simpleDir(t))
	r, err := NewReader(bytes.NewReader(data), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	n := 0
	for {
		_, _, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("Next() error = %v", err)
		}
		n++
	}
	if want := len(r.Manifest().Digests()); n != want {
		t.Errorf("Next() gave %d blobs, want %d", n, want)
	}
}

// entry is one tar entry of a hand-made package file.
type entry struct {
	name string
	typ  byte
	body string
	size int64 // header size when it differs from len(body)
	link string
}

// archive writes entries as a zstd-compressed tar. A header whose size
// exceeds its body is left unfinished, as a truncated or lying file is.
func archive(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	complete := true
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		size := int64(len(e.body))
		if e.size != 0 {
			size = e.size
		}
		if typ != tar.TypeReg {
			size = 0
		}
		hdr := &tar.Header{Name: e.name, Typeflag: typ, Size: size, Mode: 0o644, Linkname: e.link, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatalf("tar header %s: %v", e.name, err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatal(err)
		}
		if size != int64(len(e.body)) {
			complete = false
			break
		}
	}
	if complete {
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
	}
	var out bytes.Buffer
	zw, err := zstd.NewWriter(&out)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := zw.Write(tarBuf.Bytes()); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func manifestJSON(t *testing.T, files ...api.File) string {
	t.Helper()
	m := &api.Manifest{Group: "com.example", Name: "evil", Version: "1.0.0", Tags: []string{}, Install: "prefix", Files: files}
	if files == nil {
		m.Files = []api.File{}
	}
	data, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestReaderHostile(t *testing.T) {
	content := "hello\n"
	d := sha(content)
	other := sha("other")
	good := manifestJSON(t, api.File{Path: "hello", Type: "file", Mode: 0o644, Size: int64(len(content)), Digest: d})
	man := entry{name: "manifest.json", body: good}
	blob := entry{name: "blobs/" + d, body: content}

	// The well-formed archive passes, so each failure below is due to
	// its one change.
	if _, _, err := readAll(t, archive(t, man, blob), Limits{}); err != nil {
		t.Fatalf("well-formed archive: %v", err)
	}

	tests := []struct {
		name string
		data []byte
		lim  Limits
		want string
		// mismatch says the error must also wrap ErrDigestMismatch.
		mismatch bool
	}{
		{name: "not zstd", data: []byte("manifest.json\x00 plain tar?"), want: "package file"},
		{name: "empty", data: archive(t), want: "empty"},
		{name: "manifest not first", data: archive(t, blob, man), want: `first entry "blobs/` + d},
		{name: "absolute manifest", data: archive(t, entry{name: "/manifest.json", body: good}, blob), want: `"/manifest.json"`},
		{name: "manifest directory", data: archive(t, entry{name: "manifest.json", typ: tar.TypeDir}), want: "a directory"},
		{name: "absolute blob", data: archive(t, man, entry{name: "/blobs/" + d, body: content}), want: `"/blobs/` + d},
		{name: "dotdot entry", data: archive(t, man, entry{name: "blobs/../../etc/passwd", body: content}), want: `"blobs/../../etc/passwd"`},
		{name: "dot entry", data: archive(t, man, entry{name: "./blobs/" + d, body: content}), want: `"./blobs/`},
		{name: "other name", data: archive(t, man, entry{name: "README", body: "x"}), want: `"README"`},
		{name: "uppercase digest", data: archive(t, man, entry{name: "blobs/" + strings.ToUpper(d), body: content}), want: "want blobs/<sha256 hex>"},
		{name: "directory entry", data: archive(t, man, entry{name: "blobs/", typ: tar.TypeDir}), want: `"blobs/": a directory`},
		{name: "symlink entry", data: archive(t, man, entry{name: "blobs/" + d, typ: tar.TypeSymlink, link: "/etc/passwd"}), want: "a symlink"},
		{name: "hardlink entry", data: archive(t, man, entry{name: "blobs/" + d, typ: tar.TypeLink, link: "/etc/passwd"}), want: "a hard link"},
		{name: "char device entry", data: archive(t, man, entry{name: "blobs/" + d, typ: tar.TypeChar}), want: "a character device"},
		{name: "fifo entry", data: archive(t, man, entry{name: "blobs/" + d, typ: tar.TypeFifo}), want: "a named pipe"},
		{name: "digest mismatch", data: archive(t, man, entry{name: "blobs/" + d, body: "HELLO\n"}), want: "hashes to", mismatch: true},
		{name: "size differs from manifest", data: archive(t, man, entry{name: "blobs/" + d, body: content + "x"}), want: "the manifest says"},
		{name: "unreferenced blob", data: archive(t, man, blob, entry{name: "blobs/" + other, body: "other"}), want: "does not refer to"},
		{name: "duplicate blob", data: archive(t, man, blob, blob), want: "listed twice"},
		{name: "missing blob", data: archive(t, man), want: "blob " + d + " is missing"},
		{name: "second manifest", data: archive(t, man, blob, man), want: "second manifest"},
		{name: "truncated blob", data: archive(t, man, entry{name: "blobs/" + d, body: "hel", size: int64(len(content))}), want: "package file"},
		{name: "manifest not JSON", data: archive(t, entry{name: "manifest.json", body: "{"}), want: "manifest.json"},
		{name: "manifest invalid", data: archive(t, entry{name: "manifest.json", body: manifestJSON(t, api.File{Path: "../x", Type: "dir"})}), want: `".."`},
		{
			name: "manifest path through a symlink entry",
			data: archive(t, entry{name: "manifest.json", body: manifestJSON(t,
				api.File{Path: "etc", Type: "symlink", Target: "sub"},
				api.File{Path: "etc/passwd", Type: "file", Size: int64(len(content)), Digest: d},
			)}, blob),
			want: `goes through symlink "etc"`,
		},
		{
			name: "manifest symlink escaping root",
			data: archive(t, entry{name: "manifest.json", body: manifestJSON(t,
				api.File{Path: "a", Type: "dir"},
				api.File{Path: "a/up", Type: "symlink", Target: "../../../etc"},
			)}),
			want: "leaves the install root",
		},
		{name: "manifest over limit", data: archive(t, man, blob), lim: Limits{MaxManifest: 10}, want: "more than 10"},
		{name: "blob over limit", data: archive(t, man, blob), lim: Limits{MaxBlob: 5}, want: "more than 5"},
		{name: "total over limit", data: archive(t, man, blob), lim: Limits{MaxTotal: int64(len(good)) + 5}, want: "together"},
		{name: "entries over limit", data: archive(t, man, blob), lim: Limits{MaxEntries: 1}, want: "more than 1 entries"},
		// A header claiming a huge size is refused before anything is
		// read: there is no body at all behind it.
		{name: "huge blob header", data: archive(t, man, entry{name: "blobs/" + d, size: 1 << 40}), want: "more than"},
		{name: "huge manifest header", data: archive(t, entry{name: "manifest.json", size: 1 << 40}), want: "more than"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := readAll(t, tc.data, tc.lim)
			if err == nil {
				t.Fatalf("reading the archive succeeded, want error containing %q", tc.want)
			}
			t.Logf("error: %v", err)
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error = %v, want it to wrap ErrInvalid", err)
			}
			if tc.mismatch && !errors.Is(err, ErrDigestMismatch) {
				t.Errorf("error = %v, want it to wrap ErrDigestMismatch", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestReaderDigestMismatchIsSticky(t *testing.T) {
	d := sha("hello\n")
	data := archive(t,
		entry{name: "manifest.json", body: manifestJSON(t, api.File{Path: "f", Type: "file", Size: 6, Digest: d})},
		entry{name: "blobs/" + d, body: "HELLO\n"},
	)
	r, err := NewReader(bytes.NewReader(data), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	// Skipping the blob still verifies it.
	_, _, err = r.Next()
	if !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("Next() after an unread bad blob = %v, want ErrDigestMismatch", err)
	}
	if _, _, err2 := r.Next(); !errors.Is(err2, ErrDigestMismatch) {
		t.Errorf("Next() again = %v, want the same error", err2)
	}
	if _, err2 := r.Read(make([]byte, 1)); !errors.Is(err2, ErrDigestMismatch) {
		t.Errorf("Read() after the error = %v, want the same error", err2)
	}
}

func TestReaderSourceErrorIsNotInvalid(t *testing.T) {
	_, _, _, data := build(t, simpleDir(t))
	boom := errors.New("connection reset")
	for _, cut := range []int{0, 20, len(data) / 2} {
		src := io.MultiReader(bytes.NewReader(data[:cut]), iotest.ErrReader(boom))
		r, err := NewReader(src, Limits{})
		if err == nil {
			for err == nil {
				if _, _, err = r.Next(); err == nil {
					_, err = io.Copy(io.Discard, r)
				}
			}
			r.Close()
		}
		if !errors.Is(err, boom) || errors.Is(err, ErrInvalid) {
			t.Errorf("reading a package cut at %d by a failing source: error = %v, want %v and not ErrInvalid", cut, err, boom)
		}
	}
}
