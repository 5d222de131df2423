package agent

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/facts"
	"github.com/drover-dev/drover/internal/resolve"
)

// TestProgressTotalsFromTheFirstEvent: every step-progress event names
// its phase, and within a phase the totals never change: they are right
// from the first event, scripts (no size in the manifest) included;
// bytes done never pass the total and reach it at the end.
func TestProgressTotalsFromTheFirstEvent(t *testing.T) {
	srv := &fakeServer{blobs: map[string][]byte{}, tamper: map[string][]byte{}}
	m := api.Manifest{Group: "com.example", Name: "big", Version: "1.0.0", Tags: []string{}, Install: api.InstallPrefix,
		Files: []api.File{{Path: "data", Type: api.TypeDir, Mode: 0o755}}, Scripts: map[string]string{}}
	for i, c := range []string{strings.Repeat("a", 300<<10), strings.Repeat("b", 200<<10), "c"} {
		d := digestOf([]byte(c))
		srv.blobs[d] = []byte(c)
		m.Files = append(m.Files, api.File{Path: "data/" + string(rune('x'+i)), Type: api.TypeFile, Mode: 0o644, Size: int64(len(c)), Digest: d})
	}
	script := []byte("#!/bin/sh\nexit 0\n" + strings.Repeat("#", 5000))
	srv.blobs[digestOf(script)] = script
	m.Scripts["postinst"] = digestOf(script)
	mj, _ := json.Marshal(m)
	md := digestOf(mj)
	srv.blobs[md] = mj
	apps := []api.ResolvedApp{{Name: "com.example:big", Version: "1.0.0", Digest: md, Tags: []string{}}}
	srv.resolved = &api.Resolved{Device: "d1", Apps: apps, Digest: resolve.Digest(apps)}
	home := t.TempDir()
	a, err := New(Config{Home: home, Device: "d1", Root: filepath.Join(home, "root"), Facts: facts.Facts{"os": "linux", "arch": "amd64"}}, srv)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Converge(context.Background()); err != nil {
		t.Fatal(err)
	}
	first := map[string]Progress{}
	last := map[string]Progress{}
	for _, ev := range srv.events {
		if ev.Kind != KindStepProgress {
			continue
		}
		var p Progress
		if err := json.Unmarshal(ev.Payload, &p); err != nil {
			t.Fatal(err)
		}
		if p.Phase != "download" && p.Phase != "install" {
			t.Errorf("progress phase %q, want download or install", p.Phase)
		}
		f, seen := first[p.Phase]
		if !seen {
			first[p.Phase] = p
		} else if p.BytesTotal != f.BytesTotal || p.FilesTotal != f.FilesTotal {
			t.Errorf("%s totals changed from %d bytes/%d files to %d/%d", p.Phase, f.BytesTotal, f.FilesTotal, p.BytesTotal, p.FilesTotal)
		}
		if p.BytesDone > p.BytesTotal || p.FilesDone > p.FilesTotal {
			t.Errorf("%s progress past its total: %+v", p.Phase, p)
		}
		last[p.Phase] = p
	}
	dl := last["download"]
	if dl.FilesTotal != 4 || dl.BytesTotal != 500<<10+1 || dl.BytesDone != dl.BytesTotal || dl.FilesDone != dl.FilesTotal {
		t.Errorf("last download progress = %+v, want 4 files, %d bytes, all done", dl, 500<<10+1)
	}
	if in, ok := last["install"]; !ok || in.FilesDone != in.FilesTotal {
		t.Errorf("last install progress = %+v (seen %v), want all done", in, ok)
	}
}
