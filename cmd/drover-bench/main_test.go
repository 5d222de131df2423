package main

import (
	"bytes"
	"context"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// asMain, set in the environment, makes the test binary run as
// drover-bench: the fleet test's agent processes are this binary.
const asMain = "DROVER_BENCH_TEST_AS_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(asMain) == "1" {
		os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

func TestRunUsage(t *testing.T) {
	tests := []struct {
		args     []string
		code     int
		inStderr string
	}{
		{nil, 2, "want a benchmark"},
		{[]string{"nope"}, 2, `unknown benchmark "nope"`},
		{[]string{"fleet", "-n", "0"}, 2, "fleet size"},
		{[]string{"fleet", "-bogus"}, 2, "flag provided but not defined"},
		{[]string{"fleet", "extra"}, 2, `unexpected argument "extra"`},
		{[]string{"fleet", "-agent-procs", "-1"}, 2, "-agent-procs"},
		{[]string{"fleet-agents", "-from", "3", "-to", "3"}, 2, "-from < -to"},
		{[]string{"install", "-size", "lots"}, 2, `size "lots"`},
		{[]string{"install", "-files", "0"}, 2, "at least 1"},
		{[]string{"plan", "-n", "0"}, 2, "at least 1"},
		{[]string{"help"}, 0, ""},
		{[]string{"install", "-h"}, 0, ""},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(context.Background(), tt.args, &out, &errb)
			if code != tt.code {
				t.Errorf("run(%q) = %d, want %d; stderr: %s", tt.args, code, tt.code, errb.String())
			}
			if tt.inStderr != "" && !strings.Contains(errb.String(), tt.inStderr) {
				t.Errorf("run(%q) stderr = %q, want it to contain %q", tt.args, errb.String(), tt.inStderr)
			}
			if lines := strings.Count(errb.String(), "\n"); lines > 1 {
				t.Errorf("run(%q) wrote %d lines on stderr, want one at most", tt.args, lines)
			}
			if tt.code == 0 && !strings.Contains(out.String(), "usage:") {
				t.Errorf("run(%q) stdout = %q, want the usage", tt.args, out.String())
			}
		})
	}
}

// TestFleetAgentProcs runs a small fleet whose real agents live in two
// child processes, as a fleet larger than one process's open-file limit
// does, against a real drover server.
func TestFleetAgentProcs(t *testing.T) {
	t.Setenv(asMain, "1")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	// The agents' local sockets live under this folder, and a socket's
	// path must stay under 108 bytes: t.TempDir's, named after the test,
	// is too long.
	dir, err := os.MkdirTemp("", "dbf-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	var out, errb bytes.Buffer
	code := run(ctx, []string{"fleet", "-n", "9", "-agent-procs", "2", "-dir", dir, "-timeout", "2m"}, &out, &errb)
	if code != 0 {
		t.Fatalf("fleet exited %d; stderr: %s; stdout: %s", code, errb.String(), out.String())
	}
	got := out.String()
	if !strings.Contains(got, "N=9 ") || !strings.Contains(got, "agents-in-2-processes") || strings.Contains(got, "FAILED") {
		t.Fatalf("fleet output does not show 9 agents converged in 2 processes:\n%s", got)
	}
	// Every agent reported applying the new state, so the time is real,
	// and the agents' memory is read from their own processes.
	m := regexp.MustCompile(`agents-applied=([0-9.]+)s`).FindStringSubmatch(got)
	if m == nil {
		t.Fatalf("no agents-applied figure in:\n%s", got)
	}
	if secs, _ := strconv.ParseFloat(m[1], 64); secs <= 0 {
		t.Errorf("agents-applied=%ss, want the time the agents took", m[1])
	}
	rss := regexp.MustCompile(`agents-peak-rss=(\d+)MB`).FindStringSubmatch(got)
	if rss == nil || rss[1] == "0" {
		t.Errorf("agents-peak-rss missing or zero in:\n%s", got)
	}
}
