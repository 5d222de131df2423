package local

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestListenModeAndStaleSocket(t *testing.T) {
	home := t.TempDir()
	path := SocketPath(home)
	// A permissive umask must not leave the socket open to everyone.
	old := syscall.Umask(0)
	ln, err := Listen(path)
	syscall.Umask(old)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != 0o660 {
		t.Errorf("socket %s: mode %v, want a socket with 0660", path, st.Mode())
	}
	if leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".sock-*")); len(leftovers) != 0 {
		t.Errorf("private folders left: %v", leftovers)
	}

	// A second agent on the same home is refused while the first answers.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { WriteJSON(w, 200, map[string]string{"ok": "yes"}) }))
	}()
	var out map[string]string
	if err := NewClient(home).Do(context.Background(), http.MethodGet, "/", nil, &out); err != nil || out["ok"] != "yes" {
		t.Fatalf("Do = %v, %v", out, err)
	}
	if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), "another agent") {
		t.Errorf("second Listen = %v, want another agent running", err)
	}
	cancel()
	<-done
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("socket left after the agent stopped: %v", err)
	}

	// With no agent, the client says so.
	err = NewClient(home).Do(context.Background(), http.MethodGet, "/", nil, nil)
	if err == nil || !strings.Contains(err.Error(), "not running") {
		t.Errorf("Do with no agent = %v, want 'not running'", err)
	}
}
