package trustserver

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/store"
	"github.com/drover-dev/drover/internal/store/sqlite"
	"github.com/drover-dev/drover/internal/trust"
)

var ctx = context.Background()

// remote is the server as the publisher and the agent reach it.
type remote struct{ r *Repository }

func (l remote) TrustMetadata(ctx context.Context, name string) ([]byte, error) {
	d, err := l.r.File(ctx, name)
	var ae *api.Error
	if errors.Is(err, store.ErrNotFound) || (errors.As(err, &ae) && ae.Code == api.ENOTFOUND) {
		return nil, fmt.Errorf("%s: %w", name, trust.ErrNotFound)
	}
	return d, err
}

func (l remote) PutTrustMetadata(ctx context.Context, roles map[string][]byte) error {
	return l.r.Upload(ctx, roles)
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

type world struct {
	t     *testing.T
	keys  string // offline key folder
	clock *clock
	st    store.Store
	repo  *Repository
	agent *trust.Verifier
}

func newWorld(t *testing.T, threshold, keys int) *world {
	t.Helper()
	w := &world{t: t, keys: filepath.Join(t.TempDir(), "keys"), clock: &clock{time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)}}
	if err := trust.Init(trust.InitConfig{Dir: w.keys, Threshold: threshold, Keys: keys, Now: w.clock.t}); err != nil {
		t.Fatal(err)
	}
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	w.st = st
	w.repo, err = New(ctx, Config{Dir: w.keys, Now: w.clock.now}, st)
	if err != nil {
		t.Fatal(err)
	}
	root, err := os.ReadFile(filepath.Join(w.keys, trust.RootFile))
	if err != nil {
		t.Fatal(err)
	}
	w.agent, err = trust.NewVerifier(trust.VerifierConfig{Dir: filepath.Join(t.TempDir(), "agent"), Root: root, Now: w.clock.now}, remote{w.repo})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func build(coord string, content string, tags ...string) trust.Build {
	sum := sha256.Sum256([]byte(content))
	return trust.Build{Coordinate: coord, Tags: tags, Digest: hex.EncodeToString(sum[:]), Length: int64(len(content))}
}

func (w *world) push(bs ...trust.Build) {
	w.t.Helper()
	k, err := trust.LoadKey(filepath.Join(w.keys, trust.TargetsKey))
	if err != nil {
		w.t.Fatal(err)
	}
	if err := trust.SignBuilds(ctx, remote{w.repo}, k, bs, w.clock.t); err != nil {
		w.t.Fatal(err)
	}
}

// check returns the failed check's name, or "" when b is accepted.
func (w *world) check(b trust.Build) string {
	w.t.Helper()
	err := w.agent.Check(ctx, []trust.Build{b})
	if err == nil {
		return ""
	}
	var r *trust.Refused
	if !errors.As(err, &r) {
		w.t.Fatalf("Check: %v, not a *Refused", err)
	}
	return r.Check
}

func (w *world) want(b trust.Build, check string) {
	w.t.Helper()
	if got := w.check(b); got != check {
		w.t.Fatalf("Check(%s) = %q, want %q", b.Coordinate, got, check)
	}
}

func TestSignedAcceptedOthersRefused(t *testing.T) {
	w := newWorld(t, 1, 1)
	a := build("com.example:a:1.0.0", "manifest a", "linux", "amd64")
	w.push(a, build("com.example:b:1.0.0", "manifest b"))
	w.want(a, "")
	other := a
	other.Tags = []string{"amd64", "linux", "linux"} // same target path
	w.want(other, "")
	for _, tt := range []struct {
		name string
		b    trust.Build
		want string
	}{
		{"never signed", build("com.example:c:1.0.0", "c"), trust.CheckUnsigned},
		{"other tags", build("com.example:a:1.0.0", "manifest a", "linux"), trust.CheckUnsigned},
		{"other manifest", build("com.example:a:1.0.0", "evil", "linux", "amd64"), trust.CheckDigest},
		{"other length", trust.Build{Coordinate: a.Coordinate, Tags: a.Tags, Digest: a.Digest, Length: 3}, trust.CheckDigest},
	} {
		if got := w.check(tt.b); got != tt.want {
			t.Errorf("%s: Check = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestManyBuildsStaySmall(t *testing.T) {
	w := newWorld(t, 1, 1)
	var bs []trust.Build
	for i := range 500 {
		bs = append(bs, build(fmt.Sprintf("com.example:p%d:1.0.0", i), fmt.Sprint(i)))
	}
	w.push(bs...)
	w.want(bs[77], "")
	top, err := w.repo.File(ctx, "targets.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(top) > 2000 {
		t.Errorf("targets.json is %d bytes with 500 builds; it should not grow with builds", len(top))
	}
}

func TestRollbackAndFreezeRefused(t *testing.T) {
	w := newWorld(t, 1, 1)
	a := build("com.example:a:1.0.0", "a")
	w.push(a)
	w.want(a, "")
	old, err := w.st.TrustFile(ctx, metadata.TIMESTAMP, 0)
	if err != nil {
		t.Fatal(err)
	}
	w.push(build("com.example:b:1.0.0", "b"))
	w.want(a, "")
	// A compromised server serves the older timestamp again.
	if err := forceTimestamp(w, old); err != nil {
		t.Fatal(err)
	}
	w.want(a, trust.CheckRollback)

	// A server that stops refreshing: time passes beyond the expiry.
	w2 := newWorld(t, 1, 1)
	w2.push(a)
	w2.want(a, "")
	w2.clock.t = w2.clock.t.Add(25 * time.Hour)
	w2.want(a, trust.CheckExpired)
	// The live server signs a fresh timestamp by itself.
	if err := w2.repo.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	w2.want(a, "")
}

// forceTimestamp writes a timestamp under the store's rule, as someone
// with the database would.
func forceTimestamp(w *world, f store.TrustFile) error {
	cur, err := w.st.TrustFile(ctx, metadata.TIMESTAMP, 0)
	if err != nil {
		return err
	}
	// The store refuses lower versions; a hostile writer goes around it.
	f.Version = cur.Version + 1
	return w.st.PutTrustFiles(ctx, []store.TrustFile{f})
}

func TestTargetsRotation(t *testing.T) {
	w := newWorld(t, 1, 1)
	a := build("com.example:a:1.0.0", "a")
	w.push(a)
	w.want(a, "")
	oldKey, err := os.ReadFile(filepath.Join(w.keys, trust.TargetsKey))
	if err != nil {
		t.Fatal(err)
	}
	if err := trust.Rotate(w.keys, metadata.TARGETS, w.clock.t); err != nil {
		t.Fatal(err)
	}
	if err := w.repo.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	w.want(a, trust.CheckUnsigned) // signed by the old key only
	// The old key can no longer sign.
	k, err := trust.ParseKey(oldKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := trust.SignBuilds(ctx, remote{w.repo}, k, []trust.Build{a}, w.clock.t); err == nil {
		t.Fatal("SignBuilds with the old targets key succeeded")
	}
	w.push(a)
	w.want(a, "")
}

func TestRootRotationTwoOfThree(t *testing.T) {
	w := newWorld(t, 2, 3)
	a := build("com.example:a:1.0.0", "a")
	w.push(a)
	w.want(a, "")
	if err := trust.Rotate(w.keys, metadata.ROOT, w.clock.t); err != nil {
		t.Fatal(err)
	}
	for _, role := range []string{metadata.SNAPSHOT, metadata.TIMESTAMP} {
		if err := trust.Rotate(w.keys, role, w.clock.t); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.repo.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	w.want(a, "")
	f, err := w.st.TrustFile(ctx, metadata.ROOT, 0)
	if err != nil || f.Version != 4 {
		t.Fatalf("newest root = %d, %v; want version 4", f.Version, err)
	}
}

func TestRootBelowThresholdRefused(t *testing.T) {
	w := newWorld(t, 2, 3)
	a := build("com.example:a:1.0.0", "a")
	w.push(a)
	w.want(a, "")
	// A root version 2 signed by one of the three keys only.
	root, err := metadata.Root().FromFile(filepath.Join(w.keys, trust.RootFile))
	if err != nil {
		t.Fatal(err)
	}
	root.Signed.Version = 2
	root.ClearSignatures()
	k, err := trust.LoadKey(filepath.Join(w.keys, "root-1.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := trust.Sign(root, k); err != nil {
		t.Fatal(err)
	}
	data, _ := root.ToBytes(false)
	if err := w.st.PutTrustFiles(ctx, []store.TrustFile{{Role: metadata.ROOT, Version: 2, Data: data}}); err != nil {
		t.Fatal(err)
	}
	w.want(a, trust.CheckThreshold)
}
