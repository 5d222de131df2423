package agent

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/drover-dev/drover/internal/api"
)

// The agent's own data (system/: state, journal, blob cache, event spool)
// is private whatever the umask and whatever the mode of a system/ folder
// that was there before.
func TestAgentDataPrivate(t *testing.T) {
	old := syscall.Umask(0)
	t.Cleanup(func() { syscall.Umask(old) })
	srv, a := newFake(t, map[string]string{"bin/app": "#!/bin/sh\n", "share/data": "data"})
	_ = srv
	home := a.cfg.Home
	sys := filepath.Join(home, "system")
	// Open it up as an operator or an old version might have, then start
	// again over the same home.
	if err := filepath.WalkDir(sys, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.Chmod(p, 0o777)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	a2, err := New(a.cfg, a.srv)
	if err != nil {
		t.Fatal(err)
	}
	a2.event(api.Event{Kind: "log", Level: api.LevelInfo, Message: "spooled"})
	if err := a2.Converge(context.Background()); err != nil {
		t.Fatal(err)
	}
	var files int
	err = filepath.WalkDir(sys, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(home, p)
		switch {
		case d.IsDir():
			if fi.Mode().Perm()&0o077 != 0 {
				t.Errorf("folder %s has mode %v, want no access for group and others", rel, fi.Mode().Perm())
			}
		case strings.Contains(rel, "blobs"+string(filepath.Separator)+"sha256"):
			// Read-only blobs, behind private folders.
		case fi.Mode().IsRegular():
			files++
			if fi.Mode().Perm()&0o077 != 0 {
				t.Errorf("file %s has mode %v, want no access for group and others", rel, fi.Mode().Perm())
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files == 0 {
		t.Fatalf("no files under %s: nothing was checked", sys)
	}
}
