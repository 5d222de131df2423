package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
)

// toolSource has a required, bounded parameter (asked for at a
// terminal), a template and a service.
const toolYAML = `group: com.example
name: tool
version: 1.0.0
params:
  workers: {type: int, required: true, min: 1, max: 8, description: "worker count"}
templates:
  - {src: templates/tool.conf.tmpl, dest: etc/tool.conf}
services:
  - {name: svc, start: bin/svc, restart: never}
`

func TestStandaloneInstallPrompt(t *testing.T) {
	dir := t.TempDir()
	src := writeSource(t, filepath.Join(dir, "src"), pkgSource{yaml: toolYAML, files: map[string]string{
		"templates/tool.conf.tmpl": "workers={{.Params.workers}}\n",
		"files/bin/svc":            "#!/bin/sh\necho \"$DROVER_PARAM_WORKERS\" > data/workers\ntrap 'exit 0' TERM\nwhile :; do sleep 0.1; done\n",
	}})
	repo := filepath.Join(dir, "repo")
	if err := os.MkdirAll(repo, 0o755); err != nil {
		t.Fatal(err)
	}
	if r := runBin(t, nil, "", "pkg", "build", src, "-o", filepath.Join(repo, "tool-1.0.0.drover")); r.code != 0 {
		t.Fatalf("pkg build: %s", r.stderr)
	}
	home, software, runtime := filepath.Join(dir, "home"), filepath.Join(dir, "software"), filepath.Join(dir, "runtime")
	killServices(t, runtime)
	folders := []string{"--home", home, "--software-root", software, "--runtime-root", runtime}

	// No terminal: a missing required value is an error naming it.
	r := runBin(t, nil, "", append([]string{"install", "com.example:tool", "--repo", repo}, folders...)...)
	if r.code != 1 || !strings.Contains(r.stderr, "parameter workers") || !strings.Contains(r.stderr, "worker count") {
		t.Fatalf("install without a terminal: exit %d, stderr %q", r.code, r.stderr)
	}
	// An undeclared or out-of-bounds value on the command line.
	r = runBin(t, nil, "", append([]string{"install", "com.example:tool:1.0.0", "--repo", repo, "--param", "workers=2", "--param", "colour=red"}, folders...)...)
	if r.code != 1 || !strings.Contains(r.stderr, "parameter colour") {
		t.Fatalf("install with an undeclared value: exit %d, stderr %q", r.code, r.stderr)
	}

	// At a terminal it is asked for, and asked again after a bad answer.
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	defer ptmx.Close()
	cmd := exec.Command(droverBin, append([]string{"install", "com.example:tool", "--repo", repo}, folders...)...)
	var stdout bytes.Buffer
	cmd.Stdin, cmd.Stderr, cmd.Stdout = tty, tty, &stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tty.Close()
	var mu sync.Mutex
	var screen bytes.Buffer
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := ptmx.Read(buf)
			mu.Lock()
			screen.Write(buf[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	waitScreen := func(want string, count int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			s := screen.String()
			mu.Unlock()
			if strings.Count(s, want) >= count {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("terminal never showed %q (x%d); it shows:\n%s", want, count, s)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitScreen("workers (int, 1..8: worker count): ", 1)
	ptmx.Write([]byte("99\n"))
	waitScreen("99 is above max 8; try again", 1)
	waitScreen("workers (int, 1..8: worker count): ", 2)
	ptmx.Write([]byte("3\n"))
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			mu.Lock()
			t.Fatalf("install at a terminal: %v\n%s", err, screen.String())
		}
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("install at a terminal did not finish")
	}
	if !strings.Contains(stdout.String(), "installed com.example:tool:1.0.0") || !strings.Contains(stdout.String(), "service tool.svc started") {
		t.Errorf("install output: %q", stdout.String())
	}
	if got := readFile(t, filepath.Join(software, "com", "example", "tool", "1.0.0", "etc", "tool.conf")); got != "workers=3\n" {
		t.Errorf("tool.conf = %q", got)
	}
	// The service runs detached, from its runtime directory.
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(filepath.Join(runtime, "tool.svc", "data", "workers"))
		if strings.TrimSpace(string(b)) == "3" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("service never wrote data/workers")
		}
		time.Sleep(20 * time.Millisecond)
	}
	pid := pidIn(t, runtime, "tool.svc")
	if pid == 0 || syscall.Kill(pid, 0) != nil {
		t.Fatalf("service pid %d not running", pid)
	}
	if ls := runBin(t, nil, "", append([]string{"ls"}, folders...)...); ls.code != 0 || !strings.Contains(ls.stdout, "com.example:tool") || !strings.Contains(ls.stdout, "1.0.0") {
		t.Errorf("ls: exit %d\n%s%s", ls.code, ls.stdout, ls.stderr)
	}

	// Remove stops the service and keeps data/.
	if r := runBin(t, nil, "", append([]string{"remove", "com.example:tool"}, folders...)...); r.code != 0 {
		t.Fatalf("remove: exit %d: %s", r.code, r.stderr)
	}
	deadline = time.Now().Add(10 * time.Second)
	for !gone(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("service pid %d still running after remove", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	ents, _ := os.ReadDir(filepath.Join(runtime, "tool.svc"))
	if len(ents) != 1 || ents[0].Name() != "data" {
		t.Errorf("runtime dir after remove holds %v, want data/ only", ents)
	}
	if _, err := os.Stat(filepath.Join(software, "com", "example", "tool")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("software after remove: %v", err)
	}
	if ls := runBin(t, nil, "", append([]string{"ls", "-o", "json"}, folders...)...); strings.TrimSpace(ls.stdout) != "[]" {
		t.Errorf("ls after remove = %q, want []", ls.stdout)
	}
}

// gone reports whether pid has exited (a zombie counts as gone).
func gone(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return true
	}
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	return bytes.Contains(b, []byte(") Z"))
}
