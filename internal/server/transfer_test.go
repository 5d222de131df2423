package server

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/transfer"
)

func noisy(seed uint64, n int) string {
	r := rand.New(rand.NewPCG(seed, 2))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.IntN(256))
	}
	return string(b)
}

func TestBlobCompressionIsNegotiated(t *testing.T) {
	ts := newTestServer(t, time.Second)
	ctx := context.Background()
	content := strings.Repeat("a line of a config file that repeats\n", 3000)
	_, fd := ts.push(t, "tool", "1.0.0", []string{"linux"}, content)
	ts.report(t, "d1", "linux")
	if _, err := ts.admin.SetState(ctx, api.DesiredState{ID: "d1", Apps: []api.DesiredApp{{Name: "com.example:tool", Version: "1.0.0"}}}); err != nil {
		t.Fatal(err)
	}
	// An older agent asks without Accept-Encoding: zstd and gets the blob.
	rc, _, err := ts.dev["d1"].Blob(ctx, fd)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(rc)
	rc.Close()
	if string(raw) != content {
		t.Fatalf("plain GET gave %d bytes, not the blob's %d", len(raw), len(content))
	}
	// A newer one gets the zstd form, smaller, and can resume it.
	body, enc, _, err := ts.dev["d1"].BlobRange(ctx, fd, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	z, _ := io.ReadAll(body)
	body.Close()
	if enc != "zstd" || len(z) >= len(content)/10 {
		t.Fatalf("compressed GET: encoding %q, %d bytes of %d", enc, len(z), len(content))
	}
	dec, _ := zstd.NewReader(nil)
	defer dec.Close()
	if got, err := dec.DecodeAll(z, nil); err != nil || string(got) != content {
		t.Fatalf("zstd form does not decode to the blob: %v", err)
	}
	body, enc, partial, err := ts.dev["d1"].BlobRange(ctx, fd, 10, true)
	if err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(body)
	body.Close()
	if enc != "zstd" || !partial || !bytes.Equal(rest, z[10:]) {
		t.Errorf("resumed compressed GET: encoding %q, partial %v, %d bytes, want the last %d", enc, partial, len(rest), len(z)-10)
	}
	// Made once, kept on disk.
	if _, err := os.Stat(ts.srv.xfer.path(zDir, fd)); err != nil {
		t.Errorf("compressed form not cached: %v", err)
	}
}

// readPack reads a whole pack answer into kind+digest -> bytes.
func readPack(t *testing.T, rc io.ReadCloser, req api.PackRequest) map[string][]byte {
	t.Helper()
	defer rc.Close()
	pr, err := transfer.NewPackReader(rc, req, func(transfer.Entry) int64 { return 1 << 30 })
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	out := map[string][]byte{}
	for {
		e, err := pr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(e.Body)
		if err != nil {
			t.Fatal(err)
		}
		out[string(e.Kind)+e.Digest] = data
	}
}

func TestPackAuthorizationAndDeltas(t *testing.T) {
	ts := newTestServer(t, time.Second)
	ctx := context.Background()
	v1 := noisy(1, 60_000)
	v2 := v1[:50_000] + noisy(2, 200) + v1[50_000:]
	md1, fd1 := ts.push(t, "tool", "1.0.0", []string{"linux"}, v1)
	_, fd2 := ts.push(t, "tool", "2.0.0", []string{"linux"}, v2)
	_, secret := ts.push(t, "secret", "1.0.0", []string{"linux"}, noisy(3, 1000))
	// d1 has tool 1.0.0 installed and wants 2.0.0; d2 wants nothing.
	if _, err := ts.dev["d1"].Report(ctx, "d1", api.Report{Tags: []string{"linux"},
		Installed: []api.InstalledApp{{Name: "com.example:tool", Version: "1.0.0", Digest: md1}}}); err != nil {
		t.Fatal(err)
	}
	ts.report(t, "d2", "linux")
	if _, err := ts.admin.SetState(ctx, api.DesiredState{ID: "d1", Apps: []api.DesiredApp{{Name: "com.example:tool", Version: "2.0.0"}}}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		dev  string
		req  api.PackRequest
		want string
	}{
		{"device asks for its blob", "d1", api.PackRequest{Digests: []string{fd2}}, ""},
		{"device asks for a blob not in its state", "d1", api.PackRequest{Digests: []string{fd2, secret}}, api.EFORBIDDEN},
		{"device without state", "d2", api.PackRequest{Digests: []string{fd2}}, api.EFORBIDDEN},
		{"base neither desired nor installed", "d1", api.PackRequest{Digests: []string{fd2}, Bases: map[string]string{fd2: secret}}, api.EFORBIDDEN},
		{"base of a blob not asked for", "d1", api.PackRequest{Digests: []string{fd2}, Bases: map[string]string{secret: fd1}}, api.EINVALID},
		{"invalid digest", "d1", api.PackRequest{Digests: []string{"../etc/passwd"}}, api.EINVALID},
		{"nothing asked", "d1", api.PackRequest{}, api.EINVALID},
		{"digest twice", "d1", api.PackRequest{Digests: []string{fd2, fd2}}, api.EINVALID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc, _, _, err := ts.dev[tt.dev].Pack(ctx, tt.req, 0, "")
			if code(err) != tt.want {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
			if err == nil {
				got := readPack(t, rc, tt.req)
				if string(got["B"+fd2]) != v2 {
					t.Errorf("pack did not carry the blob")
				}
			}
		})
	}

	// With the installed version's file as base, the answer is a delta
	// that rebuilds v2 from v1, much smaller than v2.
	req := api.PackRequest{Digests: []string{fd2}, Bases: map[string]string{fd2: fd1}}
	rc, etag, _, err := ts.dev["d1"].Pack(ctx, req, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	whole, _ := io.ReadAll(rc)
	rc.Close()
	got := readPack(t, io.NopCloser(bytes.NewReader(whole)), req)
	delta, ok := got["D"+fd2]
	if !ok {
		t.Fatalf("no delta in the answer: %d entries", len(got))
	}
	out, err := transfer.ApplyDelta([]byte(v1), delta, 1<<20)
	if err != nil || string(out) != v2 {
		t.Fatalf("delta does not rebuild v2: %v", err)
	}
	if len(delta) > len(v2)/10 {
		t.Errorf("delta is %d bytes for a 200-byte change", len(delta))
	}
	// The delta and the whole answer are kept, not made again.
	if _, err := os.Stat(ts.srv.xfer.path(deltaDir, deltaKey(fd1, fd2))); err != nil {
		t.Errorf("delta not cached: %v", err)
	}
	if _, err := os.Stat(ts.srv.xfer.path(packDir, packKey(req))); err != nil {
		t.Errorf("pack not cached: %v", err)
	}
	// A kept answer resumes from a byte on.
	rc, _, partial, err := ts.dev["d1"].Pack(ctx, req, 5, etag)
	if err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(rc)
	rc.Close()
	if etag == "" || !partial || !bytes.Equal(rest, whole[5:]) {
		t.Errorf("resumed pack: etag %q, partial %v, %d bytes, want the last %d", etag, partial, len(rest), len(whole)-5)
	}
	entries, _ := os.ReadDir(filepath.Join(ts.srv.cfg.Transfer.Dir, tmpDir))
	if len(entries) != 0 {
		t.Errorf("%d temp files left", len(entries))
	}
}

func TestTransferCacheBounded(t *testing.T) {
	x, err := newXfer(TransferConfig{Dir: t.TempDir(), MaxCache: 10_000}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer x.stop()
	for i := range 40 {
		if _, err := x.create(packDir, fmt.Sprint(i), true, func(w *os.File) error {
			_, err := w.Write(make([]byte, 1000))
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	var total int64
	entries, _ := os.ReadDir(filepath.Join(x.cfg.Dir, packDir))
	for _, e := range entries {
		fi, _ := e.Info()
		total += fi.Size()
	}
	if total > 10_000 || len(entries) == 0 {
		t.Errorf("cache holds %d bytes in %d files, bound 10000", total, len(entries))
	}
}

// fakeCode is the start of an x86-64 ELF file followed by n bytes of
// calls of one function and loads of one variable.
func fakeCode(n int) string {
	b := []byte("\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x3e\x00")
	for len(b)+16 <= n {
		b = binary.LittleEndian.AppendUint32(append(b, 0xE8), uint32(0x40_0000-(len(b)+5)))
		b = binary.LittleEndian.AppendUint32(append(b, 0x48, 0x8B, 0x05), uint32(0x60_0000-(len(b)+7)))
		b = append(b, 0x90, 0x90, 0x90)
	}
	return string(b)
}

// TestPackFormats: an agent that asks no format (every agent before
// format 2) gets format 1; one that asks format 2 gets it, with machine
// code through the x86 filter, in fewer bytes; both read back the blob.
func TestPackFormats(t *testing.T) {
	ts := newTestServer(t, time.Second)
	ctx := context.Background()
	bin := fakeCode(300_000)
	_, fd := ts.push(t, "tool", "1.0.0", []string{"linux"}, bin)
	ts.report(t, "d1", "linux")
	if _, err := ts.admin.SetState(ctx, api.DesiredState{ID: "d1", Apps: []api.DesiredApp{{Name: "com.example:tool", Version: "1.0.0"}}}); err != nil {
		t.Fatal(err)
	}
	sizes := map[int]int{}
	for _, format := range []int{0, transfer.PackFormat2} {
		req := api.PackRequest{Digests: []string{fd}, Format: format}
		rc, _, _, err := ts.dev["d1"].Pack(ctx, req, 0, "")
		if err != nil {
			t.Fatal(err)
		}
		whole, _ := io.ReadAll(rc)
		rc.Close()
		sizes[format] = len(whole)
		// What an agent before format 2 reads: a format 1 stream.
		dec, _ := zstd.NewReader(bytes.NewReader(whole))
		head := make([]byte, 8)
		_, err = io.ReadFull(dec, head)
		dec.Close()
		if want := map[int]string{0: "DRPACK1\n", transfer.PackFormat2: "DRPACK2\n"}[format]; err != nil || string(head) != want {
			t.Errorf("format %d: the stream starts %q (%v), want %q", format, head, err, want)
		}
		if got := readPack(t, io.NopCloser(bytes.NewReader(whole)), req); string(got["B"+fd]) != bin {
			t.Errorf("format %d: the blob did not come back", format)
		}
	}
	if sizes[transfer.PackFormat2] > sizes[0]*3/4 {
		t.Errorf("machine code packs to %d bytes in format 2, %d in format 1: want clearly fewer", sizes[transfer.PackFormat2], sizes[0])
	}
	if packKey(api.PackRequest{Digests: []string{fd}}) == packKey(api.PackRequest{Digests: []string{fd}, Format: transfer.PackFormat2}) {
		t.Error("answers of both formats are kept under one key")
	}
}
