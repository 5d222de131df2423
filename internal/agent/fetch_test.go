package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/blob"
	"github.com/drover-dev/drover/internal/client"
	"github.com/drover-dev/drover/internal/facts"
	"github.com/drover-dev/drover/internal/resolve"
	xfer "github.com/drover-dev/drover/internal/transfer"
)

// packServer is a fakeServer that also answers packs (with deltas when
// asked) and ranged, resumable GETs; old makes it answer packs as an
// older server does.
type packServer struct {
	*fakeServer
	old          bool // no pack call: ENOTFOUND
	format1      bool // packs in format 1 whatever is asked, as a server before format 2
	corruptDelta bool // every delta sent is damaged
	dropAt       int  // the first ranged GET of a blob is cut after this many bytes
	zstdGets     bool // GETs answer the zstd form, as a streaming encoder writes it
	mu           sync.Mutex
	packs        []api.PackRequest
	ranges       []int64 // offsets asked for
	dropped      bool
}

func (s *packServer) Pack(_ context.Context, req api.PackRequest, _ int64, _ string) (io.ReadCloser, string, bool, error) {
	s.mu.Lock()
	s.packs = append(s.packs, req)
	s.mu.Unlock()
	if s.old {
		return nil, "", false, &api.Error{Code: api.ENOTFOUND, Message: "no such call: POST /v1/blobs/pack"}
	}
	rc, err := s.pack(req)
	return rc, "", false, err
}

func (s *packServer) pack(req api.PackRequest) (io.ReadCloser, error) {
	var buf bytes.Buffer
	pw, err := xfer.NewPackWriter(&buf, 1<<20)
	v2 := req.Format >= xfer.PackFormat2 && !s.format1
	if v2 {
		pw, err = xfer.NewPackWriter2(&buf, 1<<20, req.Digests)
	}
	if err != nil {
		return nil, err
	}
	for _, d := range req.Digests {
		s.fakeServer.mu.Lock()
		data, base := s.blobs[d], s.blobs[req.Bases[d]]
		s.fakeServer.mu.Unlock()
		if req.Bases[d] != "" && base != nil {
			delta, err := xfer.MakeDelta(base, data)
			if err != nil {
				return nil, err
			}
			if s.corruptDelta {
				delta[len(delta)-6] ^= 0x55
			}
			err = pw.Delta(d, req.Bases[d], delta)
			if err != nil {
				return nil, err
			}
			continue
		}
		if v2 && xfer.IsX86ELF(data) {
			if err := pw.Filtered(d, slices.Clone(data)); err != nil {
				return nil, err
			}
			continue
		}
		if err := pw.Blob(d, int64(len(data)), bytes.NewReader(data)); err != nil {
			return nil, err
		}
	}
	if err := pw.Close(); err != nil {
		return nil, err
	}
	return io.NopCloser(&buf), nil
}

func (s *packServer) BlobRange(_ context.Context, digest string, off int64, _ bool) (io.ReadCloser, string, bool, error) {
	s.fakeServer.mu.Lock()
	data, ok := s.blobs[digest]
	s.fetched = append(s.fetched, digest)
	s.fakeServer.mu.Unlock()
	if !ok {
		return nil, "", false, &api.Error{Code: api.ENOTFOUND, Message: "no blob"}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ranges = append(s.ranges, off)
	enc := ""
	if s.zstdGets {
		var buf bytes.Buffer
		zw, _ := zstd.NewWriter(&buf)
		zw.Write(data)
		zw.Close()
		data, enc = buf.Bytes(), "zstd"
	}
	rest := data[off:]
	if s.dropAt > 0 && !s.dropped && len(rest) > s.dropAt {
		s.dropped = true
		return io.NopCloser(io.MultiReader(bytes.NewReader(rest[:s.dropAt]), errReader{})), enc, off > 0, nil
	}
	return io.NopCloser(bytes.NewReader(rest)), enc, off > 0, nil
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, io.ErrUnexpectedEOF }

func noise(seed uint64, n int) string {
	r := rand.New(rand.NewPCG(seed, 3))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.IntN(256))
	}
	return string(b)
}

