package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/drover-dev/drover/internal/blob"
	"github.com/drover-dev/drover/internal/store"
	"github.com/drover-dev/drover/internal/store/sqlite"
	"github.com/drover-dev/drover/internal/trust"
)

// trustFleet is a fleet whose server runs with --trust-dir: keys is the
// offline key folder, trustDir the server's copy of its online part.
type trustFleet struct {
	*fleet
	keys, trustDir string
}

func newTrustFleet(t *testing.T, initArgs ...string) *trustFleet {
	t.Helper()
	f := &fleet{t: t, dir: t.TempDir()}
	f.pki = filepath.Join(f.dir, "pki")
	f.mustOK(nil, "pki", "init", "--dir", f.pki)
	f.mustOK(nil, "pki", "issue", "--dir", f.pki, "--server", "localhost")
	f.mustOK(nil, "pki", "issue", "--dir", f.pki, "--admin", "ops")
	tf := &trustFleet{fleet: f, keys: filepath.Join(f.dir, "keys"), trustDir: filepath.Join(f.dir, "trust")}
	f.mustOK(nil, append([]string{"trust", "init", "--dir", tf.keys}, initArgs...)...)
	if err := os.MkdirAll(tf.trustDir, 0o700); err != nil {
		t.Fatal(err)
	}
	tf.copyToServer()
	f.serverArgs = []string{"--trust-dir", tf.trustDir}
	f.startServer()
	return tf
}

