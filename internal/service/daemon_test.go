package service

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/api"
)

// TestMain doubles as a real TCP service: a start whose environment has
// DROVER_PARAM_LISTEN runs the test binary, which listens on that port
// (after DROVER_PARAM_DELAY) until killed.
func TestMain(m *testing.M) {
	if port := os.Getenv("DROVER_PARAM_LISTEN"); port != "" {
		if d, err := time.ParseDuration(os.Getenv("DROVER_PARAM_DELAY")); err == nil {
			time.Sleep(d)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:"+port)
		if err != nil {
			fmt.Fprintln(os.Stderr, "listen:", err)
			os.Exit(2)
		}
		fmt.Println("listening on", port)
		for {
			c, err := ln.Accept()
			if err != nil {
				os.Exit(1)
			}
			c.Close()
		}
	}
	os.Exit(m.Run())
}

// daemonStart is copkg's start.py in sh: it backgrounds the service (a
// sleep loop that says it is alive), writes its pid to run/start.pid and
// exits 0.
const daemonStart = `#!/bin/sh
for a in "$@"; do echo "start arg $a"; done
( trap 'echo "daemon got TERM"; exit 0' TERM; while :; do echo "daemon alive"; sleep 0.1; done ) &
echo $! > run/start.pid
exit 0
`

func writeScript(t *testing.T, loc, name, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(loc, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(loc, "bin", name), []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
}

func gone(pid int) bool { return syscall.Kill(pid, 0) != nil || zombie(pid) }

func TestDaemonizingStart(t *testing.T) {
	s, loc := newSup(t)
	writeScript(t, loc, "daemon", daemonStart)
	var evs []Event
	evCh := make(chan Event, 16)
	s.cfg.OnEvent = func(ev Event) { evCh <- ev }
	ctx := context.Background()
	sp := Spec{Coordinate: "d.web", Package: "g:d", Version: "1.0.0", Service: "web", Location: loc, Start: "bin/daemon", Restart: RestartOnFailure}
	if err := s.Start(ctx, sp); err != nil {
		t.Fatalf("Start(daemonizing) = %v, want nil", err)
	}
	dir := s.Dir("d.web")
	// handedOver: the state names the daemon run/start.pid names, not
	// the start command (the supervisor's child, named while the start
	// runs: a loaded machine may take longer than StartWait).
	handedOver := func(s *Supervisor, old int) bool {
		st := state(s, "d.web")
		return st.State == api.ServiceRunning && st.PID != old && st.PID != 0 &&
			st.PID == readPID(filepath.Join(dir, "run", "start.pid")) && !gone(st.PID) && ppid(st.PID) != os.Getpid()
	}
	poll(t, "the supervisor watches the daemon", func() bool { return handedOver(s, 0) })
	pid := state(s, "d.web").PID
	if gone(pid) {
		t.Fatalf("daemon %d is not running", pid)
	}
	poll(t, "the daemon's output reaches console/", func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "console", "stdout.log"))
		return strings.Contains(string(b), "alive")
	})

	// kill -9 of the daemon (not the agent's child): restarted by policy.
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		b, _ := os.ReadFile(filepath.Join(dir, "console", "stdout.log"))
		t.Fatalf("kill %d: %v; state %+v; console:\n%s", pid, err, state(s, "d.web"), tail(string(b), 800))
	}
	poll(t, "restart after kill -9 of the daemon", func() bool { return handedOver(s, pid) && state(s, "d.web").Restarts == 1 })
	for len(evs) < 2 {
		select {
		case ev := <-evCh:
			evs = append(evs, ev)
		case <-time.After(10 * time.Second):
			t.Fatalf("events = %+v, want exited and restarted", evs)
		}
	}
	if evs[0].Kind != EventExited || !evs[0].Failed || !evs[0].Restart || evs[1].Kind != EventRestarted || evs[1].Failed {
		t.Errorf("events = %+v, want a failed exit with restart, then a restart", evs)
	}
	if st := state(s, "d.web"); !strings.Contains(st.LastError, "exited") {
		t.Errorf("last error = %q, want how the daemon ended", st.LastError)
	}
	pid2 := state(s, "d.web").PID

	// An agent restart: a new supervisor adopts the daemon, and stops it
	// (and its process group) through it.
	s.Close()
	s2, err := New(Config{RuntimeRoot: s.cfg.RuntimeRoot, Grace: 2 * time.Second, StartWait: 100 * time.Millisecond, MinBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s2.Close)
	if err := s2.Start(ctx, sp); err != nil {
		t.Fatalf("Start() after restart = %v", err)
	}
	if st := state(s2, "d.web"); st.PID != pid2 || st.State != api.ServiceRunning {
		t.Fatalf("after restart: %+v, want pid %d adopted", st, pid2)
	}
	if !alive(pid2, mustStart(t, pid2)) {
		t.Fatalf("daemon %d gone before the test kills it", pid2)
	}
	size := func() int64 {
		fi, _ := os.Stat(filepath.Join(dir, "console", "stdout.log"))
		return fi.Size()
	}
	before := size()
	poll(t, "the adopted daemon's output reaches console/", func() bool { return size() > before })
	// The adopted daemon crashes: the new supervisor restarts it.
	if err := syscall.Kill(pid2, syscall.SIGKILL); err != nil {
		b, _ := os.ReadFile(filepath.Join(dir, "console", "stdout.log"))
		t.Fatalf("kill %d: %v; state %+v; console:\n%s", pid2, err, state(s2, "d.web"), tail(string(b), 800))
	}
	poll(t, "restart of the adopted daemon", func() bool { return handedOver(s2, pid2) })
	pid3 := state(s2, "d.web").PID
	if err := s2.Stop(ctx, "d.web"); err != nil {
		t.Fatalf("Stop() = %v", err)
	}
	if !gone(pid3) {
		t.Errorf("daemon %d still runs after Stop", pid3)
	}
	if st := state(s2, "d.web"); st.State != api.ServiceStopped || st.PID != 0 {
		t.Errorf("after Stop: %+v", st)
	}
}

