//go:build linux || darwin || freebsd || netbsd || openbsd

package facts

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// uname returns the machine (x86_64, aarch64, armv7l) and kernel release
// of the running system.
func uname() (machine, release string, err error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "", "", fmt.Errorf("uname: %w", err)
	}
	return unix.ByteSliceToString(u.Machine[:]), unix.ByteSliceToString(u.Release[:]), nil
}