// copyToServer gives the server what an operator gives it: every root
// version, targets.json and the online keys, never the offline ones.
func (tf *trustFleet) copyToServer() {
	t := tf.t
	t.Helper()
	entries, err := os.ReadDir(tf.keys)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		n := e.Name()
		if !strings.HasSuffix(n, ".json") && n != trust.SnapshotKey && n != trust.TimestampKey {
			continue
		}
		data, err := os.ReadFile(filepath.Join(tf.keys, n))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(tf.trustDir, n), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// pkg builds a package with a preinst script that leaves a mark, and
// returns its file.
func (tf *trustFleet) pkg(name, version, content string) string {
	t := tf.t
	t.Helper()
	src := writeSource(t, filepath.Join(tf.dir, "src", name+"-"+version+"-"+fmt.Sprint(len(content))), pkgSource{
		yaml:    "group: com.example\nname: " + name + "\nversion: " + version + "\n",
		files:   map[string]string{"files/share/" + name + ".txt": content},
		scripts: map[string]string{"preinst": `echo "preinst ` + name + `" >> "$DROVER_ROOT/marks"`},
	})
	out := filepath.Join(tf.dir, fmt.Sprintf("%s-%s-%d.drover", name, version, len(content)))
	tf.mustOK(nil, "pkg", "build", src, "-o", out)
	return out
}

func (tf *trustFleet) pushSigned(files ...string) {
	tf.t.Helper()
	out := tf.op(append([]string{"pkg", "push", "--sign-key", filepath.Join(tf.keys, trust.TargetsKey)}, files...)...)
	if !strings.Contains(out, fmt.Sprintf("signed %d builds", len(files))) {
		tf.t.Fatalf("pkg push --sign-key printed:\n%s", out)
	}
}

func (tf *trustFleet) trustedAgent(id string) *agentProc {
	a := tf.newAgent(id, "--trust-root", filepath.Join(tf.keys, trust.RootFile))
	a.start()
	return a
}

func (tf *trustFleet) setState(id string, apps ...string) {
	tf.t.Helper()
	y := "id: " + id + "\napps:\n"
	for _, a := range apps {
		y += "  - {name: com.example:" + a + ", version: 1.0.0}\n"
	}
	tf.op("state", "set", "-f", writeState(tf.t, tf.fleet, id, y))
}

// waitRefused waits for a step-failed event of the device that names the
// failed check.
func (tf *trustFleet) waitRefused(id, pkg, check string) {
	t := tf.t
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, ev := range storedEvents(t, tf.fleet) {
			if ev.Device != id || ev.Kind != "step-failed" || !strings.HasPrefix(ev.Package, "com.example:"+pkg+":") {
				continue
			}
			var p struct {
				Check string `json:"check"`
			}
			_ = json.Unmarshal(ev.Payload, &p)
			if p.Check == check {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	var kinds []string
	for _, ev := range storedEvents(t, tf.fleet) {
		if ev.Device == id {
			kinds = append(kinds, ev.Kind+": "+ev.Message)
		}
	}
	t.Fatalf("device %s: no step-failed event for %s with check %q in 30s; its events:\n%s", id, pkg, check, strings.Join(kinds, "\n"))
}

// notInstalled checks that nothing of pkg reached the device: no files,
// no script run.
func notInstalled(t *testing.T, a *agentProc, pkg string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(a.software, "com", "example", pkg)); !os.IsNotExist(err) {
		t.Errorf("%s is on the device: %v", pkg, err)
	}
	marks, _ := os.ReadFile(filepath.Join(a.root, "marks"))
	if strings.Contains(string(marks), "preinst "+pkg) {
		t.Errorf("a script of %s ran: %s", pkg, marks)
	}
}

// serverDB opens the server's database as someone who took the server
// would.
func (tf *trustFleet) serverDB() *sqlite.DB {
	tf.t.Helper()
	db, err := sqlite.Open(context.Background(), filepath.Join(tf.dir, "data", "drover.db"), nil)
	if err != nil {
		tf.t.Fatal(err)
	}
	tf.t.Cleanup(func() { db.Close() })
	return db
}

func TestTrustUnsignedBuildRefused(t *testing.T) {
	tf := newTrustFleet(t)
	tf.pushSigned(tf.pkg("a", "1.0.0", "a"))
	tf.op("pkg", "push", tf.pkg("b", "1.0.0", "b")) // no signature
	a := tf.trustedAgent("dev1")
	tf.setState("dev1", "a")
	tf.waitConverged("dev1", "com.example:a=1.0.0")
	tf.setState("dev1", "a", "b")
	tf.waitRefused("dev1", "b", trust.CheckUnsigned)
	notInstalled(t, a, "b")
	if d, _ := tf.device("dev1"); len(d.Apps) != 1 || d.Apps[0].Name != "com.example:a" {
		t.Errorf("device apps = %+v, want only com.example:a (its last good state)", d.Apps)
	}
	// Without --trust-root the same build installs, as before.
	plain := tf.newAgent("dev2")
	plain.start()
	tf.setState("dev2", "a", "b")
	tf.waitConverged("dev2", "com.example:a=1.0.0", "com.example:b=1.0.0")
}

func TestTrustTamperedServerRefused(t *testing.T) {
	tf := newTrustFleet(t)
	tf.pushSigned(tf.pkg("a", "1.0.0", "a"), tf.pkg("b", "1.0.0", "b"))
	a := tf.trustedAgent("dev1")

	// A blob of a signed build replaced in the server's blob folder.
	blobs, err := blob.NewFileStore(blob.FileConfig{Dir: filepath.Join(tf.dir, "data", "blobs")})
	if err != nil {
		t.Fatal(err)
	}
	var replaced bool
	_ = blobs.List(context.Background(), func(d string, size int64) error {
		if size == 1 { // the file of package a: "a"
			p := blobs.Path(d)
			_ = os.Chmod(p, 0o644)
			if err := os.WriteFile(p, []byte("X"), 0o644); err != nil {
				t.Fatal(err)
			}
			replaced = true
		}
		return nil
	})
	if !replaced {
		t.Fatal("no blob of package a found")
	}
	tf.setState("dev1", "a")
	tf.waitFor("dev1", "a step failed", func(d deviceJSON) bool { return d.Status.Error != "" })
	notInstalled(t, a, "a")

	// A manifest replaced in the server's database: another build of b
	// under the same coordinate, never signed.
	tf.op("pkg", "rm", "com.example:b:1.0.0")
	tf.op("pkg", "push", tf.pkg("b", "1.0.0", "evil"))
	tf.setState("dev1", "b")
	tf.waitRefused("dev1", "b", trust.CheckDigest)
	notInstalled(t, a, "b")
}

func TestTrustRollbackAndFreezeRefused(t *testing.T) {
	tf := newTrustFleet(t)
	tf.pushSigned(tf.pkg("a", "1.0.0", "a"), tf.pkg("c", "1.0.0", "c"))
	a := tf.trustedAgent("dev1")
	tf.setState("dev1", "a")
	tf.waitConverged("dev1", "com.example:a=1.0.0")
	db := tf.serverDB()
	ctx := context.Background()
	old, err := db.TrustFile(ctx, metadata.TIMESTAMP, 0)
	if err != nil {
		t.Fatal(err)
	}
	tf.pushSigned(tf.pkg("b", "1.0.0", "b"))
	tf.setState("dev1", "a", "b")
	tf.waitConverged("dev1", "com.example:a=1.0.0", "com.example:b=1.0.0")

	// The server serves its older timestamp again.
	raw, err := sql.Open("sqlite", filepath.Join(tf.dir, "data", "drover.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Exec(`UPDATE trust_files SET version = ?, data = ? WHERE role = 'timestamp'`, old.Version, old.Data); err != nil {
		t.Fatal(err)
	}
	tf.setState("dev1", "a", "b", "c")
	tf.waitRefused("dev1", "c", trust.CheckRollback)
	notInstalled(t, a, "c")

	// A server that stopped refreshing: its newest timestamp has expired
	// (signed with the server's own key, which it holds).
	cur, err := db.TrustFile(ctx, metadata.SNAPSHOT, 0)
	if err != nil {
		t.Fatal(err)
	}
	key, err := trust.LoadKey(filepath.Join(tf.trustDir, trust.TimestampKey))
	if err != nil {
		t.Fatal(err)
	}
	ts := metadata.Timestamp(time.Now().Add(-time.Hour).UTC().Truncate(time.Second))
	ts.Signed.Version = old.Version + 100
	ts.Signed.Meta["snapshot.json"] = metadata.MetaFile(cur.Version)
	if err := trust.Sign(ts, key); err != nil {
		t.Fatal(err)
	}
	data, _ := ts.ToBytes(false)
	if err := db.PutTrustFiles(ctx, []store.TrustFile{{Role: metadata.TIMESTAMP, Version: ts.Signed.Version, Data: data}}); err != nil {
		t.Fatal(err)
	}
	// The agent tries the same state again after its back-off.
	tf.waitRefused("dev1", "c", trust.CheckExpired)
	notInstalled(t, a, "c")
}

func TestTrustTargetsKeyRotation(t *testing.T) {
	tf := newTrustFleet(t)
	fileA := tf.pkg("a", "1.0.0", "a")
	tf.pushSigned(fileA)
	tf.trustedAgent("dev1")
	tf.setState("dev1", "a")
	tf.waitConverged("dev1", "com.example:a=1.0.0")
	oldKey := filepath.Join(tf.dir, "old-targets.key")
	if err := os.WriteFile(oldKey, []byte(readFile(t, filepath.Join(tf.keys, trust.TargetsKey))), 0o600); err != nil {
		t.Fatal(err)
	}

	tf.mustOK(nil, "trust", "rotate", "--dir", tf.keys, "--role", "targets")
	tf.copyToServer()
	tf.restartServer()

	// The old key signs no more.
	r := runBin(t, tf.adminEnv(), "", "pkg", "push", "--sign-key", oldKey, tf.pkg("b", "1.0.0", "b"))
	if r.code != 1 || !strings.Contains(r.stderr, "does not delegate to key") {
		t.Fatalf("push signed with the old key: exit %d, stderr %q; want exit 1 naming the key", r.code, r.stderr)
	}
	// What only the old key signed is refused to a new device.
	a2 := tf.trustedAgent("dev2")
	tf.setState("dev2", "a")
	tf.waitRefused("dev2", "a", trust.CheckUnsigned)
	notInstalled(t, a2, "a")
	// Signed again with the new key, it installs.
	tf.pushSigned(fileA)
	tf.waitConverged("dev2", "com.example:a=1.0.0")
}

func TestTrustRootRotationTwoOfThree(t *testing.T) {
	tf := newTrustFleet(t, "--threshold", "2", "--keys", "3")
	tf.pushSigned(tf.pkg("a", "1.0.0", "a"))
	a := tf.trustedAgent("dev1")
	tf.setState("dev1", "a")
	tf.waitConverged("dev1", "com.example:a=1.0.0")

	tf.mustOK(nil, "trust", "rotate", "--dir", tf.keys, "--role", "root")
	tf.copyToServer()
	tf.restartServer()
	tf.pushSigned(tf.pkg("b", "1.0.0", "b"))
	tf.setState("dev1", "a", "b")
	tf.waitConverged("dev1", "com.example:a=1.0.0", "com.example:b=1.0.0")
	local, err := metadata.Root().FromFile(filepath.Join(a.home, "system", "trust", trust.RootFile))
	if err != nil || local.Signed.Version != 2 {
		t.Fatalf("the agent trusts root %v (%v), want version 2", local, err)
	}

	// A root version 3 signed by one of the three new keys only.
	next := *local
	next.Signed.Version = 3
	next.ClearSignatures()
	k, err := trust.LoadKey(filepath.Join(tf.keys, "root-1.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := trust.Sign(&next, k); err != nil {
		t.Fatal(err)
	}
	data, _ := next.ToBytes(false)
	if err := tf.serverDB().PutTrustFiles(context.Background(), []store.TrustFile{{Role: metadata.ROOT, Version: 3, Data: data}}); err != nil {
		t.Fatal(err)
	}
	tf.pushSigned(tf.pkg("c", "1.0.0", "c"))
	tf.setState("dev1", "a", "b", "c")
	tf.waitRefused("dev1", "c", trust.CheckThreshold)
	notInstalled(t, a, "c")
}
