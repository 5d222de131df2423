// Package proc runs a child process to completion the way drover runs
// every program of a package or an operator (scripts, health checks,
// hooks, stop commands): in a process group of its own, so that a timeout
// or a cancel kills the whole group, whatever the program started too; a
// start that fails with ETXTBSY retried; the exit code told apart from a
// failure to run. Tail reads the end of an output file.
//
// A long-running program (a service's start command) is not run to
// completion and is not for this package.
package proc

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// startTries bounds the starts of one Run that fail with ETXTBSY.
const startTries = 6

// Cmd is one program to run to completion.
type Cmd struct {
	// Path is the program; Args its arguments, without the program's
	// own name.
	Path string
	Args []string
	// Dir is the working directory; "" is the caller's.
	Dir string
	// Env is the whole environment; nil is the caller's.
	Env []string
	// Stdin, if not nil, is the program's standard input.
	Stdin []byte
	// Stdout and Stderr receive the output; nil discards it. An *os.File
	// is handed to the program as it is, so Run does not wait for a
	// daemon the program leaves holding it; any other writer is fed
	// through a pipe, which Run reads until every holder closed it (see
	// WaitDelay).
	Stdout, Stderr io.Writer
	// Timeout bounds the run, ETXTBSY retries included; 0 means only ctx
	// does. When it passes, or ctx is done, the program's process group
	// is killed with SIGKILL.
	Timeout time.Duration
	// WaitDelay bounds how long Run waits, once the program exited or
	// was killed, for a pipe that a process outside its group still
	// holds open (os/exec's Cmd.WaitDelay); 0 means no bound.
	WaitDelay time.Duration
	// KillGroup, when set, kills with SIGKILL whatever the program left
	// running in its process group once it exited. Checks that run every
	// few seconds set it, so what they leave behind does not pile up;
	// install scripts must not, as they may start daemons on purpose.
	KillGroup bool
}

// Result is how a run ended.
type Result struct {
	// Code is the exit code: 0, the code of a non-zero exit, or -1 when
	// the program was killed by a signal or never ran.
	Code int
	// TimedOut reports that the run failed after Timeout passed while
	// ctx was still live: the process group was killed at the timeout.
	TimedOut bool
}

// Run starts c in a process group of its own and waits for it to end.
// A start that fails with ETXTBSY (another goroutine's fork holding the
// program open for writing for an instant) is retried a few times.
//
// The error is nil only when the program exited 0 and its output was
// all copied. Otherwise it is what os/exec reports: an *exec.ExitError
// for a non-zero exit or death by a signal (a kill at the timeout or at
// cancel included), or why the program could not start or be waited for.
func Run(ctx context.Context, c Cmd) (Result, error) {
	return run(ctx, c, func(try int) { time.Sleep(time.Duration(try+1) * 10 * time.Millisecond) })
}

// run is Run with the pause between ETXTBSY retries given, so a test can
// make the busy file free in it.
func run(ctx context.Context, c Cmd, pause func(try int)) (Result, error) {
	rctx := ctx
	if c.Timeout > 0 {
		var cancel context.CancelFunc
		rctx, cancel = context.WithTimeout(ctx, c.Timeout)
		defer cancel()
	}
	var (
		err   error
		pid   int
		state *os.ProcessState
	)
	for try := 0; ; try++ {
		cmd := exec.CommandContext(rctx, c.Path, c.Args...)
		cmd.Dir, cmd.Env = c.Dir, c.Env
		if c.Stdin != nil {
			cmd.Stdin = bytes.NewReader(c.Stdin)
		}
		cmd.Stdout, cmd.Stderr = c.Stdout, c.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		// The whole group, not just the program: what it started must not
		// outlive the timeout.
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
		cmd.WaitDelay = c.WaitDelay
		err = cmd.Run()
		if cmd.Process != nil {
			pid = cmd.Process.Pid
		}
		state = cmd.ProcessState
		if try+1 < startTries && errors.Is(err, syscall.ETXTBSY) {
			pause(try)
			continue
		}
		break
	}
	if c.KillGroup && pid > 0 {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
	res := Result{Code: -1}
	if state != nil {
		res.Code = state.ExitCode()
	}
	res.TimedOut = err != nil && c.Timeout > 0 && errors.Is(rctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil
	return res, err
}

// Tail returns the last n bytes of the file at path, or "" when it
// cannot be read: a message quoting a program's output has nothing
// better to say then.
func Tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(st.Size()-max(n, 0), 0)
	b := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(b, off); err != nil && !errors.Is(err, io.EOF) {
		return ""
	}
	return string(b)
}
