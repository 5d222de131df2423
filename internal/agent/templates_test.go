package agent

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/resolve"
)

// offerRoot makes srv offer one root-mode build of com.example:name with a
// template rendered to dest, and files (path -> content), plus a
// postinst script when postinst is not "".
func offerRoot(t *testing.T, srv *fakeServer, name, version, dest, tmpl string, files map[string]string, postinst string) {
	t.Helper()
	m := api.Manifest{Group: "com.example", Name: name, Version: version, Tags: []string{}, Install: api.InstallRoot}
	put := func(b []byte) string {
		d := digestOf(b)
		srv.blobs[d] = b
		return d
	}
	m.Files = append(m.Files, api.File{Path: "etc", Type: api.TypeDir, Mode: 0o755})
	for p, c := range files {
		m.Files = append(m.Files, api.File{Path: p, Type: api.TypeFile, Mode: 0o644, Size: int64(len(c)), Digest: put([]byte(c))})
	}
	sortFiles(m.Files)
	m.Templates = []api.Template{{Src: "templates/t", Dest: dest, Digest: put([]byte(tmpl))}}
	if postinst != "" {
		m.Scripts = map[string]string{"postinst": put([]byte(postinst))}
	}
	mj, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	apps := []api.ResolvedApp{{Name: "com.example:" + name, Version: version, Digest: put(mj), Tags: []string{}}}
	srv.mu.Lock()
	srv.resolved = &api.Resolved{Device: "d1", Apps: apps, Digest: resolve.Digest(apps)}
	srv.mu.Unlock()
}

// In root mode a template is a file the package owns: it obeys the
// ownership and conflict rules and the journal, like every other file.
func TestRootTemplatesAreOwnedFiles(t *testing.T) {
	ctx := context.Background()
	t.Run("operator file is a conflict", func(t *testing.T) {
		srv, a := newFake(t, nil)
		if err := os.MkdirAll(a.cfg.Root, 0o755); err != nil {
			t.Fatal(err)
		}
		conf := filepath.Join(a.cfg.Root, "etc", "app.conf")
		if err := os.MkdirAll(filepath.Dir(conf), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(conf, []byte("operator's\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		offerRoot(t, srv, "app", "1.0.0", "etc/app.conf", "rendered\n", nil, "")
		if err := a.Converge(ctx); err == nil {
			t.Errorf("Converge over an operator's file = nil, want a conflict")
		}
		if b, _ := os.ReadFile(conf); string(b) != "operator's\n" {
			t.Errorf("operator's file now holds %q", b)
		}
	})
	t.Run("another package's file is a conflict", func(t *testing.T) {
		srv, a := newFake(t, nil)
		if err := os.MkdirAll(a.cfg.Root, 0o755); err != nil {
			t.Fatal(err)
		}
		offerRoot(t, srv, "owner", "1.0.0", "etc/owner.conf", "x\n", map[string]string{"etc/shared.conf": "owner's\n"}, "")
		if err := a.Converge(ctx); err != nil {
			t.Fatal(err)
		}
		shared := filepath.Join(a.cfg.Root, "etc", "shared.conf")
		owner := srv.resolved.Apps[0]
		offerRoot(t, srv, "intruder", "1.0.0", "etc/shared.conf", "intruder's\n", nil, "")
		srv.mu.Lock()
		srv.resolved.Apps = append([]api.ResolvedApp{owner}, srv.resolved.Apps...)
		srv.resolved.Digest = resolve.Digest(srv.resolved.Apps)
		srv.mu.Unlock()
		if err := a.Converge(ctx); err == nil {
			t.Errorf("Converge with a template over another package's file = nil, want a conflict")
		}
		if b, _ := os.ReadFile(shared); string(b) != "owner's\n" {
			t.Errorf("the owner's file now holds %q", b)
		}
	})
	t.Run("rollback and removal", func(t *testing.T) {
		srv, a := newFake(t, nil)
		if err := os.MkdirAll(a.cfg.Root, 0o755); err != nil {
			t.Fatal(err)
		}
		conf := filepath.Join(a.cfg.Root, "etc", "app.conf")
		offerRoot(t, srv, "app", "1.0.0", "etc/app.conf", "v1\n", nil, "")
		if err := a.Converge(ctx); err != nil {
			t.Fatal(err)
		}
		offerRoot(t, srv, "app", "2.0.0", "etc/app.conf", "v2\n", nil, "#!/bin/sh\nexit 1\n")
		if err := a.Converge(ctx); err == nil {
			t.Fatal("Converge with a failing postinst = nil, want the error")
		}
		if b, _ := os.ReadFile(conf); string(b) != "v1\n" {
			t.Errorf("after the rollback the template holds %q, want v1's", b)
		}
		srv.mu.Lock()
		srv.resolved = &api.Resolved{Device: "d1", Apps: []api.ResolvedApp{}, Digest: resolve.Digest(nil)}
		srv.mu.Unlock()
		a.fail.digest = "" // retry at once
		if err := a.Converge(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(conf); !os.IsNotExist(err) {
			t.Errorf("after removal the template is still there: %v", err)
		}
	})
}