// offer makes the fake server offer com.example:app at version with the
// files (path -> content).
func (s *fakeServer) offer(t *testing.T, version string, files map[string]string) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	m := api.Manifest{Group: "com.example", Name: "app", Version: version, Tags: []string{}, Install: api.InstallPrefix}
	for p, c := range files {
		d := digestOf([]byte(c))
		s.blobs[d] = []byte(c)
		m.Files = append(m.Files, api.File{Path: p, Type: api.TypeFile, Mode: 0o644, Size: int64(len(c)), Digest: d})
	}
	sortFiles(m.Files)
	mj, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	md := digestOf(mj)
	s.blobs[md] = mj
	apps := []api.ResolvedApp{{Name: "com.example:app", Version: version, Digest: md, Tags: []string{}}}
	s.resolved = &api.Resolved{Device: "d1", Apps: apps, Digest: resolve.Digest(apps)}
}

func newAgent(t *testing.T, srv Server, cfg Config) *Agent {
	t.Helper()
	home := t.TempDir()
	cfg.Home, cfg.Device, cfg.Root = home, "d1", filepath.Join(home, "root")
	cfg.Facts = facts.Facts{"os": "linux", "arch": "amd64"}
	if testing.Verbose() {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	a, err := New(cfg, srv)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func installedFile(t *testing.T, a *Agent, path string) string {
	t.Helper()
	got, err := os.ReadFile(filepath.Join(a.cfg.SoftwareRoot, "com", "example", "app", "current", filepath.FromSlash(path)))
	if err != nil {
		t.Fatal(err)
	}
	return string(got)
}

// fakeELF is the start of an x86-64 ELF file followed by calls and
// RIP-relative loads: what the pack's x86 filter rewrites.
func fakeELF(n int) string {
	b := []byte("\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x3e\x00")
	for len(b) < n {
		b = append(b, 0xE8, byte(len(b)), 0x10, 0, 0, 0x48, 0x8B, 0x05, 0x20, byte(len(b)>>8), 0, 0, 0x90)
	}
	return string(b[:n])
}

func TestPackNegotiation(t *testing.T) {
	files := map[string]string{"a": strings.Repeat("alpha ", 50000), "b": strings.Repeat("alpha ", 50000) + "beta", "c": noise(1, 3000),
		"bin": fakeELF(20_000)}
	tests := []struct {
		name      string
		old       bool
		format1   bool
		zstdGets  bool
		wantPacks int
		wantGets  int // whole-blob GETs of the files (not the manifest)
	}{
		{"new server: one pack", false, false, false, 1, 0},
		{"server before format 2: one pack in format 1", false, true, false, 1, 0},
		{"old server: 404 on pack, then blob by blob", true, false, false, 1, 4},
		{"no pack, compressed GETs", true, false, true, 1, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := &fakeServer{blobs: map[string][]byte{}, tamper: map[string][]byte{}}
			fs.offer(t, "1.0.0", files)
			srv := &packServer{fakeServer: fs, old: tt.old, format1: tt.format1, zstdGets: tt.zstdGets}
			a := newAgent(t, srv, Config{})
			if err := a.Converge(context.Background()); err != nil {
				t.Fatal(err)
			}
			for p, c := range files {
				if installedFile(t, a, p) != c {
					t.Errorf("%s installed wrong", p)
				}
			}
			gets := 0
			for _, d := range fs.fetched {
				if d != fs.resolved.Apps[0].Digest {
					gets++
				}
			}
			if len(srv.packs) != tt.wantPacks || gets != tt.wantGets {
				t.Errorf("%d packs and %d blob GETs, want %d and %d", len(srv.packs), gets, tt.wantPacks, tt.wantGets)
			}
			if len(srv.packs) > 0 && srv.packs[0].Format != xfer.PackFormat2 {
				t.Errorf("pack asked in format %d, want %d", srv.packs[0].Format, xfer.PackFormat2)
			}
			if tt.old && !a.dl.noPack.Load() {
				t.Error("after a 404 the agent would ask for packs again")
			}
			// What came over the wire is counted: the pack is compressed,
			// so less than the files' sizes.
			got := testutil.ToFloat64(a.events().m.downloadBytes)
			if !tt.old && (got <= 0 || got > 0.5*float64(len(files["a"])+len(files["b"])+len(files["c"]))) {
				t.Errorf("download bytes = %v for a compressible pack", got)
			}
		})
	}
}

func TestUpgradeByDelta(t *testing.T) {
	v1 := noise(2, 80_000)
	v2 := v1[:60_000] + "a patched function" + v1[60_000:]
	tests := []struct {
		name    string
		corrupt bool
	}{
		{"delta applied", false},
		{"corrupt delta falls back to the whole blob", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := &fakeServer{blobs: map[string][]byte{}, tamper: map[string][]byte{}}
			fs.offer(t, "1.0.0", map[string]string{"lib/x.so": v1, "README": "one"})
			srv := &packServer{fakeServer: fs, corruptDelta: tt.corrupt}
			a := newAgent(t, srv, Config{})
			if err := a.Converge(context.Background()); err != nil {
				t.Fatal(err)
			}
			before := testutil.ToFloat64(a.events().m.downloadBytes)
			fs.offer(t, "2.0.0", map[string]string{"lib/x.so": v2, "README": "two"})
			srv.packs = nil
			if err := a.Converge(context.Background()); err != nil {
				t.Fatal(err)
			}
			if installedFile(t, a, "lib/x.so") != v2 || installedFile(t, a, "README") != "two" {
				t.Fatal("upgrade did not install version 2")
			}
			if len(srv.packs) == 0 || srv.packs[0].Bases[digestOf([]byte(v2))] != digestOf([]byte(v1)) {
				t.Fatalf("upgrade did not ask for a delta against the installed file: %+v", srv.packs)
			}
			moved := testutil.ToFloat64(a.events().m.downloadBytes) - before
			if !tt.corrupt && moved > float64(len(v2))/10 {
				t.Errorf("upgrade moved %v bytes for an 18-byte change of an 80 kB file", moved)
			}
			if tt.corrupt && !slices.Contains(fs.fetched, digestOf([]byte(v2))) && len(srv.packs) < 2 {
				t.Errorf("after a failed delta the agent did not ask for the whole blob again")
			}
		})
	}
}

