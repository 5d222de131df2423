package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/facts"
	"github.com/drover-dev/drover/internal/resolve"
)

// fakeServer serves one resolved state and blobs from a map; tamper
// replaces what it sends for a digest.
type fakeServer struct {
	mu       sync.Mutex
	resolved *api.Resolved
	blobs    map[string][]byte
	tamper   map[string][]byte
	fetched  []string
	events   []api.Event
	reports  []api.Report
}

func (s *fakeServer) Report(_ context.Context, _ string, r api.Report) (api.ReportResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reports = append(s.reports, r)
	return api.ReportResponse{Desired: s.resolved.Digest}, nil
}

func (s *fakeServer) Desired(context.Context, string, string, time.Duration) (*api.Resolved, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.resolved, nil
}

func (s *fakeServer) PostEvents(_ context.Context, _ string, evs []api.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = append(s.events, evs...)
	return nil
}

func (s *fakeServer) Keepalive(context.Context, string, api.KeepaliveRequest) (api.KeepaliveResponse, error) {
	return api.KeepaliveResponse{}, &api.Error{Code: api.ENOTFOUND, Message: "the fake server keeps no keepalives"}
}

// BlobRange answers as a server from before compressed and resumed
// downloads: the whole blob, uncompressed, through Blob.
func (s *fakeServer) BlobRange(ctx context.Context, digest string, offset int64, compressed bool) (io.ReadCloser, string, bool, error) {
	return oldBlobRange(ctx, s.Blob, digest, offset)
}

// oldBlobRange answers a range request with blob's whole content, as a
// server without Range would; an offset is then skipped by the caller.
func oldBlobRange(ctx context.Context, blob func(context.Context, string) (io.ReadCloser, int64, error), digest string, offset int64) (io.ReadCloser, string, bool, error) {
	body, _, err := blob(ctx, digest)
	return body, "", false, err
}

// Pack answers as a server without packs.
func (s *fakeServer) Pack(context.Context, api.PackRequest, int64, string) (io.ReadCloser, string, bool, error) {
	return nil, "", false, &api.Error{Code: api.ENOTFOUND, Message: "no such call: POST /v1/blobs/pack"}
}

