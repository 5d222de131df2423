package service

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/api"
)

// svcScript is the test service. Its trap is set first and data/port is
// written whole (temp file, rename): a stop that lands just after a
// restart must not leave the file truncated by the new process half-way
// through its write (the test saw an empty data/port under load).
const svcScript = `#!/bin/sh
trap 'exit 0' TERM
for a in "$@"; do echo "arg $a"; done
echo "$DROVER_PARAM_PORT" > "$DROVER_RUNTIME_DIR/data/port.new" && mv "$DROVER_RUNTIME_DIR/data/port.new" "$DROVER_RUNTIME_DIR/data/port"
while :; do sleep 0.05; done
`

func newSup(t *testing.T) (*Supervisor, string) {
	t.Helper()
	loc := t.TempDir()
	if err := os.MkdirAll(filepath.Join(loc, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{"run": svcScript, "bad": "#!/bin/sh\necho boom >&2\nexit 3\n"} {
		if err := os.WriteFile(filepath.Join(loc, "bin", name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	s, err := New(Config{RuntimeRoot: t.TempDir(), Grace: 2 * time.Second, StartWait: 200 * time.Millisecond, MinBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, st := range s.States() {
			_ = s.Stop(context.Background(), st.Coordinate)
		}
	})
	return s, loc
}

func state(s *Supervisor, coord string) api.ServiceState {
	for _, st := range s.States() {
		if st.Coordinate == coord {
			return st
		}
	}
	return api.ServiceState{}
}

func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCoordinate(t *testing.T) {
	tests := []struct {
		pkg, inst, svc string
		labels         map[string]string
		want           string
	}{
		{"com.example:idee", "1", "idee", map[string]string{"env": "prod", "region": "trd"}, "1.idee.prod.trd"},
		{"com.example:web", "", "http", nil, "web.http"},
		{"com.example:web", "blue", "http", map[string]string{"env": "prod"}, "blue.http"},
	}
	for _, tt := range tests {
		if got := Coordinate(tt.pkg, tt.inst, tt.svc, tt.labels); got != tt.want {
			t.Errorf("Coordinate(%s, %s, %s, %v) = %s, want %s", tt.pkg, tt.inst, tt.svc, tt.labels, got, tt.want)
		}
	}
}

func TestLifecycle(t *testing.T) {
	s, loc := newSup(t)
	ctx := context.Background()
	sp := Spec{Coordinate: "blue.web", Package: "g:web", Version: "1.0.0", Instance: "blue", Service: "web",
		Location: loc, Start: "bin/run", Restart: RestartOnFailure, Params: map[string]string{"port": "8081"}}
	if err := s.Start(ctx, sp); err != nil {
		t.Fatalf("Start() = %v", err)
	}
	dir := s.Dir("blue.web")
	for _, sub := range []string{"log", "etc", "console", "data", "run"} {
		if fi, err := os.Stat(filepath.Join(dir, sub)); err != nil || !fi.IsDir() {
			t.Errorf("runtime dir %s: %v", sub, err)
		}
	}
	pidText, err := os.ReadFile(filepath.Join(dir, "run", "start.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(pidText)))
	if st := state(s, "blue.web"); st.State != api.ServiceRunning || st.PID != pid {
		t.Fatalf("state = %+v, want running with pid %d", st, pid)
	}
	poll(t, "console has the flags", func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "console", "stdout.log"))
		return strings.Contains(string(b), "arg --runtime-dir="+dir) && strings.Contains(string(b), "arg --coordinate=blue.web") && strings.Contains(string(b), "arg --port=8081")
	})

	// kill -9: restarted per policy, with another pid.
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	poll(t, "restart after kill -9", func() bool {
		st := state(s, "blue.web")
		return st.State == api.ServiceRunning && st.PID != pid && st.PID != 0 && st.Restarts == 1
	})

	if err := s.Stop(ctx, "blue.web"); err != nil {
		t.Fatalf("Stop() = %v", err)
	}
	if st := state(s, "blue.web"); st.State != api.ServiceStopped || st.PID != 0 {
		t.Errorf("after Stop: %+v", st)
	}
	if _, err := os.Stat(filepath.Join(dir, "run", "start.pid")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pid file after stop: %v", err)
	}
	if err := s.Remove(ctx, "blue.web", false); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "data", "port")); err != nil || strings.TrimSpace(string(b)) != "8081" {
		t.Errorf("data/ kept after remove: %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "console")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("console/ after remove: %v, want gone", err)
	}
	if err := s.Remove(ctx, "blue.web", true); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("runtime dir after purge: %v, want gone", err)
	}
}

func TestStartFails(t *testing.T) {
	s, loc := newSup(t)
	err := s.Start(context.Background(), Spec{Coordinate: "x.bad", Package: "g:x", Service: "bad", Location: loc, Start: "bin/bad", Restart: RestartAlways})
	if !errors.Is(err, ErrStart) || !strings.Contains(err.Error(), "exited 3") || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("Start(bad) = %v, want ErrStart with the exit code and console tail", err)
	}
	time.Sleep(150 * time.Millisecond) // past MinBackoff: it must not be restarted
	if st := state(s, "x.bad"); st.State != api.ServiceFailed || st.Restarts != 0 {
		t.Errorf("after failed start: %+v, want failed, no restarts", st)
	}
	err = s.Start(context.Background(), Spec{Coordinate: "x.none", Service: "none", Location: loc, Start: "bin/missing"})
	if !errors.Is(err, ErrStart) {
		t.Errorf("Start(missing) = %v, want ErrStart", err)
	}
}

func TestAdopt(t *testing.T) {
	s, loc := newSup(t)
	ctx := context.Background()
	sp := Spec{Coordinate: "a.web", Package: "g:web", Service: "web", Location: loc, Start: "bin/run", Restart: RestartNever}
	if err := s.Start(ctx, sp); err != nil {
		t.Fatal(err)
	}
	pid := state(s, "a.web").PID
	// A second supervisor (a restarted agent) adopts the process.
	s2, err := New(Config{RuntimeRoot: s.cfg.RuntimeRoot, Grace: 2 * time.Second, StartWait: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := s2.Adopt(sp); !ok || err != nil {
		t.Fatalf("Adopt() = %v, %v, want true", ok, err)
	}
	if st := state(s2, "a.web"); st.PID != pid || st.State != api.ServiceRunning {
		t.Fatalf("adopted state = %+v, want pid %d", st, pid)
	}
	if err := s2.Stop(ctx, "a.web"); err != nil {
		t.Fatal(err)
	}
	poll(t, "process gone", func() bool { return syscall.Kill(pid, 0) != nil || zombie(pid) })
}
