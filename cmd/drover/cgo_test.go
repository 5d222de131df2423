package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestNoCgo: drover builds without cgo for every platform it ships to,
// ARM boards included, so one static binary runs on any of them. No
// package outside the standard library in its dependency graph has cgo
// files (the standard library's have pure-Go fallbacks), and with
// CGO_ENABLED=0 every package of the graph still has files to build.
func TestNoCgo(t *testing.T) {
	goList := func(env []string, format string) string {
		t.Helper()
		cmd := exec.Command("go", "list", "-deps", "-e", "-f", format, ".")
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps (%v): %v\n%s", env, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if got := goList([]string{"CGO_ENABLED=1"}, `{{if not .Standard}}{{if .CgoFiles}}{{.ImportPath}}: {{join .CgoFiles " "}}{{end}}{{end}}`); got != "" {
		t.Errorf("packages with cgo files in drover's dependency graph:\n%s", got)
	}
	for _, target := range [][]string{
		{"GOOS=linux", "GOARCH=amd64"},
		{"GOOS=linux", "GOARCH=arm64"},
		{"GOOS=linux", "GOARCH=arm", "GOARM=7"},
	} {
		env := append([]string{"CGO_ENABLED=0"}, target...)
		if got := goList(env, `{{if .Error}}{{.ImportPath}}: {{.Error}}{{end}}`); got != "" {
			t.Errorf("with %v, packages that do not build:\n%s", env, got)
		}
	}
}
