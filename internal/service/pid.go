package service

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Processes the supervisor did not start itself (a daemon a start
// command left behind, a service adopted after an agent restart) are
// known by their pid and their start time (field 22 of /proc/PID/stat,
// in clock ticks since boot): a pid alone may be reused by another
// process once the service is gone.

// identFile records the pid and start time of the process the
// supervisor watches, so that a restarted agent adopts that process and
// not another that got its pid.
const identFile = "drover-supervised"

// procStart returns the start time of process pid, in clock ticks since
// boot; ok is false when there is no such process.
func procStart(pid int) (ticks uint64, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	// After the command name: state (field 3) ... starttime (field 22).
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, false
	}
	ticks, err = strconv.ParseUint(f[19], 10, 64)
	return ticks, err == nil
}

// zombie reports whether pid is a zombie (dead, not yet reaped).
func zombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] == 'Z'
}

// alive reports whether the process pid that started at ticks still runs.
func alive(pid int, ticks uint64) bool {
	t, ok := procStart(pid)
	return ok && t == ticks && !zombie(pid)
}

// readPID reads a pid file: one decimal pid, optionally followed by
// whitespace.
func readPID(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil || pid <= 1 {
		return 0
	}
	return pid
}

// claimPID writes pid to run/start.pid unless the file exists: a start
// command may have written its service's pid there already, and that
// one wins. The file appears whole (a link of a finished temp file).
func claimPID(dir string, pid int) error {
	path := filepath.Join(dir, "run", "start.pid")
	tmp := path + ".drover-tmp"
	if err := writeFile(tmp, []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		return err
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, path); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	return nil
}

// writeIdent records the watched process's pid and start time.
func writeIdent(dir string, pid int, ticks uint64) error {
	return writeFile(filepath.Join(dir, "run", identFile), fmt.Appendf(nil, "%d %d\n", pid, ticks), 0o644)
}

// readIdent returns the recorded pid and start time, if any.
func readIdent(dir string) (pid int, ticks uint64, ok bool) {
	b, err := os.ReadFile(filepath.Join(dir, "run", identFile))
	if err != nil {
		return 0, 0, false
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, 0, false
	}
	pid, err1 := strconv.Atoi(f[0])
	ticks, err2 := strconv.ParseUint(f[1], 10, 64)
	return pid, ticks, err1 == nil && err2 == nil
}

// writeFile writes a small file whole: a temp file beside it, then a
// rename, so a reader sees the old content or the new.
func writeFile(path string, data []byte, mode os.FileMode) error {
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NOFOLLOW, mode)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(mode) // whatever the umask
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
	}
	return err
}

// waitGone blocks until the process pid that started at ticks is gone
// (true) or the supervisor closes (false). It watches a pidfd where the
// kernel has them, else polls /proc every PollInterval.
func (s *Supervisor) waitGone(pid int, ticks uint64) bool {
	if fd, err := unix.PidfdOpen(pid, 0); err == nil {
		defer unix.Close(fd)
		// The pidfd names whatever has the pid now: check it is ours.
		if !alive(pid, ticks) {
			return true
		}
		for {
			select {
			case <-s.quit:
				return false
			default:
			}
			n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 500)
			if n > 0 {
				return true
			}
			if err != nil && !errors.Is(err, unix.EINTR) {
				break // fall back to polling
			}
		}
	}
	t := time.NewTicker(s.cfg.PollInterval)
	defer t.Stop()
	for alive(pid, ticks) {
		select {
		case <-s.quit:
			return false
		case <-t.C:
		}
	}
	return true
}

// pgidOf returns the process group of pid, or 0 when it is the
// supervisor's own group (never signalled) or unknown.
func pgidOf(pid int) int {
	pgid, err := unix.Getpgid(pid)
	if err != nil || pgid <= 1 || pgid == unix.Getpgrp() {
		return 0
	}
	return pgid
}

// signal sends sig to process pid, started at ticks (0: unknown), and
// to its process group pgid (none when 0). A pid that now names another
// process (its start time differs) gets nothing; a process gone still
// has its group signalled, for what it left running there.
func signal(pid int, ticks uint64, pgid int, sig syscall.Signal) {
	if t, ok := procStart(pid); ok && ticks != 0 && t != ticks {
		return // reused
	}
	if pgid > 1 {
		_ = syscall.Kill(-pgid, sig)
	}
	if pid > 1 {
		_ = syscall.Kill(pid, sig)
	}
}
