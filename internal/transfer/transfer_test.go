package transfer

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/drover-dev/drover/internal/api"
)

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func noisy(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.IntN(256))
	}
	return b
}

type entry struct {
	kind        Kind
	digest      string
	base        string
	data, delta []byte
}

func writePack(t testing.TB, entries []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	var size int64
	for _, e := range entries {
		size += int64(len(e.data) + len(e.delta))
	}
	pw, err := NewPackWriter(&buf, size)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.kind == KindDelta {
			err = pw.Delta(e.digest, e.base, e.delta)
		} else {
			err = pw.Blob(e.digest, int64(len(e.data)), bytes.NewReader(e.data))
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := pw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func readAll(stream []byte, limit int64) (map[string][]byte, error) {
	pr, err := NewPackReader(bytes.NewReader(stream), api.PackRequest{}, func(Entry) int64 { return limit })
	if err != nil {
		return nil, err
	}
	defer pr.Close()
	out := map[string][]byte{}
	for {
		e, err := pr.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		data, err := io.ReadAll(e.Body)
		if err != nil {
			return out, err
		}
		out[string(e.Kind)+e.Digest+e.Base] = data
	}
}

func TestPackRoundTripAndCompressesAcrossFiles(t *testing.T) {
	a := noisy(1, 200_000)
	b := append(append([]byte{}, a...), "tail"...) // near-identical to a
	old := noisy(2, 50_000)
	target := append(append([]byte{}, old[:40_000]...), noisy(3, 100)...)
	delta, err := MakeDelta(old, target)
	if err != nil {
		t.Fatal(err)
	}
	stream := writePack(t, []entry{
		{kind: KindBlob, digest: digest(a), data: a},
		{kind: KindBlob, digest: digest(b), data: b},
		{kind: KindDelta, digest: digest(target), base: digest(old), delta: delta},
		{kind: KindBlob, digest: digest(nil), data: nil},
	})
	// Two near-identical noisy files cost one: the stream compresses
	// across them.
	if len(stream) > len(a)+len(a)/20 {
		t.Errorf("pack of two near-identical 200 kB files is %d bytes", len(stream))
	}
	got, err := readAll(stream, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got["B"+digest(a)], a) || !bytes.Equal(got["B"+digest(b)], b) || len(got["B"+digest(nil)]) != 0 {
		t.Error("blobs did not come back as written")
	}
	back, err := ApplyDelta(old, got["D"+digest(target)+digest(old)], int64(len(target)))
	if err != nil || !bytes.Equal(back, target) {
		t.Fatalf("delta did not rebuild the target: %v", err)
	}
	if len(delta) > 2000 {
		t.Errorf("delta of a file sharing 40 kB of 40.1 kB with its base is %d bytes", len(delta))
	}
}

func TestPackReaderRefuses(t *testing.T) {
	a := noisy(4, 10_000)
	stream := writePack(t, []entry{{kind: KindBlob, digest: digest(a), data: a}, {kind: KindBlob, digest: digest(a[:5]), data: a[:5]}})
	tests := []struct {
		name   string
		stream []byte
		limit  int64
		want   error
	}{
		{"cut in the middle", stream[:len(stream)/2], 1 << 20, ErrTruncated},
		{"entry over its limit", stream, 100, ErrMalformed},
		{"not zstd", []byte("hello, this is not a pack"), 1 << 20, nil},
		{"empty", nil, 1 << 20, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := readAll(tt.stream, tt.limit)
			if err == nil {
				t.Fatal("read without error")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestApplyDeltaRefusesCorruptOrWrongBase(t *testing.T) {
	old := noisy(5, 30_000)
	target := append(append([]byte{}, old...), noisy(6, 50)...)
	delta, err := MakeDelta(old, target)
	if err != nil {
		t.Fatal(err)
	}
	corrupt := append([]byte{}, delta...)
	corrupt[len(corrupt)/2] ^= 0xff
	if out, err := ApplyDelta(old, corrupt, 1<<20); err == nil && bytes.Equal(out, target) {
		t.Error("a corrupt delta gave the target")
	}
	if out, err := ApplyDelta(noisy(7, 30_000), delta, 1<<20); err == nil && bytes.Equal(out, target) {
		t.Error("a delta against the wrong base gave the target")
	}
	if _, err := ApplyDelta(old, delta, 100); err == nil {
		t.Error("a result over the limit was accepted")
	}
}

func TestEstimate(t *testing.T) {
	from := &api.Manifest{Files: []api.File{{Path: "bin/a", Digest: "a1", Size: 1000}, {Path: "doc", Digest: "d", Size: 50}}}
	to := &api.Manifest{Files: []api.File{{Path: "bin/a", Digest: "a2", Size: 1000}, {Path: "doc", Digest: "d", Size: 50},
		{Path: "bin/b", Digest: "b", Size: 2000}, {Path: "bin/c", Digest: "b", Size: 2000}, {Path: "etc", Type: api.TypeDir}}}
	tests := []struct {
		name string
		from *api.Manifest
		want int64
	}{
		{"first install: every blob once, compressed", nil, 1067},
		{"upgrade: changed file as delta, new one compressed, same one not at all", from, 150 + 700},
	}
	for _, tt := range tests {
		if got := Estimate(Needs(tt.from, to)); got < tt.want-2 || got > tt.want+2 {
			t.Errorf("%s: %d, want %d", tt.name, got, tt.want)
		}
	}
	if got := Estimate([]Need{{Size: 100, HasBase: true, Delta: 7}, {Size: 100, Compressed: 40}}); got != 47 {
		t.Errorf("known sizes: %d, want 47", got)
	}
}

func FuzzPackReader(f *testing.F) {
	a := noisy(8, 3000)
	f.Add(writePack(f, []entry{{kind: KindBlob, digest: digest(a), data: a}}))
	f.Add(writePack(f, []entry{{kind: KindDelta, digest: digest(a), base: digest(a[:9]), delta: a[:100]}}))
	f.Add([]byte{})
	f.Add([]byte("\x28\xb5\x2f\xfd"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = readAll(data, 1<<16)
	})
}

func FuzzApplyDelta(f *testing.F) {
	old := noisy(9, 4000)
	delta, err := MakeDelta(old, append(append([]byte{}, old...), 'x'))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(delta)
	f.Add([]byte{})
	f.Add(delta[:len(delta)/2])
	f.Fuzz(func(t *testing.T, d []byte) {
		out, err := ApplyDelta(old, d, 1<<16)
		if err == nil && len(out) > 1<<16 {
			t.Fatalf("result of %d bytes over the limit", len(out))
		}
	})
}

// TestPackReaderMemory: a reader allocates the window its stream declares,
// so a pack of a few small files must not cost a download tens of MiB.
func TestPackReaderMemory(t *testing.T) {
	tests := []struct {
		name     string
		size     int
		maxHeap  uint64 // per open reader
		wantWind int
	}{
		{"small pack", 100, 4 << 20, minPackWindow},
		{"3 MiB pack", 3 << 20, 12 << 20, 4 << 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := bytes.Repeat([]byte("drover "), tt.size/7+1)[:tt.size]
			pack := writePack(t, []entry{{kind: KindBlob, digest: digest(data), data: data}})
			if w := packWindow(int64(tt.size)); w != tt.wantWind {
				t.Errorf("packWindow(%d) = %d, want %d", tt.size, w, tt.wantWind)
			}
			const readers = 8
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			open := make([]*PackReader, 0, readers)
			for range readers {
				pr, err := NewPackReader(bytes.NewReader(pack), api.PackRequest{}, func(Entry) int64 { return int64(tt.size) })
				if err != nil {
					t.Fatal(err)
				}
				e, err := pr.Next()
				if err != nil {
					t.Fatal(err)
				}
				if _, err := io.Copy(io.Discard, e.Body); err != nil {
					t.Fatal(err)
				}
				open = append(open, pr)
			}
			runtime.ReadMemStats(&after)
			if per := (after.HeapAlloc - before.HeapAlloc) / readers; per > tt.maxHeap {
				t.Errorf("an open reader of a %d-byte pack holds %d KiB, want at most %d KiB", tt.size, per>>10, tt.maxHeap>>10)
			}
			runtime.KeepAlive(open)
		})
	}
}

// TestPackFormat2 writes a format 2 stream (entries named by their place
// in the request, a filtered one among them) and reads it back; a stream
// naming an entry the request does not have is refused.
func TestPackFormat2(t *testing.T) {
	bin := code(30_000)
	small := []byte("a small text file\n")
	old := noisy(4, 20_000)
	target := append(bytes.Clone(old[:15_000]), "patched"...)
	delta, err := MakeDelta(old, target)
	if err != nil {
		t.Fatal(err)
	}
	req := api.PackRequest{Digests: []string{digest(small), digest(bin), digest(target)},
		Bases: map[string]string{digest(target): digest(old)}, Format: PackFormat2}
	var buf bytes.Buffer
	pw, err := NewPackWriter2(&buf, 100_000, req.Digests)
	if err != nil {
		t.Fatal(err)
	}
	if err := pw.Filtered(digest(bin), bytes.Clone(bin)); err != nil {
		t.Fatal(err)
	}
	if err := pw.Blob(digest(small), int64(len(small)), bytes.NewReader(small)); err != nil {
		t.Fatal(err)
	}
	if err := pw.Delta(digest(target), digest(old), delta); err != nil {
		t.Fatal(err)
	}
	if err := pw.Blob(digest(old), int64(len(old)), bytes.NewReader(old)); err == nil {
		t.Error("a blob the request does not name was written")
	}
	if err := pw.Close(); err != nil {
		t.Fatal(err)
	}
	pr, err := NewPackReader(bytes.NewReader(buf.Bytes()), req, func(Entry) int64 { return 1 << 20 })
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	got := map[string][]byte{}
	for {
		e, err := pr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(e.Body)
		if err != nil {
			t.Fatal(err)
		}
		got[string(e.Kind)+e.Digest+e.Base] = data
	}
	if !bytes.Equal(got["B"+digest(bin)], bin) || !bytes.Equal(got["B"+digest(small)], small) {
		t.Error("blobs did not come back as written")
	}
	if back, err := ApplyDelta(old, got["D"+digest(target)+digest(old)], 1<<20); err != nil || !bytes.Equal(back, target) {
		t.Errorf("delta did not rebuild the target: %v", err)
	}

	// The same stream read against a shorter request: the entries it
	// names past its end are refused.
	short := api.PackRequest{Digests: req.Digests[:1], Format: PackFormat2}
	_, err = readAllReq(buf.Bytes(), short)
	if !errors.Is(err, ErrMalformed) {
		t.Errorf("entry past the request: err = %v, want ErrMalformed", err)
	}
	// A format 1 writer refuses filtered entries.
	pw1, err := NewPackWriter(io.Discard, 100)
	if err != nil {
		t.Fatal(err)
	}
	if err := pw1.Filtered(digest(bin), bytes.Clone(bin)); err == nil {
		t.Error("a format 1 stream took a filtered entry")
	}
}

// TestPackFormat2Smaller: naming entries by place saves the 32-byte
// digests of format 1.
func TestPackFormat2Smaller(t *testing.T) {
	var digests []string
	var datas [][]byte
	for i := range 500 {
		d := []byte(fmt.Sprintf("file %d\n", i))
		digests = append(digests, digest(d))
		datas = append(datas, d)
	}
	size := func(pw *PackWriter, buf *bytes.Buffer) int {
		for i, d := range datas {
			if err := pw.Blob(digests[i], int64(len(d)), bytes.NewReader(d)); err != nil {
				t.Fatal(err)
			}
		}
		if err := pw.Close(); err != nil {
			t.Fatal(err)
		}
		return buf.Len()
	}
	var b1, b2 bytes.Buffer
	pw1, _ := NewPackWriter(&b1, 10_000)
	pw2, _ := NewPackWriter2(&b2, 10_000, digests)
	if s1, s2 := size(pw1, &b1), size(pw2, &b2); s2 > s1-500*30 {
		t.Errorf("500 small entries: format 2 is %d bytes, format 1 %d; want 30 bytes an entry less", s2, s1)
	}
}

func readAllReq(stream []byte, req api.PackRequest) (int, error) {
	pr, err := NewPackReader(bytes.NewReader(stream), req, func(Entry) int64 { return 1 << 20 })
	if err != nil {
		return 0, err
	}
	defer pr.Close()
	n := 0
	for {
		e, err := pr.Next()
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		if _, err := io.Copy(io.Discard, e.Body); err != nil {
			return n, err
		}
		n++
	}
}
