package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAgentStartChecks: an agent stops at start, with one clear line,
// when its certificate is not a device's or a folder it needs is not a
// usable folder; it never retries such a start.
func TestAgentStartChecks(t *testing.T) {
	f := newFleet(t)
	aFile := filepath.Join(f.dir, "a-file")
	if err := os.WriteFile(aFile, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	dev := f.newAgent("chk1")
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"admin certificate", []string{"--client-cert", filepath.Join(f.pki, "ops.crt"), "--client-key", filepath.Join(f.pki, "ops.key")},
			`is a certificate of role admin ("ops"): the agent needs a device certificate`},
		{"root is a file", []string{"--root", aFile}, "--root " + aFile + ": not a folder"},
		{"software root under a file", []string{"--software-root", filepath.Join(aFile, "sw")}, "--software-root " + filepath.Join(aFile, "sw") + ": not a directory"},
		{"runtime root is a file", []string{"--runtime-root", aFile}, "--runtime-root " + aFile + ": not a folder"},
		{"home is a file", []string{"--home", aFile}, aFile},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// Later flags win: the bad one comes after the agent's own.
			r := runBin(t, nil, "", append(append([]string{}, dev.args...), tt.args...)...)
			oneLine(t, tt.name, r, 1, tt.want)
			if strings.Contains(r.stderr, "retrying") {
				t.Errorf("%s: the agent retried: %s", tt.name, r.stderr)
			}
		})
	}
}
