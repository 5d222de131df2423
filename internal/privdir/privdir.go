// Package privdir makes the folders that hold drover's own data (the
// server's database and blobs, the agent's system/ folder) private to
// their owner, whatever the umask and whatever mode a folder made before
// had.
package privdir

import (
	"fmt"
	"os"
)

// Mode is the mode of a private folder.
const Mode os.FileMode = 0o700

// Make creates dir and its missing parents with Mode and sets dir itself
// to Mode if it existed with another.
func Make(dir string) error {
	if err := os.MkdirAll(dir, Mode); err != nil {
		return fmt.Errorf("private folder: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("private folder: %w", err)
	}
	if fi.Mode().Perm() != Mode {
		if err := os.Chmod(dir, Mode); err != nil {
			return fmt.Errorf("private folder %s: %w", dir, err)
		}
	}
	return nil
}
