package main

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
)

// ptyRun starts drover under a pseudo-terminal, as an operator's shell
// would, and collects what it draws.
func ptyRun(t *testing.T, env []string, args ...string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	cmd := exec.Command(droverBin, args...)
	cmd.Env = append(os.Environ(), env...)
	tty, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 40, Cols: 160})
	if err != nil {
		t.Fatalf("start %v under a pty: %v", args, err)
	}
	out := &syncBuffer{}
	go func() { _, _ = io.Copy(out, tty) }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		tty.Close()
	})
	return cmd, out
}

// waitOutput polls what a command drew until cond holds.
func waitOutput(t *testing.T, out *syncBuffer, what string, cond func(string) bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond(out.String()) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30s; output:\n%s", what, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// bar matches a drawn progress bar of a package's phase at 100 %, with
// its byte counters.
func bar(pkg, phase string) *regexp.Regexp {
	return regexp.MustCompile(regexp.QuoteMeta(pkg+" "+phase) + `.*\[[=>\-_ ]*\].*[KM]iB / .*[KM]iB.*100 %`)
}

// TestProgressBarsOnATerminal: `drover events --follow --device ID` and
// `drover converge` draw progress bars on a terminal (download and
// install), and plain lines elsewhere.
func TestProgressBarsOnATerminal(t *testing.T) {
	f := newFleet(t)
	marker := filepath.Join(f.dir, "second-try")
	src := writeSource(t, filepath.Join(f.dir, "src", "big"), pkgSource{
		yaml: "group: com.example\nname: big\nversion: 1.0.0\n",
		files: map[string]string{
			"files/share/a.dat": strings.Repeat("0123456789abcdef", 48<<10), // 768 KiB
			"files/share/b.dat": strings.Repeat("fedcba9876543210", 16<<10),
		},
		// The first try fails, so that `drover converge` (which skips
		// the failure backoff) does the install the second time.
		scripts: map[string]string{"preinst": "test -f " + marker},
	})
	pkgFile := filepath.Join(f.dir, "big.drover")
	f.mustOK(nil, "pkg", "build", src, "-o", pkgFile)
	f.op("pkg", "push", pkgFile)
	dev := f.newAgent("bars1", "--report-interval", "10m")
	dev.start()
	f.waitFor("bars1", "reported", func(d deviceJSON) bool { return len(d.SystemTags) > 0 })

	follow, fout := ptyRun(t, f.adminEnv(), "events", "--follow", "--device", "bars1")
	waitOutput(t, fout, "events header", func(s string) bool { return strings.Contains(s, "MESSAGE") })
	f.op("state", "set", "-f", writeState(t, f, "bars1", "id: bars1\napps:\n  - name: com.example:big\n    version: 1.0.0\n"))
	waitOutput(t, fout, "download bar and the failed step", func(s string) bool {
		return bar("com.example:big:1.0.0", "download").MatchString(s) && strings.Contains(s, "step-failed")
	})
	_ = follow.Process.Kill()

	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	conv, cout := ptyRun(t, nil, "converge", "--home", dev.home)
	if err := conv.Wait(); err != nil {
		t.Fatalf("converge: %v; output:\n%s", err, cout.String())
	}
	// The pty's last bytes may still be on their way.
	waitOutput(t, cout, "install bar", func(s string) bool {
		return bar("com.example:big:1.0.0", "install").MatchString(s) && strings.Contains(s, "converged")
	})
	if s := cout.String(); !strings.Contains(s, "step-done") {
		t.Errorf("converge on a terminal lacks its step lines:\n%s", s)
	}

	// Not a terminal: lines only, no bar.
	out := f.op("events", "--device", "bars1")
	if strings.Contains(out, "KiB / ") || strings.Contains(out, "\x1b[") {
		t.Errorf("events to a pipe drew bars:\n%s", out)
	}
	f.waitConverged("bars1", "com.example:big=1.0.0")
}
