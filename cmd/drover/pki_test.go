package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPKICommands(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string // exact stdout; "" = nothing
		wantErr  string // in stderr
		wantFile string // must exist afterwards
	}{
		{"no verb", []string{"pki"}, exitUsage, "", "a verb is needed", ""},
		{"init without dir", []string{"pki", "init"}, exitUsage, "", "--dir is required", ""},
		{"init extra arg", []string{"pki", "init", "--dir", dir, "x"}, exitUsage, "", "unknown command", ""},
		{"init", []string{"pki", "init", "--dir", dir}, exitOK,
			"wrote " + filepath.Join(dir, "ca.crt") + "\nwrote " + filepath.Join(dir, "ca.key") + "\n", "", "ca.key"},
		{"init again", []string{"pki", "init", "--dir", dir}, exitFailure, "", "ca.key: already exists", ""},
		{"server", []string{"pki", "issue", "--dir", dir, "--server", "srv", "--host", "a.example,10.1.1.1"}, exitOK,
			"wrote " + filepath.Join(dir, "srv.crt") + "\nwrote " + filepath.Join(dir, "srv.key") + "\n", "", "srv.key"},
		{"device", []string{"pki", "issue", "--dir", dir, "--device", "dev-1"}, exitOK,
			"wrote " + filepath.Join(dir, "dev-1.crt") + "\nwrote " + filepath.Join(dir, "dev-1.key") + "\n", "", "dev-1.crt"},
		{"admin", []string{"pki", "issue", "--dir", dir, "--admin", "alice"}, exitOK,
			"wrote " + filepath.Join(dir, "alice.crt") + "\nwrote " + filepath.Join(dir, "alice.key") + "\n", "", "alice.crt"},
		{"device again", []string{"pki", "issue", "--dir", dir, "--device", "dev-1"}, exitFailure, "", "already exists", ""},
		{"no role", []string{"pki", "issue", "--dir", dir}, exitUsage, "", "exactly one of --server, --device, --admin", ""},
		{"two roles", []string{"pki", "issue", "--dir", dir, "--device", "d2", "--admin", "a2"}, exitUsage, "", "exactly one of", ""},
		{"issue without dir", []string{"pki", "issue", "--device", "d2"}, exitUsage, "", "--dir is required", ""},
		{"host on device", []string{"pki", "issue", "--dir", dir, "--device", "d2", "--host", "h"}, exitUsage, "", "--host is only for --server", ""},
		{"bad name", []string{"pki", "issue", "--dir", dir, "--device", "../x"}, exitUsage, "", `--device "../x"`, ""},
		{"unknown flag", []string{"pki", "issue", "--dir", dir, "--root", "x"}, exitUsage, "", "unknown flag", ""},
		{"no CA", []string{"pki", "issue", "--dir", t.TempDir(), "--device", "d3"}, exitFailure, "", "read CA certificate", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tt.args, strings.NewReader(""), &stdout, &stderr)
			if code != tt.wantCode {
				t.Errorf("run(%q) = %d, want %d; stderr: %s", tt.args, code, tt.wantCode, stderr.String())
			}
			if stdout.String() != tt.wantOut {
				t.Errorf("run(%q) stdout = %q, want %q", tt.args, stdout.String(), tt.wantOut)
			}
			if !strings.Contains(stderr.String(), tt.wantErr) {
				t.Errorf("run(%q) stderr = %q, want it to contain %q", tt.args, stderr.String(), tt.wantErr)
			}
			if tt.wantErr != "" && strings.Count(stderr.String(), "\n") != 1 {
				t.Errorf("run(%q) stderr = %q, want one line", tt.args, stderr.String())
			}
			if tt.wantFile != "" {
				if _, err := os.Stat(filepath.Join(dir, tt.wantFile)); err != nil {
					t.Errorf("run(%q): %v", tt.args, err)
				}
			}
		})
	}
}
