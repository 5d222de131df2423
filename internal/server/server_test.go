package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/blob"
	"github.com/drover-dev/drover/internal/client"
	"github.com/drover-dev/drover/internal/pki"
	"github.com/drover-dev/drover/internal/store/sqlite"
)

// testServer is a real server over TLS on loopback with a real store, and
// clients for an admin and two devices.
type testServer struct {
	srv    *Server
	admin  *client.Client
	dev    map[string]*client.Client
	pkiDir string // the fleet CA's folder
	url    string
	// client makes another client with a certificate of role and name.
	client func(role pki.Role, name string) *client.Client
	ca     string // the fleet CA certificate file
}

// devClient is a client with a new device certificate for id.
func (ts *testServer) devClient(t *testing.T, id string) *client.Client {
	t.Helper()
	return ts.client(pki.RoleDevice, id)
}

func newTestServer(t *testing.T, pollTimeout time.Duration) *testServer {
	t.Helper()
	dir := t.TempDir()
	now := time.Now()
	pkiDir := filepath.Join(dir, "pki")
	if err := pki.Init(pkiDir, now); err != nil {
		t.Fatal(err)
	}
	issue := func(role pki.Role, name string) (string, string) {
		c, k, err := pki.Issue(pkiDir, pki.IssueOptions{Role: role, Name: name}, now)
		if err != nil {
			t.Fatal(err)
		}
		return c, k
	}
	ca := filepath.Join(pkiDir, "ca.crt")
	sc, sk := issue(pki.RoleServer, "localhost")
	tlsCfg, err := pki.ServerTLSConfig(sc, sk, ca)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	blobs, err := blob.NewFileStore(blob.FileConfig{Dir: filepath.Join(dir, "blobs")})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(ctx, Config{TLS: tlsCfg, PollTimeout: pollTimeout, Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil)),
		Transfer: TransferConfig{Dir: filepath.Join(dir, "transfer"), DeltaWait: 20 * time.Second}}, st, blobs)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(srv.Handler())
	hs.TLS = tlsCfg
	hs.StartTLS()
	t.Cleanup(hs.Close)
	cl := func(role pki.Role, name string) *client.Client {
		c, k := issue(role, name)
		cfg, err := pki.ClientTLSConfig(c, k, ca)
		if err != nil {
			t.Fatal(err)
		}
		cl, err := client.New(client.Config{Addr: hs.URL, TLS: cfg})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
		return cl
	}
	ts := &testServer{srv: srv, admin: cl(pki.RoleAdmin, "ops"), dev: map[string]*client.Client{}, pkiDir: pkiDir, url: hs.URL, ca: ca, client: cl}
	for _, id := range []string{"d1", "d2"} {
		ts.dev[id] = cl(pki.RoleDevice, id)
	}
	return ts
}

// push uploads a one-file package with the given tags and returns the
// digests of its manifest and its file.
func (ts *testServer) push(t *testing.T, name, version string, tags []string, content string) (manifestDigest, fileDigest string) {
	t.Helper()
	ctx := context.Background()
	sum := sha256.Sum256([]byte(content))
	fd := hex.EncodeToString(sum[:])
	m := api.Manifest{Group: "com.example", Name: name, Version: version, Tags: tags, Install: api.InstallPrefix,
		Files: []api.File{{Path: "data", Type: api.TypeFile, Mode: 0o644, Size: int64(len(content)), Digest: fd}}}
	data, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := ts.admin.PutBlob(ctx, fd, int64(len(content)), bytes.NewReader([]byte(content))); err != nil {
		t.Fatal(err)
	}
	b, err := ts.admin.PushManifest(ctx, data)
	if err != nil {
		t.Fatalf("push %s: %v", name, err)
	}
	return b.Digest, fd
}

func (ts *testServer) report(t *testing.T, id string, tags ...string) {
	t.Helper()
	if _, err := ts.dev[id].Report(context.Background(), id, api.Report{Tags: tags, Installed: []api.InstalledApp{}}); err != nil {
		t.Fatalf("report %s: %v", id, err)
	}
}

