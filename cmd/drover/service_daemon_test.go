package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/api"
)

// daemonSecret is the value of the secret parameter of daemonSource.
const daemonSecret = "s3cret-token-9f2b7c"

// daemonSource is a copkg-style package: its start backgrounds the
// service (a sleep loop), writes the service's pid to run/start.pid and
// exits 0. It takes a secret parameter, and its postinst fails while
// echoing it when fail is set.
func daemonSource(version string, fail bool) pkgSource {
	p := pkgSource{
		yaml: `group: com.example
name: daemon
version: ` + version + `
params:
  port: {type: int, default: 8080}
  token: {type: string, required: true, secret: true}
templates:
  - {src: templates/client.conf.tmpl, dest: etc/client.conf}
services:
  - {name: d, start: bin/start, restart: always}
`,
		files: map[string]string{
			"templates/client.conf.tmpl": "token={{.Params.token}}\n",
			"files/bin/start": `#!/bin/sh
echo "start $* token-file=$(cat etc/params/token)" > data/start-args
( trap 'exit 0' TERM; while :; do echo "daemon alive"; sleep 0.2; done ) &
echo $! > run/start.pid
exit 0
`,
		},
	}
	if fail {
		p.scripts = map[string]string{"postinst": `echo "postinst sees token $DROVER_PARAM_TOKEN"; exit 3`}
	}
	return p
}

