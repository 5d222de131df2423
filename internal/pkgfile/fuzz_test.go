package pkgfile

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func FuzzParseSpec(f *testing.F) {
	simple, err := os.ReadFile(filepath.Join("testdata", "simple", SpecFile))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(simple)
	f.Add([]byte("group: g\nname: n\nversion: 1.0.0\n"))
	f.Add([]byte("group: g\nname: n\nversion: 1.0.0\nparams:\n  p: {type: list, default: [1, a, true]}\n"))
	f.Add([]byte("group: g\nname: n\nversion: 1.0.0\nservices:\n  - {name: w, start: bin/w, net-checks: [{tcp: 80}, {http: /h, port: 81}]}\n"))
	f.Add([]byte("group: g\nname: n\nversion: 1.0.0\nservices:\n  - {name: a, start: b, ports: [80], startup: 5s, console: {max-size: 1MiB, keep: 3}}\n"))
	f.Add([]byte("a: &a [*a, *a]\n"))
	f.Add([]byte("{"))
	f.Fuzz(func(t *testing.T, data []byte) {
		spec, err := ParseSpec(data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("ParseSpec() error = %v, want ErrInvalid", err)
			}
			return
		}
		// What ParseSpec accepts comes back normalized.
		if spec.Install == "" || spec.Tags == nil {
			t.Fatalf("ParseSpec() = %+v, not normalized", spec)
		}
	})
}

func FuzzValidateManifest(f *testing.F) {
	dir := f.TempDir()
	copyTreeTo(f, "simple", dir)
	var buf bytes.Buffer
	_, mjson, _, err := Build(dir, &buf)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(mjson)
	base, err := json.Marshal(baseManifest())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(base)
	f.Add([]byte(`{"group":"g","name":"n","version":"1.0.0","install":"root","files":[{"path":"a","type":"symlink","target":"b/../.."}]}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"group":"g","name":"n","version":"1.0.0","install":"root","files":[],"debs":[{"name":"hello","version":"2.10-3","arch":"amd64","digest":"` + strings.Repeat("a", 64) + `","size":1}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := DecodeManifest(data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("DecodeManifest() error = %v, want ErrInvalid", err)
			}
			return
		}
		// A valid manifest stays valid through its canonical encoding.
		again, err := json.Marshal(m)
		if err != nil {
			t.Fatalf("json.Marshal(valid manifest) error = %v", err)
		}
		if _, err := DecodeManifest(again); err != nil {
			t.Fatalf("DecodeManifest(re-encoded valid manifest) error = %v", err)
		}
	})
}

func FuzzReader(f *testing.F) {
	dir := f.TempDir()
	copyTreeTo(f, "simple", dir)
	var buf bytes.Buffer
	if _, _, _, err := Build(dir, &buf); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add(buf.Bytes()[:buf.Len()/2])
	f.Add([]byte{})
	lim := Limits{MaxManifest: 1 << 16, MaxBlob: 1 << 16, MaxTotal: 1 << 20, MaxEntries: 100}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := NewReader(bytes.NewReader(data), lim)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("NewReader() error = %v, want ErrInvalid", err)
			}
			return
		}
		defer r.Close()
		for {
			_, size, err := r.Next()
			if err == io.EOF {
				return
			}
			if err != nil {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("Next() error = %v, want ErrInvalid", err)
				}
				return
			}
			n, err := io.Copy(io.Discard, r)
			if err != nil {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("Read() error = %v, want ErrInvalid", err)
				}
				return
			}
			if n != size {
				t.Fatalf("read %d bytes of a blob, Next said %d", n, size)
			}
		}
	})
}