func TestResumeAfterDrop(t *testing.T) {
	data := noise(3, 300_000)
	fs := &fakeServer{blobs: map[string][]byte{}, tamper: map[string][]byte{}}
	fs.offer(t, "1.0.0", map[string]string{"big": data})
	srv := &packServer{fakeServer: fs, dropAt: 100_000}
	a := newAgent(t, srv, Config{})
	if err := a.Converge(context.Background()); err != nil {
		t.Fatal(err)
	}
	if installedFile(t, a, "big") != data {
		t.Fatal("resumed blob installed wrong")
	}
	if !srv.dropped || srv.ranges[len(srv.ranges)-1] != 100_000 {
		t.Errorf("the download did not resume at the byte it got to: offsets asked %v", srv.ranges)
	}
	if got := testutil.ToFloat64(a.events().m.downloadBytes); got > 1.05*float64(len(data))+float64(len(fs.blobs[fs.resolved.Apps[0].Digest])) {
		t.Errorf("moved %v bytes for a %d-byte blob", got, len(data))
	}
}

func TestMirrors(t *testing.T) {
	data := noise(4, 50_000)
	other := "some other file"
	// A good mirror: a plain file server over a blob folder of another
	// store, which lays blobs out as sha256/<first two>/<digest>.
	dir := t.TempDir()
	store, err := blob.NewFileStore(blob.FileConfig{Dir: dir, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{data, other} {
		if err := store.Put(context.Background(), digestOf([]byte(c)), strings.NewReader(c)); err != nil {
			t.Fatal(err)
		}
	}
	good := httptest.NewServer(http.FileServer(http.Dir(dir)))
	defer good.Close()
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	defer failing.Close()
	lying := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(strings.Repeat("evil", 12_500)))
	}))
	defer lying.Close()
	tests := []struct {
		name       string
		mirrors    []string
		fromServer bool
	}{
		{"good mirror serves", []string{good.URL + "/sha256/{prefix}/{digest}"}, false},
		{"failing then lying mirror fall back to the server", []string{failing.URL, lying.URL + "/blobs"}, true},
		{"failing mirror, then good", []string{failing.URL, good.URL + "/sha256/{prefix}/{digest}"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := &fakeServer{blobs: map[string][]byte{}, tamper: map[string][]byte{}}
			fs.offer(t, "1.0.0", map[string]string{"data": data, "other": other})
			srv := &packServer{fakeServer: fs}
			a := newAgent(t, srv, Config{Mirrors: tt.mirrors})
			if err := a.Converge(context.Background()); err != nil {
				t.Fatal(err)
			}
			if installedFile(t, a, "data") != data || installedFile(t, a, "other") != other {
				t.Fatal("installed wrong content")
			}
			fromServer := len(srv.packs) > 0
			for _, d := range fs.fetched {
				fromServer = fromServer || d != fs.resolved.Apps[0].Digest
			}
			if fromServer != tt.fromServer {
				t.Errorf("server asked for files: %v, want %v", fromServer, tt.fromServer)
			}
		})
	}
}

