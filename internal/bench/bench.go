// Package bench holds drover's benchmark programs (cmd/drover-bench): a
// fleet of real agents converging against a real server process, and the
// install engine timed against tar and dpkg on a real disk. They print
// figures for people to read; they are not timed tests and assert nothing
// beyond the work having been done.
package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/drover-dev/drover/internal/api"
	"golang.org/x/sys/unix"
)

// ErrUsage marks an argument a caller got wrong (a size that does not
// parse, a fleet of no agents); the command exits 2 on it.
var ErrUsage = errors.New("usage")

// usagef returns an error wrapping ErrUsage.
func usagef(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrUsage, fmt.Sprintf(format, args...))
}

// ParseSize parses a byte count: a plain number of bytes, or a number with
// a unit: kB, MB, GB (powers of 1000) or KiB, MiB, GiB (powers of 1024),
// case-insensitive. "200MB" is 200,000,000 bytes.
func ParseSize(s string) (int64, error) {
	n, err := api.ParseSize(s)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrUsage, err)
	}
	return n, nil
}

// ParseSizes parses a comma-separated list of fleet sizes, like
// "100,1000,5000". Each must be a whole number from 1 to 100,000.
func ParseSizes(s string) ([]int, error) {
	var out []int
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		n, err := strconv.Atoi(part)
		if err != nil || n < 1 || n > 100_000 {
			return nil, usagef("fleet size %q: want whole numbers from 1 to 100000, comma separated", part)
		}
		out = append(out, n)
	}
	return out, nil
}

// RaiseOpenFiles raises the soft limit of open files to the hard limit (Go
// has done so at start since 1.19; this checks it) and returns both.
func RaiseOpenFiles() (soft, hard uint64, err error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, 0, fmt.Errorf("read open-file limit: %w", err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return lim.Cur, lim.Max, fmt.Errorf("raise open-file limit: %w", err)
		}
	}
	return lim.Cur, lim.Max, nil
}

// fsName returns the type of the filesystem holding path ("ext4",
// "tmpfs", ...), or its magic number in hex when unknown.
func fsName(path string) string {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return "unknown"
	}
	switch st.Type {
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.EXT4_SUPER_MAGIC:
		return "ext4"
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "overlayfs"
	}
	return fmt.Sprintf("0x%x", st.Type)
}

// dropCaches writes everything dirty to disk and then, when the process
// may, drops the page cache, so a timed run reads its input from the disk
// rather than from memory. It returns why the cache could not be dropped.
func dropCaches() error {
	unix.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0); err != nil {
		return err
	}
	return nil
}

// median returns the median of ds (the mean of the middle two for an even
// count); 0 for none.
func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// secs formats d as seconds with two decimals, the unit of every figure
// the benchmarks print.
func secs(d time.Duration) string { return fmt.Sprintf("%.2fs", d.Seconds()) }

// ms formats a short duration in whole milliseconds.
func ms(d time.Duration) string { return fmt.Sprintf("%dms", d.Milliseconds()) }

// runCmd runs a command and returns its combined output in the error when
// it fails, trimmed to its last lines.
func runCmd(ctx context.Context, dir string, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, lastLines(string(out), 3))
	}
	return nil
}

// lastLines returns the last n non-empty lines of s joined by " | ", for
// one-line error messages.
func lastLines(s string, n int) string {
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// workDir is dir, or when it is empty /dev/shm (a tmpfs, so disks do not
// dominate the figures) where it exists, else the system temp folder.
func workDir(dir string) string {
	if dir != "" {
		return dir
	}
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		return "/dev/shm"
	}
	return os.TempDir()
}