// TestServiceDaemonizingStart runs a copkg service whose start exits 0
// leaving its daemon: the agent supervises the daemon through a kill -9
// (restart by policy, with events and the last error), an agent restart
// (adoption), and the service verbs. Its secret parameter appears on no
// command line, in no event and in no log.
func TestServiceDaemonizingStart(t *testing.T) {
	f := newFleet(t)
	var files []string
	for _, v := range []struct {
		version string
		fail    bool
	}{{"1.0.0", false}, {"1.0.1", true}} {
		dir := writeSource(t, filepath.Join(f.dir, "daemon-"+v.version), daemonSource(v.version, v.fail))
		out := filepath.Join(f.dir, "daemon-"+v.version+".drover")
		f.mustOK(nil, "pkg", "build", dir, "-o", out)
		files = append(files, out)
	}
	f.op(append([]string{"pkg", "push"}, files...)...)

	a := f.newAgent("n1")
	runtime := filepath.Join(f.dir, "agents", "n1", "runtime")
	const coord = "daemon.d"
	t.Cleanup(func() {
		if pid := pidIn(t, runtime, coord); pid > 1 {
			if pgid, err := syscall.Getpgid(pid); err == nil && pgid > 1 {
				_ = syscall.Kill(-pgid, syscall.SIGKILL)
			}
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	a.start()
	f.waitFor("n1", "reported", func(d deviceJSON) bool { return d.ID == "n1" })
	state := func(version string) string {
		return writeState(t, f, "n1", fmt.Sprintf("id: n1\napps:\n  - {name: com.example:daemon, version: %s, params: {port: 8181, token: %s}}\n", version, daemonSecret))
	}
	f.op("state", "set", "-f", state("1.0.0"))
	// handedOver: the agent watches the daemon run/start.pid names, not
	// the start command (its child, named while the start runs).
	handedOver := func(old int) func(svcView) bool {
		return func(v svcView) bool {
			s := svcOf(v, coord)
			return v.Status.Converged && s.State == api.ServiceRunning && s.PID != 0 && s.PID != old &&
				s.PID == pidIn(t, runtime, coord) && parentOf(s.PID) != a.cmd.Process.Pid
		}
	}
	v := f.waitServices("n1", "the daemon running", handedOver(0))
	pid := svcOf(v, coord).PID
	if gone(pid) {
		t.Fatalf("daemon %d is not running", pid)
	}

	// The secret is in no command line: not the daemon's (which is the
	// start command's), not in the flags the start got.
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(cmdline), daemonSecret) || strings.Contains(string(cmdline), "--token") {
		t.Errorf("the daemon's command line %q has the secret", strings.ReplaceAll(string(cmdline), "\x00", " "))
	}
	args := readFile(t, filepath.Join(runtime, coord, "data", "start-args"))
	if !strings.Contains(args, "--port=8181") || strings.Contains(args, "--token") || !strings.Contains(args, "token-file="+daemonSecret) {
		t.Errorf("start got %q: want --port, no --token, and the secret in etc/params/token", args)
	}
	if fi, err := os.Stat(filepath.Join(runtime, coord, "etc", "params", "token")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("etc/params/token: %v, %v; want mode 0600", fi, err)
	}
	// A template that renders the secret is private.
	conf := filepath.Join(a.software, "com", "example", "daemon", "1.0.0", "etc", "client.conf")
	if fi, err := os.Stat(conf); err != nil || fi.Mode().Perm() != 0o600 || readFile(t, conf) != "token="+daemonSecret+"\n" {
		t.Errorf("rendered %s: %v, %v; want the secret, mode 0600", conf, fi, err)
	}

	// kill -9 of the daemon: restarted by policy, an event for each, and
	// the last error shown.
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			t.Logf("events:\n%s\nagent log:\n%s", f.op("events", "--device", "n1"), a.logs.String())
		}
	}()
	v = f.waitServices("n1", "the daemon restarted after kill -9", func(v svcView) bool {
		return handedOver(pid)(v) && svcOf(v, coord).Restarts >= 1
	})
	if le := svcOf(v, coord).LastError; !strings.Contains(le, "exited") {
		t.Errorf("last_error = %q, want how the daemon ended", le)
	}
	waitEvents := func(kinds ...string) string {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			out := f.op("events", "--device", "n1")
			ok := true
			for _, k := range kinds {
				ok = ok && strings.Contains(out, k)
			}
			if ok {
				return out
			}
			if time.Now().After(deadline) {
				t.Fatalf("events lack %v:\n%s", kinds, out)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitEvents(api.KindServiceExited, api.KindServiceRestarted)
	if ls := f.mustOK(nil, "service", "ls", "--home", a.home); !strings.Contains(ls, "LAST ERROR") || !strings.Contains(ls, "exited") {
		t.Errorf("service ls shows no last error:\n%s", ls)
	}

	// An agent restart: the running daemon is adopted, not started again.
	pid = svcOf(v, coord).PID
	a.kill()
	firstLog := a.logs.String()
	a.start()
	// The new agent's own view (the server may still hold the old one).
	deadline := time.Now().Add(15 * time.Second)
	for {
		r := runBin(t, nil, "", "service", "ls", "--home", a.home, "-o", "json")
		var sts []api.ServiceState
		if r.code == 0 && json.Unmarshal([]byte(r.stdout), &sts) == nil && len(sts) == 1 &&
			sts[0].State == api.ServiceRunning && sts[0].PID == pid {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the agent restart, service ls: %s%s; want pid %d adopted", r.stdout, r.stderr, pid)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !gone(pid) && pidIn(t, runtime, coord) != pid {
		t.Errorf("run/start.pid names %d, want the adopted %d", pidIn(t, runtime, coord), pid)
	}

	// The verbs act on the adopted daemon.
	f.mustOK(nil, "service", "kill", coord, "--home", a.home)
	v = f.waitServices("n1", "restarted after service kill", handedOver(pid))
	pid = svcOf(v, coord).PID
	f.mustOK(nil, "service", "stop", coord, "--home", a.home)
	if !gone(pid) {
		t.Errorf("daemon %d runs after service stop", pid)
	}
	f.waitServices("n1", "stopped", func(v svcView) bool { return svcOf(v, coord).State == api.ServiceStopped })
	f.mustOK(nil, "service", "start", coord, "--home", a.home)
	f.waitServices("n1", "started again", handedOver(pid))

	// Nor does the node show them.
	if out := f.mustOK(nil, "config", "params", "--home", a.home); strings.Contains(out, daemonSecret) || !strings.Contains(out, "***") {
		t.Errorf("drover config params shows the secret:\n%s", out)
	}

	// Secret values are set, never read back.
	if out := f.op("param", "set", "com.example:daemon", "token="+daemonSecret, "port=8181", "-o", "json"); strings.Contains(out, daemonSecret) || !strings.Contains(out, "***") {
		t.Errorf("param set prints the secret:\n%s", out)
	}
	if out := f.op("param", "get", "com.example:daemon"); strings.Contains(out, daemonSecret) || !strings.Contains(out, "token: '***'") || !strings.Contains(out, `port: "8181"`) {
		t.Errorf("param get:\n%s\nwant the secret masked and the rest shown", out)
	}

	// A failing step whose script prints the secret: masked in its event.
	f.op("state", "set", "-f", state("1.0.1"))
	failed := waitEvents(api.KindStepFailed, "postinst sees token")
	all := failed + f.op("events", "--device", "n1", "-o", "json") + firstLog + a.logs.String()
	if strings.Contains(all, daemonSecret) {
		t.Errorf("the secret is in the events or the agent log")
	}
	if !strings.Contains(failed, "postinst sees token ***") {
		t.Errorf("step-failed output not masked as ***:\n%s", failed)
	}
}

// TestStandaloneDaemonizingStart: `drover install` with no agent accepts
// a start that exits 0 leaving its daemon, and `drover remove` stops the
// daemon through run/start.pid.
func TestStandaloneDaemonizingStart(t *testing.T) {
	dir := t.TempDir()
	src := writeSource(t, filepath.Join(dir, "src"), daemonSource("1.0.0", false))
	file := filepath.Join(dir, "daemon.drover")
	if r := runBin(t, nil, "", "pkg", "build", src, "-o", file); r.code != 0 {
		t.Fatalf("pkg build: %s", r.stderr)
	}
	runtime := filepath.Join(dir, "runtime")
	folders := []string{"--home", filepath.Join(dir, "home"), "--software-root", filepath.Join(dir, "software"), "--runtime-root", runtime}
	r := runBin(t, nil, "", append([]string{"install", file, "--param", "token=" + daemonSecret}, folders...)...)
	if r.code != 0 || !strings.Contains(r.stdout, "service daemon.d started") {
		t.Fatalf("install: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	pid := pidIn(t, runtime, "daemon.d")
	t.Cleanup(func() {
		if pid > 1 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	if pid <= 1 || gone(pid) {
		t.Fatalf("daemon pid %d from run/start.pid is not running", pid)
	}
	if r := runBin(t, nil, "", append([]string{"remove", "com.example:daemon"}, folders...)...); r.code != 0 {
		t.Fatalf("remove: exit %d: %s", r.code, r.stderr)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !gone(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("daemon %d still running after remove", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// parentOf returns the parent of pid, or 0.
func parentOf(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if i < 0 || len(f) < 2 {
		return 0
	}
	n, _ := strconv.Atoi(f[1])
	return n
}
