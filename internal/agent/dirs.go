package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// checkDir makes sure the folder given as flag exists (it is made if it
// does not), is a folder and is writable by this process, so a bad
// --root or --home stops the agent at start with one clear line instead
// of failing at the first install.
func checkDir(flag, path string) error {
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(path, 0o755); err != nil {
			return fmt.Errorf("%s %s: cannot create it: %w", flag, path, unwrapPath(err))
		}
		st, err = os.Stat(path)
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", flag, path, unwrapPath(err))
	}
	if !st.IsDir() {
		return fmt.Errorf("%s %s: not a folder", flag, path)
	}
	if err := unix.Access(path, unix.W_OK); err != nil {
		return fmt.Errorf("%s %s: not writable by this user (uid %s): %w", flag, path, strconv.Itoa(os.Getuid()), err)
	}
	return nil
}

// unwrapPath drops the path an fs.PathError repeats.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
