package proc

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// script writes an executable shell script to dir and returns its path.
func script(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRunExit(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name     string
		cmd      Cmd
		want     Result
		wantOut  string
		exitErr  bool // an *exec.ExitError
		notExist bool // the program is missing
	}{
		{name: "exit 0", cmd: Cmd{Path: script(t, dir, "ok", "echo hi\n")}, want: Result{Code: 0}, wantOut: "hi\n"},
		{name: "exit 3", cmd: Cmd{Path: script(t, dir, "three", "echo bad >&2\nexit 3\n")}, want: Result{Code: 3}, wantOut: "bad\n", exitErr: true},
		{name: "killed by a signal", cmd: Cmd{Path: script(t, dir, "sig", "kill -9 $$\n")}, want: Result{Code: -1}, exitErr: true},
		{name: "missing program", cmd: Cmd{Path: filepath.Join(dir, "nope")}, want: Result{Code: -1}, notExist: true},
		{
			name:    "args, dir, env and stdin",
			cmd:     Cmd{Path: script(t, dir, "all", "echo \"$1 $(pwd) $X\"\ncat\n"), Args: []string{"a1"}, Dir: dir, Env: []string{"X=y"}, Stdin: []byte("in\n")},
			want:    Result{Code: 0},
			wantOut: "a1 " + dir + " y\nin\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			tt.cmd.Stdout, tt.cmd.Stderr = &out, &out
			got, err := Run(t.Context(), tt.cmd)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Run(%s) result (-want +got):\n%s", tt.name, diff)
			}
			var ee *exec.ExitError
			if errors.As(err, &ee) != tt.exitErr {
				t.Errorf("Run(%s) = %v, want an *exec.ExitError: %v", tt.name, err, tt.exitErr)
			}
			if errors.Is(err, fs.ErrNotExist) != tt.notExist {
				t.Errorf("Run(%s) = %v, want not-exist: %v", tt.name, err, tt.notExist)
			}
			if got.Code == 0 && !tt.notExist && err != nil {
				t.Errorf("Run(%s) = %v, want nil", tt.name, err)
			}
			if out.String() != tt.wantOut {
				t.Errorf("Run(%s) output = %q, want %q", tt.name, out.String(), tt.wantOut)
			}
		})
	}
}

// gone reports whether pid is dead: no such process, or a zombie nobody
// reaped yet.
func gone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] == 'Z'
}

// waitGone polls until pid is dead, or fails the test.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !gone(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("pid %d still runs", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// readPID waits for a pid file and returns the pid in it.
func readPID(t *testing.T, path string) int {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, err := os.ReadFile(path)
		if s := strings.TrimSpace(string(b)); err == nil && strings.HasSuffix(string(b), "\n") {
			pid, err := strconv.Atoi(s)
			if err != nil {
				t.Fatalf("pid file %s: %q", path, b)
			}
			t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
			return pid
		}
		if time.Now().After(deadline) {
			t.Fatalf("no pid file %s", path)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A grandchild that keeps the output open dies with the group at the
// timeout, and Run does not wait for its 30 seconds, whether the output
// is a file or a pipe.
func TestRunTimeoutKillsGroup(t *testing.T) {
	for _, toFile := range []bool{true, false} {
		name := map[bool]string{true: "file", false: "pipe"}[toFile]
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			pidFile := filepath.Join(dir, "pid")
			c := Cmd{
				Path:    script(t, dir, "hang", "echo started\nsleep 30 &\necho $! > "+pidFile+"\nwait\n"),
				Timeout: 300 * time.Millisecond,
			}
			var buf bytes.Buffer
			outPath := filepath.Join(dir, "out.log")
			if toFile {
				f, err := os.Create(outPath)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				c.Stdout, c.Stderr = f, f
			} else {
				c.Stdout, c.Stderr = &buf, &buf
			}
			start := time.Now()
			got, err := Run(t.Context(), c)
			if took := time.Since(start); took > 10*time.Second {
				t.Errorf("Run took %v, want about the timeout", took)
			}
			if diff := cmp.Diff(Result{Code: -1, TimedOut: true}, got); diff != "" {
				t.Errorf("Run result (-want +got):\n%s", diff)
			}
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				t.Errorf("Run = %v, want an *exec.ExitError", err)
			}
			waitGone(t, readPID(t, pidFile))
			out := buf.String()
			if toFile {
				out = Tail(outPath, 100)
			}
			if out != "started\n" {
				t.Errorf("output = %q, want %q", out, "started\n")
			}
		})
	}
}

