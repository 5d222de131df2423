package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

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
