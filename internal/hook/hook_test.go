package hook

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/drover-dev/drover/internal/api"
)

func write(t *testing.T, path, body string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(body), mode); err != nil {
		t.Fatal(err)
	}
}

var ev = api.Event{ID: 42, Time: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC), Device: "dev-1", Kind: "step-done",
	Level: "info", Priority: "low", Package: "com.example:a:1.0.0", Message: "install a"}

func TestRunOrderEnvStdin(t *testing.T) {
	dir := t.TempDir()
	d := filepath.Join(dir, "step-done-post.d")
	out := filepath.Join(dir, "out")
	rec := `#!/bin/sh
echo "$(basename "$0") $DROVER_EVENT_ID $DROVER_EVENT_KIND $DROVER_EVENT_DEVICE $DROVER_EVENT_LEVEL $DROVER_EVENT_PRIORITY $DROVER_EVENT_PACKAGE $(cat)" >> ` + out + "\n"
	write(t, filepath.Join(d, "20-b"), rec, 0o755)
	write(t, filepath.Join(d, "10_a"), rec, 0o755)
	write(t, filepath.Join(d, "30-c.orig"), rec, 0o755)          // bad name: ignored
	write(t, filepath.Join(d, "40-noexec"), rec, 0o644)          // not executable: ignored
	write(t, filepath.Join(dir, "plan-post.d", "x"), rec, 0o755) // other kind
	var logs bytes.Buffer
	r := New(Config{Dir: dir, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	res := r.Run(context.Background(), "step-done", ev)
	var names []string
	for _, x := range res {
		if x.Err != nil {
			t.Errorf("hook %s: %v\n%s", x.Name, x.Err, x.Output)
		}
		names = append(names, x.Name)
	}
	if diff := cmp.Diff([]string{"10_a", "20-b"}, names); diff != "" {
		t.Errorf("hooks run (-want +got):\n%s", diff)
	}
	lines := strings.Split(strings.TrimSpace(readFile(t, out)), "\n")
	if len(lines) != 2 {
		t.Fatalf("hook output = %q, want 2 lines", lines)
	}
	want := `10_a 42 step-done dev-1 info low com.example:a:1.0.0 {"id":42,`
	if !strings.HasPrefix(lines[0], want) {
		t.Errorf("first hook saw %q, want prefix %q", lines[0], want)
	}
	r.Run(context.Background(), "step-done", ev)
	for _, name := range []string{"30-c.orig", "40-noexec"} {
		if n := strings.Count(logs.String(), name); n != 1 {
			t.Errorf("warnings about %s = %d, want exactly 1 over two runs\n%s", name, n, logs.String())
		}
	}
}

func TestRunFailureAndTimeout(t *testing.T) {
	dir := t.TempDir()
	d := filepath.Join(dir, "log-post.d")
	write(t, filepath.Join(d, "1-fail"), "#!/bin/sh\necho boom\nexit 3\n", 0o755)
	// Hangs, with a child in its process group that would hold the pipe.
	write(t, filepath.Join(d, "2-hang"), "#!/bin/sh\nsleep 60 &\nsleep 60\n", 0o755)
	write(t, filepath.Join(d, "3-ok"), "#!/bin/sh\nexit 0\n", 0o755)
	r := New(Config{Dir: dir, Timeout: 300 * time.Millisecond})
	start := time.Now()
	res := r.Run(context.Background(), "log", api.Event{ID: 1, Kind: "log"})
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Run took %v with a hanging hook, want about its timeout", took)
	}
	if len(res) != 3 {
		t.Fatalf("Run = %d results, want 3 (a failing or hanging hook never stops the next)", len(res))
	}
	if res[0].Err == nil || !strings.Contains(string(res[0].Output), "boom") {
		t.Errorf("failing hook: err %v, output %q; want an error and its output", res[0].Err, res[0].Output)
	}
	if !errors.Is(res[1].Err, ErrTimeout) {
		t.Errorf("hanging hook: err = %v, want ErrTimeout", res[1].Err)
	}
	if res[2].Err != nil {
		t.Errorf("hook after the hanging one: %v, want it to run fine", res[2].Err)
	}
}

func TestNoDirectoryNoHooks(t *testing.T) {
	r := New(Config{Dir: filepath.Join(t.TempDir(), "none")})
	if res := r.Run(context.Background(), "plan", ev); res != nil {
		t.Errorf("Run without a directory = %v, want nil", res)
	}
	if got := r.Hooks("../etc"); got != nil {
		t.Errorf("Hooks(../etc) = %v, want nil", got)
	}
}

func TestQueueRunsInBackground(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "log-post.d", "a"), "#!/bin/sh\nexit 1\n", 0o755)
	got := make(chan int64, 10)
	q := NewQueue(New(Config{Dir: dir}), 2, func(ev api.Event, res []Result) {
		if res[0].Err != nil {
			got <- ev.ID
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := int64(1); i <= 2; i++ {
		if !q.Add(api.Event{ID: i, Kind: "log"}) {
			t.Fatalf("Add(%d) = false with room in the queue", i)
		}
	}
	if q.Add(api.Event{ID: 3, Kind: "log"}) || q.Dropped() != 1 {
		t.Errorf("Add to a full queue = true or Dropped = %d; want false and 1", q.Dropped())
	}
	go q.Run(ctx)
	for want := int64(1); want <= 2; want++ {
		select {
		case id := <-got:
			if id != want {
				t.Errorf("done for event %d, want %d", id, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("queued hooks did not run")
		}
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestHookIgnoredReported: each file that does not run is reported once to
// Ignored, which may emit an event that comes back to the queue without
// deadlocking it.
func TestHookIgnoredReported(t *testing.T) {
	dir := t.TempDir()
	d := filepath.Join(dir, "install-post.d")
	write(t, filepath.Join(d, "10-ok"), "#!/bin/sh\nexit 0\n", 0o755)
	write(t, filepath.Join(d, "bad.sh"), "#!/bin/sh\nexit 0\n", 0o755)
	write(t, filepath.Join(d, "20-noexec"), "#!/bin/sh\nexit 0\n", 0o644)
	if err := os.Mkdir(filepath.Join(d, "30-folder"), 0o755); err != nil {
		t.Fatal(err)
	}
	var (
		got []string
		q   *Queue
	)
	r := New(Config{Dir: dir, Ignored: func(path, reason string) {
		got = append(got, filepath.Base(path)+": "+reason)
		// As the server does: the warning is an event, queued for hooks.
		q.Add(api.Event{Kind: "hook", Message: reason})
	}})
	q = NewQueue(r, 10, nil)
	for range 3 {
		done := make(chan bool, 1)
		go func() { done <- q.Add(api.Event{Kind: "install"}) }()
		select {
		case ok := <-done:
			if !ok {
				t.Fatalf("Add = false with room in the queue")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Add deadlocked when Ignored added an event")
		}
	}
	want := []string{
		"20-noexec: hook ignored: not executable",
		"30-folder: hook ignored: not a regular file",
		"bad.sh: hook ignored: name must match ^[a-zA-Z0-9_-]+$",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Ignored calls over three listings (-want +got):\n%s", diff)
	}
}

func TestRunDirStopsAtFirstFailure(t *testing.T) {
	dir := t.TempDir()
	gate := filepath.Join(dir, "rollout-gate.d")
	write(t, filepath.Join(gate, "10-ok"), "#!/bin/sh\ncat > \"$0.in\"\necho fine\n", 0o755)
	write(t, filepath.Join(gate, "20-no"), "#!/bin/sh\necho budget spent >&2\nexit 3\n", 0o755)
	write(t, filepath.Join(gate, "30-never"), "#!/bin/sh\ntouch \"$0.ran\"\n", 0o755)
	write(t, filepath.Join(gate, "x.orig"), "#!/bin/sh\ntouch \"$0.ran\"\n", 0o755)
	r := New(Config{Dir: dir})
	res := r.RunDir(context.Background(), "rollout-gate", []byte(`{"name":"r1"}`), nil)
	if len(res) != 2 || res[0].Err != nil || res[1].Err == nil || !strings.Contains(string(res[1].Output), "budget spent") {
		t.Fatalf("RunDir = %+v, want 10-ok passing and 20-no failing with its output", res)
	}
	if got := readFile(t, filepath.Join(gate, "10-ok.in")); got != `{"name":"r1"}` {
		t.Errorf("stdin = %q", got)
	}
	if _, err := os.Stat(filepath.Join(gate, "30-never.ran")); err == nil {
		t.Error("a hook after the failing one ran")
	}
	if res := r.RunDir(context.Background(), "nothing-here", nil, nil); len(res) != 0 {
		t.Errorf("RunDir of a missing directory = %v", res)
	}
}