// A cancel kills the group too, and is no timeout.
func TestRunCancel(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pid")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	type ran struct {
		res Result
		err error
	}
	done := make(chan ran, 1)
	go func() {
		res, err := Run(ctx, Cmd{Path: script(t, dir, "hang", "sleep 30 &\necho $! > "+pidFile+"\nwait\n"), Timeout: time.Minute})
		done <- ran{res, err}
	}()
	pid := readPID(t, pidFile)
	cancel()
	var r ran
	select {
	case r = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if diff := cmp.Diff(Result{Code: -1}, r.res); diff != "" {
		t.Errorf("Run result (-want +got):\n%s", diff)
	}
	if r.err == nil {
		t.Error("Run = nil, want an error")
	}
	waitGone(t, pid)
}

// KillGroup kills what the program left running; without it, a program
// may leave a daemon behind (install scripts do).
func TestRunKillGroup(t *testing.T) {
	for _, kill := range []bool{true, false} {
		t.Run("KillGroup="+strconv.FormatBool(kill), func(t *testing.T) {
			dir := t.TempDir()
			pidFile := filepath.Join(dir, "pid")
			f, err := os.Create(filepath.Join(dir, "out.log"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			got, err := Run(t.Context(), Cmd{
				Path:   script(t, dir, "daemon", "sleep 30 &\necho $! > "+pidFile+"\n"),
				Stdout: f, Stderr: f, KillGroup: kill,
			})
			if err != nil || got.Code != 0 {
				t.Fatalf("Run = %+v, %v, want code 0, nil", got, err)
			}
			pid := readPID(t, pidFile)
			if kill {
				waitGone(t, pid)
			} else if gone(pid) {
				t.Errorf("pid %d was killed, want it left running", pid)
			}
		})
	}
}

// A start that meets ETXTBSY is retried; one that keeps meeting it fails
// with it.
func TestRunTextBusy(t *testing.T) {
	tests := []struct {
		name     string
		freeAt   int // the pause (try number) that closes the writer; -1 never
		wantErr  error
		wantCode int
	}{
		{name: "busy once", freeAt: 0, wantCode: 0},
		{name: "busy three times", freeAt: 2, wantCode: 0},
		{name: "busy for good", freeAt: -1, wantErr: syscall.ETXTBSY, wantCode: -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			p := script(t, dir, "busy", "exit 0\n")
			w, err := os.OpenFile(p, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			pauses := 0
			got, err := run(t.Context(), Cmd{Path: p}, func(try int) {
				pauses++
				if try == tt.freeAt {
					w.Close()
				}
			})
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Errorf("run(%s) = %v, want %v", tt.name, err, tt.wantErr)
			}
			if got.Code != tt.wantCode {
				t.Errorf("run(%s) code = %d, want %d", tt.name, got.Code, tt.wantCode)
			}
			wantPauses := tt.freeAt + 1
			if tt.freeAt < 0 {
				wantPauses = startTries - 1
			}
			if pauses != wantPauses {
				t.Errorf("run(%s) paused %d times, want %d", tt.name, pauses, wantPauses)
			}
		})
	}
}

func TestTail(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	large := strings.Repeat("x", 10000) + "the end\n"
	tests := []struct {
		name string
		path string
		n    int64
		want string
	}{
		{"small file whole", write("small", "one\ntwo\n"), 100, "one\ntwo\n"},
		{"exactly n", write("exact", "abcd"), 4, "abcd"},
		{"large file tail", write("large", large), 8, "the end\n"},
		{"empty file", write("empty", ""), 10, ""},
		{"n zero", write("zero", "abc"), 0, ""},
		{"n negative", write("neg", "abc"), -1, ""},
		{"missing file", filepath.Join(dir, "missing"), 10, ""},
		{"directory", dir, 10, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Tail(tt.path, tt.n); got != tt.want {
				t.Errorf("Tail(%s, %d) = %q, want %q", tt.path, tt.n, got, tt.want)
			}
		})
	}
}
