package main

import (
	"bufio"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestAgentOutlivesServer stops the server under a running agent, starts
// it again, and checks the agent reconnects on its own and hears of the
// next desired state without being restarted.
func TestAgentOutlivesServer(t *testing.T) {
	f := newFleet(t)
	files := buildFleetPackages(t, f)
	f.op(append([]string{"pkg", "push"}, files...)...)
	a := f.newAgent("epsilon")
	a.start()
	f.waitFor("epsilon", "reported", func(d deviceJSON) bool { return len(d.SystemTags) > 0 })
	f.op("state", "set", "-f", writeState(t, f, "epsilon", "id: epsilon\napps:\n  - name: com.example:conf\n"))
	f.waitConverged("epsilon", "com.example:conf=1.0.0")

	f.restartServer()
	f.op("state", "set", "-f", writeState(t, f, "epsilon", "id: epsilon\napps:\n  - name: com.example:conf\n  - name: com.example:lib\n"))
	f.waitConverged("epsilon", "com.example:conf=1.0.0", "com.example:lib=1.0.0")
	if a.cmd.ProcessState != nil {
		t.Errorf("the agent exited while the server was away: %v", a.cmd.ProcessState)
	}
}

// TestDev runs `drover dev` as the README says a first-time user does, and
// checks it converges, says what to try next, and stops cleanly.
func TestDev(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev")
	cmd := exec.Command(droverBin, "dev", "--dir", dir, "--listen", "127.0.0.1:0")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var out strings.Builder
	deadline := time.After(60 * time.Second)
wait:
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("drover dev ended early:\n%s\nstderr: %s", out.String(), stderr.String())
			}
			out.WriteString(l + "\n")
			if strings.Contains(l, "Press Ctrl-C") {
				break wait
			}
		case <-deadline:
			t.Fatalf("drover dev did not converge within 60s:\n%s\nstderr: %s", out.String(), stderr.String())
		}
	}
	for _, want := range []string{"dev-1 converged", "export DROVER_ADDR=https://127.0.0.1:", "device ls", "state set -f", "plan -f " + dir + "/group.yaml"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("drover dev output lacks %q:\n%s", want, out.String())
		}
	}
	// The fleet commands it suggests work as printed.
	var env []string
	for _, l := range strings.Split(out.String(), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "export "); ok {
			env = append(env, v)
		}
	}
	group := filepath.Join(dir, "group.yaml")
	if r := runBin(t, env, "", "state", "rm", "dev-1"); r.code != 0 {
		t.Errorf("state rm dev-1: exit %d %s", r.code, r.stderr)
	}
	if r := runBin(t, env, "", "plan", "-f", group); r.code != 0 || !strings.Contains(r.stdout, "upgrade     com.example:hello 1.0.0 -> 1.1.0") || !strings.Contains(r.stdout, "1 devices change, 0 unchanged, 0 errors") {
		t.Errorf("plan -f group.yaml: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := runBin(t, env, "", "state", "set", "-f", group); r.code != 0 || !strings.Contains(r.stdout, "group dev set (2 apps") {
		t.Errorf("state set -f group.yaml: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	hello := filepath.Join(dir, "agent", "software", "com", "example", "hello", "current", "bin", "hello")
	if got, err := exec.Command(hello).Output(); err != nil || !strings.Contains(string(got), "hello from drover, version 1.0.0") {
		t.Errorf("the installed sample says %q (%v)", got, err)
	}
	if got := readFile(t, filepath.Join(dir, "root", "etc", "motd")); !strings.Contains(got, "kept by drover") {
		t.Errorf("root-mode sample etc/motd = %q", got)
	}
	_ = cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil {
		t.Errorf("drover dev exited with %v after Ctrl-C; stderr: %s", err, stderr.String())
	}
}
