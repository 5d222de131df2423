package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/store"
	"github.com/drover-dev/drover/internal/store/postgres/pgtest"
	"github.com/drover-dev/drover/internal/store/sqlite"
)

// TestServerMigrate: `drover server migrate` copies a data folder's store
// into PostgreSQL and prints one count per kind; a second run into the
// now full store is refused with one line.
func TestServerMigrate(t *testing.T) {
	ctx := context.Background()
	data := t.TempDir()
	oneLine(t, "migrate without --to", runBin(t, nil, "", "server", "migrate", "--from", data), 2, "--to")
	oneLine(t, "migrate to sqlite", runBin(t, nil, "", "server", "migrate", "--from", data, "--to", "sqlite:x.db"), 2, "want postgres://")
	oneLine(t, "migrate from no server", runBin(t, nil, "", "server", "migrate", "--from", data, "--to", "postgres://u:pw@127.0.0.1:1/db"), 1, "no drover.db")

	src, err := sqlite.Open(ctx, filepath.Join(data, "drover.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, id := range []string{"dev-1", "dev-2"} {
		d := api.Device{ID: id, LastSeen: now}
		if _, err := src.Commit(ctx, store.Write{Device: &d, Events: []api.Event{{Time: now, Device: id, Kind: api.KindLog}}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := src.SetParamValues(ctx, "", "org.a:app", map[string]any{"port": 80.0}); err != nil {
		t.Fatal(err)
	}
	src.Close()

	url := pgtest.URL(t)
	r := runBin(t, nil, "", "server", "migrate", "--from", data, "--to", url)
	if r.code != 0 {
		t.Fatalf("server migrate: exit %d, stderr %q", r.code, r.stderr)
	}
	for _, want := range []string{"devices: 2\n", "events: 2\n", "parameter values: 1\n", "builds: 0\n", "event ids: new ones above 2\n",
		"blobs: not copied: give every server " + filepath.Join(data, "blobs") + " as --blobs"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("server migrate printed:\n%s\nwant a line %q", r.stdout, want)
		}
	}
	oneLine(t, "migrate into a full store", runBin(t, nil, "", "server", "migrate", "--from", data, "--to", url), 1, "not empty")
}
