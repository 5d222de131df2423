package sqlite

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"testing/fstest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/store"
	"github.com/drover-dev/drover/internal/store/migration"
	"github.com/drover-dev/drover/internal/store/storetest"
)

func open(t *testing.T, path string) *DB {
	t.Helper()
	db, err := Open(context.Background(), path, nil)
	if err != nil {
		t.Fatalf("Open(%s) = %v", path, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return open(t, filepath.Join(t.TempDir(), "drover.db"))
	})
}

func TestReopenKeepsData(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "drover.db")
	db, err := Open(ctx, path, nil)
	if err != nil {
		t.Fatalf("Open = %v", err)
	}
	seen := time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)
	dev := api.Device{ID: "dev-1", Tags: []string{"linux"}, LastSeen: seen}
	if err := commitDevice(db, dev); err != nil {
		t.Fatalf("commit device = %v", err)
	}
	evs, err := db.AppendEvents(ctx, []api.Event{{Time: seen, Kind: api.KindDeviceSeen}})
	if err != nil {
		t.Fatalf("AppendEvents = %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}

	db = open(t, path)
	got, err := db.Device(ctx, "dev-1")
	if diff := cmp.Diff(dev, got); err != nil || diff != "" {
		t.Errorf("Device after reopen = %v, mismatch (-want +got):\n%s", err, diff)
	}
	more, err := db.AppendEvents(ctx, []api.Event{{Time: seen, Kind: api.KindDeviceSeen}})
	if err != nil || more[0].ID <= evs[0].ID {
		t.Errorf("AppendEvents after reopen = %v, %v, want an ID above %d", ids(more), err, evs[0].ID)
	}
}

func ids(evs []api.Event) []int64 {
	var out []int64
	for _, e := range evs {
		out = append(out, e.ID)
	}
	return out
}

func TestMigrationsRecordedOnce(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "drover.db")
	open(t, path).Close()
	db := open(t, path)

	want, err := migration.Load(migrationFS)
	if err != nil || len(want) == 0 {
		t.Fatalf("migration.Load = %d, %v, want some", len(want), err)
	}
	rows, err := db.read.QueryContext(ctx, `SELECT version, name FROM schema_migrations ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got, wantRows []string
	for rows.Next() {
		var v int
		var name string
		if err := rows.Scan(&v, &name); err != nil {
			t.Fatal(err)
		}
		got = append(got, name)
	}
	for _, m := range want {
		wantRows = append(wantRows, m.Name)
	}
	if diff := cmp.Diff(wantRows, got); diff != "" {
		t.Errorf("schema_migrations after two opens mismatch (-want +got):\n%s", diff)
	}
}

// A migration that fails half-way leaves neither its changes nor its
// record, and the next open retries it.
func TestMigrationAtomic(t *testing.T) {
	ctx := context.Background()
	db := open(t, filepath.Join(t.TempDir(), "drover.db"))
	broken := fstest.MapFS{
		"migrations/0001_init.sql": &fstest.MapFile{Data: []byte("CREATE TABLE a (x INTEGER);")},
		"migrations/0099_half.sql": &fstest.MapFile{Data: []byte("CREATE TABLE b (x INTEGER); CREATE TABLE oops (;")},
	}
	// Open recorded the real migrations, so only 0099 runs here.
	if err := db.migrate(ctx, broken); err == nil {
		t.Fatal("migrate(broken 0099) = nil, want an error")
	}
	var n int
	if err := db.read.QueryRowContext(ctx, `SELECT COUNT(*) FROM sqlite_schema WHERE name = 'b'`).Scan(&n); err != nil || n != 0 {
		t.Errorf("table b exists (%d, %v) after its migration failed, want not", n, err)
	}
	if err := db.read.QueryRowContext(ctx, `SELECT COUNT(*) FROM schema_migrations WHERE version = 99`).Scan(&n); err != nil || n != 0 {
		t.Errorf("failed migration recorded (%d, %v), want not", n, err)
	}

	fixed := fstest.MapFS{
		"migrations/0001_init.sql": broken["migrations/0001_init.sql"],
		"migrations/0099_half.sql": &fstest.MapFile{Data: []byte("CREATE TABLE b (x INTEGER);")},
	}
	if err := db.migrate(ctx, fixed); err != nil {
		t.Fatalf("migrate(fixed) = %v", err)
	}
	if err := db.read.QueryRowContext(ctx, `SELECT COUNT(*) FROM sqlite_schema WHERE name = 'b'`).Scan(&n); err != nil || n != 1 {
		t.Errorf("table b count = %d, %v after the fixed migration, want 1", n, err)
	}
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "drover.db")
	db := open(t, path)
	if _, err := db.write.Exec(`INSERT INTO schema_migrations (version, name) VALUES (9999, 'from_the_future')`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if db, err := Open(context.Background(), path, nil); err == nil {
		db.Close()
		t.Fatal("Open(newer schema) = nil error, want an error")
	}
}

func TestPragmas(t *testing.T) {
	db := open(t, filepath.Join(t.TempDir(), "drover.db"))
	tests := []struct {
		pragma string
		want   string
	}{
		{"journal_mode", "wal"},
		{"foreign_keys", "1"},
		{"synchronous", "1"}, // NORMAL
		{"busy_timeout", "5000"},
	}
	for _, tt := range tests {
		var got string
		if err := db.write.QueryRow("PRAGMA " + tt.pragma).Scan(&got); err != nil || got != tt.want {
			t.Errorf("PRAGMA %s = %q, %v, want %q", tt.pragma, got, err, tt.want)
		}
	}
	if _, err := db.read.Exec(`INSERT INTO documents (key, kind, name, data) VALUES ('device/x', 'device', 'x', '{}')`); err == nil {
		t.Error("write through the read pool succeeded, want it refused")
	}
}

// Event IDs are never reused, even after the newest event is removed
// (pruning will do that later), so a client's cursor stays valid.
func TestEventIDsNeverReused(t *testing.T) {
	ctx := context.Background()
	db := open(t, filepath.Join(t.TempDir(), "drover.db"))
	evs, err := db.AppendEvents(ctx, []api.Event{{Kind: api.KindLog}, {Kind: api.KindLog}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.write.Exec(`DELETE FROM events`); err != nil {
		t.Fatal(err)
	}
	more, err := db.AppendEvents(ctx, []api.Event{{Kind: api.KindLog}})
	if err != nil || more[0].ID <= evs[1].ID {
		t.Errorf("AppendEvents after pruning = %v, %v, want an ID above %d", ids(more), err, evs[1].ID)
	}
}

func TestOpenPathWithQuestionMark(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "odd?name#x%20.db")
	db := open(t, path)
	if err := commitDevice(db, api.Device{ID: "d"}); err != nil {
		t.Fatalf("commit device = %v", err)
	}
	db.Close()
	matches, _ := filepath.Glob(filepath.Join(dir, "odd*"))
	if len(matches) == 0 {
		t.Fatalf("no database file under %s", dir)
	}
	db = open(t, path)
	if _, err := db.Device(ctx, "d"); err != nil {
		t.Errorf("Device after reopen of %q = %v, want nil", path, err)
	}
}

// commitDevice writes a device record alone.
func commitDevice(db *DB, d api.Device) error {
	_, err := db.Commit(context.Background(), store.Write{Device: &d})
	return err
}

// The database holds every device's state and events: private whatever
// the umask or a file created before (by an older drover).
func TestDatabaseFilesPrivate(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "drover.db")
	if err := os.WriteFile(path, nil, 0o644); err != nil { // an older drover's file
		t.Fatal(err)
	}
	db := open(t, path)
	if err := commitDevice(db, api.Device{ID: "d"}); err != nil {
		t.Fatal(err)
	}
	matches, _ := filepath.Glob(path + "*")
	if len(matches) < 2 {
		t.Fatalf("database files %q, want the database and its log", matches)
	}
	for _, p := range matches {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if m := fi.Mode().Perm(); m&0o077 != 0 {
			t.Errorf("%s has mode %v, want no access for group and others", filepath.Base(p), m)
		}
	}
}

// Desired states stored before documents existed become device documents.
func TestMigrateDesiredToDocuments(t *testing.T) {
	ctx := context.Background()
	db := open(t, filepath.Join(t.TempDir(), "drover.db"))
	// Back to the schema of 0003, with one desired state in it.
	for _, q := range []string{
		`DROP TABLE documents`,
		`DELETE FROM schema_migrations WHERE version = 4`,
		`CREATE TABLE desired (id TEXT NOT NULL PRIMARY KEY, data TEXT NOT NULL) STRICT`,
		`INSERT INTO desired (id, data) VALUES ('dev-1', '{"id":"dev-1","systemtags":["linux"],"apps":[{"name":"org.a:app","version":"^1","tags":[]}]}')`,
	} {
		if _, err := db.write.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if err := db.migrate(ctx, migrationFS); err != nil {
		t.Fatalf("migrate = %v", err)
	}
	docs, err := db.Documents(ctx)
	if err != nil || len(docs) != 1 || docs[0].Set.IsZero() {
		t.Fatalf("Documents after migration = %+v, %v, want one, set at the migration", docs, err)
	}
	docs[0].Set = time.Time{}
	want := []api.Document{{Kind: api.DocDevice, ID: "dev-1", Apps: []api.DesiredApp{{Name: "org.a:app", Version: "^1", Tags: []string{}}}}}
	if diff := cmp.Diff(want, docs); diff != "" {
		t.Errorf("Documents after migration = %v, mismatch (-want +got):\n%s", err, diff)
	}
}