func TestDaemonizingStartFails(t *testing.T) {
	tests := []struct {
		name, script string
		want         []string
	}{
		{"no pid file", "#!/bin/sh\necho starting\nrm -f run/start.pid\nexit 0\n",
			[]string{"start exited 0 without a live pid in run/start.pid", "starting"}},
		{"dead pid", "#!/bin/sh\nsh -c 'exit 0' &\necho $! > run/start.pid\nwait\nexit 0\n",
			[]string{"start exited 0 without a live pid in run/start.pid"}},
		{"pid of an older process", "#!/bin/sh\necho 1 > run/start.pid\nexit 0\n",
			[]string{"start exited 0 without a live pid in run/start.pid"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, loc := newSup(t)
			writeScript(t, loc, "start", tt.script)
			err := s.Start(context.Background(), Spec{Coordinate: "x.d", Service: "d", Location: loc, Start: "bin/start", Restart: RestartAlways})
			if !errors.Is(err, ErrStart) {
				t.Fatalf("Start() = %v, want ErrStart", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Start() = %q, want it to say %q", err, w)
				}
			}
			if st := state(s, "x.d"); st.State != api.ServiceFailed || !strings.Contains(st.LastError, "without a live pid") {
				t.Errorf("state = %+v, want failed with the reason", st)
			}
		})
	}
}

func TestStartWaitsForPorts(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	free := func() int {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().(*net.TCPAddr).Port
	}
	tests := []struct {
		name    string
		delay   string
		ports   func(port int) []int
		startup time.Duration
		want    string // in the error; "" = starts
	}{
		{"listens at once", "0s", func(p int) []int { return []int{p} }, 5 * time.Second, ""},
		{"listens after a while", "700ms", func(p int) []int { return []int{p} }, 5 * time.Second, ""},
		{"listens too late", "5s", func(p int) []int { return []int{p} }, 1 * time.Second, "did not accept connections on loopback within 1s"},
		{"another port never opens", "0s", func(p int) []int { return []int{p, free()} }, time.Second, "did not accept connections"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, loc := newSup(t)
			writeScript(t, loc, "listen", "#!/bin/sh\nexec "+strconv.Quote(exe)+"\n")
			port := free()
			ports := tt.ports(port)
			sp := Spec{Coordinate: "t.tcp", Service: "tcp", Location: loc, Start: "bin/listen", Restart: RestartAlways,
				Params: map[string]string{"listen": strconv.Itoa(port), "delay": tt.delay}, Ports: ports, Startup: tt.startup}
			err := s.Start(context.Background(), sp)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Start() = %v", err)
				}
				c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
				if err != nil {
					t.Fatalf("after Start, port %d: %v", port, err)
				}
				c.Close()
				return
			}
			if !errors.Is(err, ErrStart) || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), fmt.Sprintf("port %d", ports[len(ports)-1])) && tt.name == "another port never opens" {
				t.Fatalf("Start() = %v, want ErrStart saying %q and naming the port", err, tt.want)
			}
			if !strings.Contains(err.Error(), "port ") {
				t.Errorf("Start() = %v, want the port named", err)
			}
			st := state(s, "t.tcp")
			if st.State != api.ServiceFailed || st.PID != 0 {
				t.Errorf("state = %+v, want failed and stopped", st)
			}
		})
	}
}

