package agent

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/facts"
	"github.com/drover-dev/drover/internal/resolve"
)

// TestHealthChangeReportedAtOnce: when a service's health command starts
// failing, the agent reports it within moments, not at its next periodic
// report (an hour away here), so a rollout sees the unhealthy device in
// seconds.
func TestHealthChangeReportedAtOnce(t *testing.T) {
	srv := &fakeServer{blobs: map[string][]byte{}, tamper: map[string][]byte{}}
	files := map[string]string{
		"bin/app":    "#!/bin/sh\ntrap 'exit 0' TERM\nwhile :; do sleep 0.1; done\n",
		"bin/health": "#!/bin/sh\nif [ -e data/sick ]; then echo 'answers 500'; exit 1; fi\necho ok\n",
	}
	m := api.Manifest{Group: "com.example", Name: "app", Version: "1.0.0", Tags: []string{}, Install: api.InstallPrefix,
		Services: []api.Service{{Name: "app", Start: "bin/app", Health: "bin/health", Restart: "never"}},
		Files:    []api.File{{Path: "bin", Type: api.TypeDir, Mode: 0o755}}}
	for _, p := range []string{"bin/app", "bin/health"} {
		d := digestOf([]byte(files[p]))
		srv.blobs[d] = []byte(files[p])
		m.Files = append(m.Files, api.File{Path: p, Type: api.TypeFile, Mode: 0o755, Size: int64(len(files[p])), Digest: d})
	}
	mj, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	md := digestOf(mj)
	srv.blobs[md] = mj
	apps := []api.ResolvedApp{{Name: "com.example:app", Version: "1.0.0", Digest: md, Tags: []string{}}}
	srv.resolved = &api.Resolved{Device: "d1", Apps: apps, Digest: resolve.Digest(apps)}
	home := t.TempDir()
	a, err := New(Config{Home: home, Device: "d1", Root: filepath.Join(home, "root"), Facts: facts.Facts{"os": "linux", "arch": "amd64"},
		ReportInterval: time.Hour, Node: NodeConfig{HealthInterval: 100 * time.Millisecond}}, srv)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		// Services outlive their agent: stop this one's.
		pids, _ := filepath.Glob(filepath.Join(a.cfg.RuntimeRoot, "*", "run", "start.pid"))
		for _, p := range pids {
			b, _ := os.ReadFile(p)
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
				_ = syscall.Kill(-pid, syscall.SIGKILL)
			}
		}
	})
	health := func() string {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		if len(srv.reports) == 0 {
			return ""
		}
		for _, s := range srv.reports[len(srv.reports)-1].Services {
			return s.Health
		}
		return ""
	}
	waitFor := func(want string, within time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		for time.Since(start) < within {
			if health() == want {
				return time.Since(start)
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("no report with the service %s within %v (last: %q)", want, within, health())
		return 0
	}
	waitFor(api.ServiceHealthy, 15*time.Second)
	dirs, _ := filepath.Glob(filepath.Join(a.cfg.RuntimeRoot, "*", "data"))
	if len(dirs) != 1 {
		t.Fatalf("runtime data folders: %v", dirs)
	}
	if err := os.WriteFile(filepath.Join(dirs[0], "sick"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	took := waitFor(api.ServiceUnhealthy, 3*time.Second)
	t.Logf("unhealthy reported %v after the check began failing", took.Round(time.Millisecond))
}