func code(err error) string {
	var e *api.Error
	if errors.As(err, &e) {
		return e.Code
	}
	if err == nil {
		return ""
	}
	return "transport: " + err.Error()
}

func TestAuthorization(t *testing.T) {
	ts := newTestServer(t, time.Second)
	ctx := context.Background()
	md, fd := ts.push(t, "tool", "1.0.0", []string{"linux"}, "tool data")
	_, otherFile := ts.push(t, "secret", "1.0.0", []string{"linux"}, "secret data")
	ts.report(t, "d1", "linux")
	ts.report(t, "d2", "linux")
	if _, err := ts.admin.SetState(ctx, api.DesiredState{ID: "d1", Apps: []api.DesiredApp{{Name: "com.example:tool", Version: "1.0.0"}}}); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		call func() error
		want string
	}{
		{"device reads own plan", func() error { _, err := ts.dev["d1"].Desired(ctx, "d1", "", 0); return err }, ""},
		{"device reads another's plan", func() error { _, err := ts.dev["d2"].Desired(ctx, "d1", "", 0); return err }, api.EFORBIDDEN},
		{"device reports for another", func() error { _, err := ts.dev["d2"].Report(ctx, "d1", api.Report{}); return err }, api.EFORBIDDEN},
		{"device posts events for another", func() error { return ts.dev["d2"].PostEvents(ctx, "d1", []api.Event{{Kind: "log"}}) }, api.EFORBIDDEN},
		{"device posts its own events", func() error { return ts.dev["d1"].PostEvents(ctx, "d1", []api.Event{{Kind: "log"}, {Kind: "my-kind"}}) }, ""},
		{"device forges a converged event", func() error {
			return ts.dev["d1"].PostEvents(ctx, "d1", []api.Event{{Kind: "log"}, {Kind: api.KindConverged}})
		}, api.EINVALID},
		{"device forges a termination", func() error { return ts.dev["d1"].PostEvents(ctx, "d1", []api.Event{{Kind: api.KindTerminated}}) }, api.EINVALID},
		{"device forges a package event", func() error { return ts.dev["d1"].PostEvents(ctx, "d1", []api.Event{{Kind: api.KindPackage}}) }, api.EINVALID},
		{"device uses operator verb", func() error { _, err := ts.dev["d1"].Devices(ctx); return err }, api.EFORBIDDEN},
		{"device sets state", func() error {
			_, err := ts.dev["d1"].SetState(ctx, api.DesiredState{ID: "d1", Apps: []api.DesiredApp{}})
			return err
		}, api.EFORBIDDEN},
		{"device uploads a blob", func() error { return ts.dev["d1"].PutBlob(ctx, fd, 1, bytes.NewReader([]byte("x"))) }, api.EFORBIDDEN},
		{"device fetches its blob", func() error { return fetch(ts.dev["d1"], fd) }, ""},
		{"device fetches its manifest", func() error { return fetch(ts.dev["d1"], md) }, ""},
		{"device fetches a blob not in its state", func() error { return fetch(ts.dev["d1"], otherFile) }, api.EFORBIDDEN},
		{"device with no state fetches a blob", func() error { return fetch(ts.dev["d2"], fd) }, api.EFORBIDDEN},
		{"admin fetches any blob", func() error { return fetch(ts.admin, otherFile) }, ""},
		{"device uploads signed metadata", func() error {
			return ts.dev["d1"].PutTrustMetadata(ctx, map[string][]byte{"bins-00": []byte("{}")})
		}, api.EFORBIDDEN},
		{"trust metadata without --trust-dir", func() error { _, err := ts.dev["d1"].TrustMetadata(ctx, "timestamp.json"); return err }, api.ENOTFOUND},
		{"device renews another's certificate", func() error { _, err := ts.dev["d2"].RenewCertificate(ctx, "d1", []byte("x")); return err }, api.EFORBIDDEN},
		{"admin renews a device certificate", func() error { _, err := ts.admin.RenewCertificate(ctx, "d1", []byte("x")); return err }, api.EFORBIDDEN},
		{"renewal without an issuer", func() error { _, err := ts.dev["d1"].RenewCertificate(ctx, "d1", []byte("x")); return err }, api.ENOTFOUND},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := code(tt.call()); got != tt.want {
				t.Errorf("code = %q, want %q", got, tt.want)
			}
		})
	}
}