func (s *fakeServer) Blob(_ context.Context, digest string) (io.ReadCloser, int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fetched = append(s.fetched, digest)
	data, ok := s.tamper[digest]
	if !ok {
		data, ok = s.blobs[digest]
	}
	if !ok {
		return nil, 0, &api.Error{Code: api.ENOTFOUND, Message: "no blob " + digest}
	}
	return io.NopCloser(bytes.NewReader(data)), int64(len(data)), nil
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// newFake returns a server offering com.example:app 1.0.0 with the given
// files (path -> content), and an agent for it.
func newFake(t *testing.T, files map[string]string) (*fakeServer, *Agent) {
	t.Helper()
	srv := &fakeServer{blobs: map[string][]byte{}, tamper: map[string][]byte{}}
	m := api.Manifest{Group: "com.example", Name: "app", Version: "1.0.0", Tags: []string{}, Install: api.InstallPrefix}
	for _, p := range []string{"bin/app", "share/data"} {
		c, ok := files[p]
		if !ok {
			continue
		}
		d := digestOf([]byte(c))
		srv.blobs[d] = []byte(c)
		m.Files = append(m.Files, api.File{Path: p, Type: api.TypeFile, Mode: 0o644, Size: int64(len(c)), Digest: d})
	}
	m.Files = append([]api.File{{Path: "bin", Type: api.TypeDir, Mode: 0o755}, {Path: "share", Type: api.TypeDir, Mode: 0o755}}, m.Files...)
	sortFiles(m.Files)
	mj, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	md := digestOf(mj)
	srv.blobs[md] = mj
	apps := []api.ResolvedApp{{Name: "com.example:app", Version: "1.0.0", Digest: md, Tags: []string{}}}
	srv.resolved = &api.Resolved{Device: "d1", Apps: apps, Digest: resolve.Digest(apps)}
	home := t.TempDir()
	a, err := New(Config{Home: home, Device: "d1", Root: filepath.Join(home, "root"), Facts: facts.Facts{"os": "linux", "arch": "amd64"}}, srv)
	if err != nil {
		t.Fatal(err)
	}
	return srv, a
}

func sortFiles(fs []api.File) {
	for i := 1; i < len(fs); i++ {
		for j := i; j > 0 && fs[j].Path < fs[j-1].Path; j-- {
			fs[j], fs[j-1] = fs[j-1], fs[j]
		}
	}
}

func TestConvergeInstallsAndReports(t *testing.T) {
	srv, a := newFake(t, map[string]string{"bin/app": "#!/bin/sh\n", "share/data": "data"})
	if err := a.Converge(context.Background()); err != nil {
		t.Fatalf("Converge: %v", err)
	}
	got, err := os.ReadFile(filepath.Join(a.cfg.SoftwareRoot, "com", "example", "app", "current", "share", "data"))
	if err != nil || string(got) != "data" {
		t.Errorf("installed share/data = %q, %v", got, err)
	}
	last := srv.reports[len(srv.reports)-1]
	if last.Applied != srv.resolved.Digest || last.Error != "" || len(last.Installed) != 1 {
		t.Errorf("last report = %+v, want applied %s, no error, one app", last, srv.resolved.Digest)
	}
	// Converging again fetches nothing: every blob is in the cache.
	srv.fetched = nil
	if err := a.Converge(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(srv.fetched) != 0 {
		t.Errorf("a converged agent fetched %v again", srv.fetched)
	}
}

func TestConvergeRefusesTamperedBlob(t *testing.T) {
	srv, a := newFake(t, map[string]string{"bin/app": "#!/bin/sh\n", "share/data": "data"})
	srv.tamper[digestOf([]byte("data"))] = []byte("evil")
	err := a.Converge(context.Background())
	if err == nil || !strings.Contains(err.Error(), "digest") {
		t.Fatalf("Converge with a tampered blob = %v, want a digest error", err)
	}
	if _, err := os.Lstat(filepath.Join(a.cfg.SoftwareRoot, "com", "example", "app")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("something was installed from a tampered blob: %v", err)
	}
	if n := len(a.Installed()); n != 0 {
		t.Errorf("%d apps installed after a tampered blob", n)
	}
	var failed bool
	for _, ev := range srv.events {
		failed = failed || (ev.Kind == api.KindStepFailed && ev.Level == api.LevelError)
	}
	if !failed {
		t.Errorf("no step-failed event: %+v", srv.events)
	}
	// The same failure is not retried at once: no retry loop.
	srv.fetched = nil
	if err := a.Converge(context.Background()); err == nil || len(srv.fetched) != 0 {
		t.Errorf("second Converge = %v after fetching %v, want the failure kept without refetching", err, srv.fetched)
	}
}

// A blob corrupted in the agent's own cache (same size, other bytes) is
// never installed: the install refuses it, the agent drops it and fetches
// it once more.
func TestConvergeRefetchesCorruptCachedBlob(t *testing.T) {
	srv, a := newFake(t, map[string]string{"bin/app": "#!/bin/sh\n", "share/data": "data"})
	d := digestOf([]byte("data"))
	p := a.cache.Path(d)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("evil"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := a.Converge(context.Background()); err != nil {
		t.Fatalf("Converge with a corrupt cached blob = %v, want it refetched and installed", err)
	}
	got, err := os.ReadFile(filepath.Join(a.cfg.SoftwareRoot, "com", "example", "app", "current", "share", "data"))
	if err != nil || string(got) != "data" {
		t.Errorf("installed share/data = %q, %v, want \"data\"", got, err)
	}
	n := 0
	for _, f := range srv.fetched {
		if f == d {
			n++
		}
	}
	if n != 1 {
		t.Errorf("fetched the corrupt blob %d times, want once", n)
	}
}

func TestConvergeRefusesManifestOfAnotherPackage(t *testing.T) {
	srv, a := newFake(t, map[string]string{"share/data": "data"})
	// The server claims the manifest is another package's.
	srv.resolved.Apps[0].Name = "com.example:other"
	srv.resolved.Digest = resolve.Digest(srv.resolved.Apps)
	err := a.Converge(context.Background())
	if err == nil || !strings.Contains(err.Error(), "not com.example:other") {
		t.Fatalf("Converge = %v, want a refusal naming the mismatch", err)
	}
}

func TestUnsetStateRemovesNothing(t *testing.T) {
	srv, a := newFake(t, map[string]string{"share/data": "data"})
	if err := a.Converge(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv.resolved = &api.Resolved{Device: "d1", Unset: true, Digest: "unset"}
	if err := a.Converge(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(a.Installed()); n != 1 {
		t.Errorf("an unset desired state left %d apps, want the 1 installed kept", n)
	}
}

// downServer refuses every call, as a server that is away.
type downServer struct{ fakeServer }

func (*downServer) PostEvents(context.Context, string, []api.Event) error {
	return errors.New("server unreachable")
}

// TestQueuedEventsSurviveRestart: an event queued while the server is
// away is still sent, once, by the next agent on the same home.
func TestQueuedEventsSurviveRestart(t *testing.T) {
	home := t.TempDir()
	cfg := Config{Home: home, Device: "d1", Root: filepath.Join(home, "root"), Facts: facts.Facts{"os": "linux", "arch": "amd64"}}
	a, err := New(cfg, &downServer{})
	if err != nil {
		t.Fatal(err)
	}
	a.event(api.Event{Kind: api.KindLog, Level: api.LevelInfo, Priority: api.PriorityMedium, Message: "system is now ready"})
	a.flushEvents(context.Background()) // refused: stays queued

	up := &fakeServer{}
	b, err := New(cfg, up)
	if err != nil {
		t.Fatal(err)
	}
	b.flushEvents(context.Background())
	if len(up.events) != 1 || up.events[0].Message != "system is now ready" {
		t.Fatalf("after a restart the server got %+v, want the queued log event", up.events)
	}
	c, err := New(cfg, up)
	if err != nil {
		t.Fatal(err)
	}
	c.flushEvents(context.Background())
	if len(up.events) != 1 {
		t.Errorf("a delivered event was sent again after another restart: %+v", up.events)
	}
}

// endless is a server that answers one blob with bytes without end.
type endless struct {
	*fakeServer
	digest string
}

func (e *endless) BlobRange(ctx context.Context, digest string, offset int64, compressed bool) (io.ReadCloser, string, bool, error) {
	return oldBlobRange(ctx, e.Blob, digest, offset)
}

func (e *endless) Blob(ctx context.Context, digest string) (io.ReadCloser, int64, error) {
	if digest == e.digest {
		return io.NopCloser(zeros{}), -1, nil
	}
	return e.fakeServer.Blob(ctx, digest)
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestDownloadBounded: a server that sends a blob without end cannot fill
// the disk: the agent stops at the manifest's size and refuses the blob.
func TestDownloadBounded(t *testing.T) {
	srv, _ := newFake(t, map[string]string{"share/data": "data"})
	home := t.TempDir()
	a, err := New(Config{Home: home, Device: "d1", Root: filepath.Join(home, "root"), Facts: facts.Facts{"os": "linux", "arch": "amd64"}},
		&endless{fakeServer: srv, digest: digestOf([]byte("data"))})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Converge(context.Background()) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "digest") {
			t.Fatalf("Converge with an endless blob = %v, want a digest error", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Converge kept reading an endless blob")
	}
}