func TestMirrorURL(t *testing.T) {
	d := digestOf([]byte("x"))
	tests := []struct{ base, want string }{
		{"http://m/blobs", "http://m/blobs/" + d},
		{"http://m/blobs/", "http://m/blobs/" + d},
		{"http://m/sha256/{prefix}/{digest}", "http://m/sha256/" + d[:2] + "/" + d},
	}
	for _, tt := range tests {
		if got := MirrorURL(tt.base, d); got != tt.want {
			t.Errorf("MirrorURL(%q) = %q, want %q", tt.base, got, tt.want)
		}
	}
}

func TestMaxDownloadRate(t *testing.T) {
	data := noise(5, 600_000)
	fs := &fakeServer{blobs: map[string][]byte{}, tamper: map[string][]byte{}}
	fs.offer(t, "1.0.0", map[string]string{"big": data})
	const rate = 1_000_000
	a := newAgent(t, &packServer{fakeServer: fs}, Config{MaxDownloadRate: rate})
	start := time.Now()
	if err := a.Converge(context.Background()); err != nil {
		t.Fatal(err)
	}
	// 600 kB at 1 MB/s with a burst of a quarter second takes at least
	// 0.35 s; far less means the limit is not applied.
	if el := time.Since(start); el < 200*time.Millisecond {
		t.Errorf("600 kB at %d bytes/s took %v", rate, el)
	}
}

// TestRetryUnreachable checks that a download request that does not
// reach the server is sent again (a fleet converging at once can leave the
// server too busy to take new connections for a moment), that an answer
// from the server is never retried this way, and that the tries end.
func TestRetryUnreachable(t *testing.T) {
	unreachable := fmt.Errorf("%w: 127.0.0.1:1: net/http: TLS handshake timeout", client.ErrUnreachable)
	refused := &api.Error{Code: api.ENOTFOUND, Message: "no such blob"}
	tests := []struct {
		name      string
		fails     int   // answers with err before the body
		err       error // what those answers are
		wantCalls int
		wantErr   error
	}{
		{"reaches the server on the third try", 2, unreachable, 3, nil},
		{"an answer of the server is final", 5, refused, 1, refused},
		{"gives up after the last try", 100, unreachable, unreachableTries, client.ErrUnreachable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := 0
			rr := &resumeReader{ctx: context.Background(), pause: time.Millisecond, open: func(off int64) (io.ReadCloser, string, bool, error) {
				calls++
				if calls <= tt.fails {
					return nil, "", false, tt.err
				}
				return io.NopCloser(strings.NewReader("blob bytes")), "", off > 0, nil
			}}
			err := rr.start()
			if calls != tt.wantCalls {
				t.Errorf("requests sent = %d, want %d", calls, tt.wantCalls)
			}
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("start() = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("start() = %v", err)
			}
			got, err := io.ReadAll(rr)
			if err != nil || string(got) != "blob bytes" {
				t.Errorf("read %q, %v; want the blob", got, err)
			}
		})
	}
}