func fetch(c *client.Client, digest string) error {
	rc, _, err := c.Blob(context.Background(), digest)
	if err != nil {
		return err
	}
	return rc.Close()
}

func TestPushRefusals(t *testing.T) {
	ts := newTestServer(t, time.Second)
	ctx := context.Background()
	ts.push(t, "tool", "1.0.0", []string{"linux"}, "v1")

	// A manifest whose blobs were not uploaded names them.
	sum := sha256.Sum256([]byte("never uploaded"))
	missing := hex.EncodeToString(sum[:])
	m := api.Manifest{Group: "com.example", Name: "other", Version: "1.0.0", Tags: []string{}, Install: api.InstallPrefix,
		Files: []api.File{{Path: "f", Type: api.TypeFile, Mode: 0o644, Size: 14, Digest: missing}}}
	data, _ := json.Marshal(m)
	_, err := ts.admin.PushManifest(ctx, data)
	var e *api.Error
	if !errors.As(err, &e) || e.Code != api.ECONFLICT || len(e.Missing) != 1 || e.Missing[0] != missing {
		t.Errorf("push with a missing blob: %v (%+v), want conflict naming %s", err, e, missing)
	}

	// A blob whose content does not match its digest is refused.
	if err := ts.admin.PutBlob(ctx, missing, 5, bytes.NewReader([]byte("wrong"))); code(err) != api.EINVALID {
		t.Errorf("PutBlob with wrong content: %v, want invalid", err)
	}
	if got, _ := ts.admin.Missing(ctx, []string{missing}); len(got) != 1 {
		t.Errorf("after a refused upload the blob is stored: missing = %v", got)
	}

	// Same coordinate and tags, other content: refused.
	sum = sha256.Sum256([]byte("v2"))
	d2 := hex.EncodeToString(sum[:])
	if err := ts.admin.PutBlob(ctx, d2, 2, bytes.NewReader([]byte("v2"))); err != nil {
		t.Fatal(err)
	}
	m = api.Manifest{Group: "com.example", Name: "tool", Version: "1.0.0", Tags: []string{"linux"}, Install: api.InstallPrefix,
		Files: []api.File{{Path: "data", Type: api.TypeFile, Mode: 0o644, Size: 2, Digest: d2}}}
	data, _ = json.Marshal(m)
	if _, err := ts.admin.PushManifest(ctx, data); code(err) != api.ECONFLICT {
		t.Errorf("push changed build: %v, want conflict", err)
	}

	// A manifest whose size for a stored blob is not the blob's is
	// refused: the device would fail on it.
	m.Version = "1.0.2"
	m.Files[0].Size = 5
	data, _ = json.Marshal(m)
	if _, err := ts.admin.PushManifest(ctx, data); code(err) != api.EINVALID {
		t.Errorf("push with a wrong blob size: %v, want invalid", err)
	}
	m.Files[0].Size = 2

	// The server checks a manifest as the device does: a symlink that
	// climbs after a name is refused on both.
	m.Version = "1.0.3"
	m.Files = append(m.Files, api.File{Path: "t", Type: api.TypeSymlink, Mode: 0o777, Target: "s/.."})
	data, _ = json.Marshal(m)
	if _, err := ts.admin.PushManifest(ctx, data); code(err) != api.EINVALID {
		t.Errorf("push with symlink target s/..: %v, want invalid", err)
	}
	m.Files = m.Files[:1]

	// A manifest with a path leaving the install root is invalid.
	m.Version = "1.0.1"
	m.Files[0].Path = "../../etc/passwd"
	data, _ = json.Marshal(m)
	if _, err := ts.admin.PushManifest(ctx, data); code(err) != api.EINVALID {
		t.Errorf("push with ../ path: %v, want invalid", err)
	}
}