func TestSecretParams(t *testing.T) {
	s, loc := newSup(t)
	const secret = "hunter2-very-secret"
	sp := Spec{Coordinate: "s.web", Service: "web", Location: loc, Start: "bin/run", Restart: RestartNever,
		Params: map[string]string{"port": "8081", "token": secret}, Secret: map[string]bool{"token": true}}
	if err := s.Start(context.Background(), sp); err != nil {
		t.Fatal(err)
	}
	pid := state(s, "s.web").PID
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(cmdline), secret) || strings.Contains(string(cmdline), "--token") {
		t.Errorf("cmdline %q has the secret", cmdline)
	}
	if !strings.Contains(string(cmdline), "--port=8081") {
		t.Errorf("cmdline %q lacks the plain parameter", cmdline)
	}
	environ, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if !slices.Contains(strings.Split(string(environ), "\x00"), "DROVER_PARAM_TOKEN="+secret) {
		t.Errorf("environment lacks DROVER_PARAM_TOKEN")
	}
	f := filepath.Join(s.Dir("s.web"), "etc", "params", "token")
	fi, err := os.Stat(f)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s mode %v, want 0600", f, fi.Mode().Perm())
	}
	if b, _ := os.ReadFile(f); string(b) != secret {
		t.Errorf("%s = %q, want the value", f, b)
	}
	if _, err := os.Stat(filepath.Join(s.Dir("s.web"), "etc", "params", "port")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a plain parameter has a file: %v", err)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// ppid returns the parent of pid, or 0.
func ppid(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 2 {
		return 0
	}
	n, _ := strconv.Atoi(f[1])
	return n
}

func mustStart(t *testing.T, pid int) uint64 {
	t.Helper()
	ticks, ok := procStart(pid)
	if !ok {
		t.Fatalf("pid %d: no start time", pid)
	}
	return ticks
}

// TestDaemonHealth: the health command of a daemonizing service runs
// while the daemon runs, and a daemon that stays unhealthy is stopped
// and restarted like a child would be.
func TestDaemonHealth(t *testing.T) {
	s, loc := newSup(t)
	s.cfg.HealthInterval = 100 * time.Millisecond
	writeScript(t, loc, "daemon", daemonStart)
	writeScript(t, loc, "health", "#!/bin/sh\n[ ! -e data/sick ] && kill -0 \"$(cat run/start.pid)\"\n")
	sp := Spec{Coordinate: "h.web", Service: "web", Location: loc, Start: "bin/daemon", Health: "bin/health", Restart: RestartOnFailure}
	if err := s.Start(context.Background(), sp); err != nil {
		t.Fatal(err)
	}
	dir := s.Dir("h.web")
	poll(t, "healthy", func() bool { return state(s, "h.web").Health == api.ServiceHealthy })
	pid := state(s, "h.web").PID
	if err := os.WriteFile(filepath.Join(dir, "data", "sick"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	poll(t, "restarted for its health", func() bool {
		st := state(s, "h.web")
		return st.Restarts == 1 && st.PID != pid && strings.Contains(st.LastError, "failed health checks")
	})
	if !gone(pid) {
		t.Errorf("the unhealthy daemon %d still runs", pid)
	}
	if err := os.Remove(filepath.Join(dir, "data", "sick")); err != nil {
		t.Fatal(err)
	}
	poll(t, "healthy again", func() bool { return state(s, "h.web").Health == api.ServiceHealthy })
}

// TestRestartWaitsForPorts: a restart by policy is held to the ports as
// a start is: a restarted process whose port stays closed is stopped,
// the last error names the port, and the policy tries again.
func TestRestartWaitsForPorts(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	s, loc := newSup(t)
	// With data/noport, the service runs but never listens.
	writeScript(t, loc, "listen", "#!/bin/sh\nif [ -e data/noport ]; then trap 'exit 0' TERM; while :; do sleep 0.05; done; fi\nexec "+strconv.Quote(exe)+"\n")
	sp := Spec{Coordinate: "r.tcp", Service: "tcp", Location: loc, Start: "bin/listen", Restart: RestartAlways,
		Params: map[string]string{"listen": strconv.Itoa(port), "delay": "0s"}, Ports: []int{port}, Startup: time.Second}
	if err := s.Start(context.Background(), sp); err != nil {
		t.Fatal(err)
	}
	pid := state(s, "r.tcp").PID
	if err := os.WriteFile(filepath.Join(s.Dir("r.tcp"), "data", "noport"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("port %d did not accept connections on loopback within 1s", port)
	poll(t, "the silent restart stopped and tried again", func() bool {
		st := state(s, "r.tcp")
		return st.Restarts >= 2 && strings.Contains(st.LastError, want)
	})
}

// TestFailedDaemonizingStartLeavesNothing: a start that launches its
// service, writes its pid and then fails takes the service down with it.
func TestFailedDaemonizingStartLeavesNothing(t *testing.T) {
	s, loc := newSup(t)
	writeScript(t, loc, "start", "#!/bin/sh\n( while :; do sleep 0.05; done ) &\necho $! > run/start.pid\necho $! > data/daemon.pid\necho cannot configure >&2\nexit 3\n")
	err := s.Start(context.Background(), Spec{Coordinate: "f.d", Service: "d", Location: loc, Start: "bin/start", Restart: RestartAlways})
	if !errors.Is(err, ErrStart) || !strings.Contains(err.Error(), "exited 3") || !strings.Contains(err.Error(), "cannot configure") {
		t.Fatalf("Start() = %v, want ErrStart with the exit status and the console", err)
	}
	pid := readPID(filepath.Join(s.Dir("f.d"), "data", "daemon.pid"))
	if pid == 0 {
		t.Fatal("the start wrote no data/daemon.pid")
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	poll(t, "the daemon of the failed start killed", func() bool { return gone(pid) })
}