// TestLongPollWakes checks an agent waiting for its desired state hears of
// a change at once, not at the end of the poll.
func TestLongPollWakes(t *testing.T) {
	ts := newTestServer(t, 30*time.Second)
	ctx := context.Background()
	ts.push(t, "tool", "1.0.0", []string{"linux"}, "v1")
	ts.report(t, "d1", "linux")
	first, err := ts.dev["d1"].Desired(ctx, "d1", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if !first.Unset {
		t.Fatalf("a device with no declared state: Unset = false")
	}
	got := make(chan *api.Resolved, 1)
	go func() {
		r, err := ts.dev["d1"].Desired(ctx, "d1", first.Digest, time.Minute)
		if err != nil {
			t.Error(err)
		}
		got <- r
	}()
	start := time.Now()
	// Give the poll a moment to be waiting; the hub makes the order
	// irrelevant for correctness either way.
	time.Sleep(50 * time.Millisecond)
	if _, err := ts.admin.SetState(ctx, api.DesiredState{ID: "d1", Apps: []api.DesiredApp{{Name: "com.example:tool", Version: "^1"}}}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-got:
		if r.Digest == first.Digest || len(r.Apps) != 1 || r.Apps[0].Version != "1.0.0" {
			t.Errorf("long-poll answered %+v", r)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("long-poll woke after %v", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("long-poll did not wake on state set")
	}
}

func TestResolutionErrorsReachTheAgent(t *testing.T) {
	ts := newTestServer(t, time.Second)
	ctx := context.Background()
	ts.push(t, "tool", "1.0.0", []string{"armv7l", "linux"}, "arm")
	// The device has not reported: the state is accepted (the package and
	// version exist), and the device learns why it cannot have it.
	if _, err := ts.admin.SetState(ctx, api.DesiredState{ID: "d1", Apps: []api.DesiredApp{{Name: "com.example:tool", Version: "1.0.0"}}}); err != nil {
		t.Fatal(err)
	}
	ts.report(t, "d1", "linux", "amd64")
	r, err := ts.dev["d1"].Desired(ctx, "d1", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if r.Error == "" || !bytes.Contains([]byte(r.Error), []byte("armv7l")) {
		t.Errorf("resolved error = %q, want one naming the missing tag armv7l", r.Error)
	}
	d, err := ts.admin.Device(ctx, "d1")
	if err != nil {
		t.Fatal(err)
	}
	if d.Converged || d.Error == "" {
		t.Errorf("device with an unresolvable state: converged=%v error=%q", d.Converged, d.Error)
	}
	// Once reported, the same impossible state is refused at state set.
	if _, err := ts.admin.SetState(ctx, api.DesiredState{ID: "d1", Apps: []api.DesiredApp{{Name: "com.example:tool", Version: "1.0.0"}}}); code(err) != api.EINVALID {
		t.Errorf("state set of an unfit build after the report: %v, want invalid", err)
	}
}

var _ = http.StatusOK

// testWriter sends the server's log to the test's log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// A device chooses its events' kinds: made-up kinds must not each get a
// series of their own in the server's metrics, or a device could grow
// the server's memory without bound.
func TestEventKindMetricsBounded(t *testing.T) {
	ts := newTestServer(t, time.Second)
	ctx := context.Background()
	var evs []api.Event
	for i := range 200 {
		evs = append(evs, api.Event{Kind: fmt.Sprintf("made-up-%d", i)})
	}
	evs = append(evs, api.Event{Kind: api.KindLog})
	if err := ts.dev["d1"].PostEvents(ctx, "d1", evs); err != nil {
		t.Fatal(err)
	}
	mfs, err := ts.srv.ev.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "drover_events_stored_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "kind" {
					kinds[l.GetValue()] = m.GetCounter().GetValue()
				}
			}
		}
	}
	if kinds["other"] != 200 || kinds[api.KindLog] != 1 || len(kinds) > 2 {
		t.Errorf("drover_events_stored_total: %d kinds, log %v, other %v; want log 1 and other 200 only", len(kinds), kinds[api.KindLog], kinds["other"])
	}
}
