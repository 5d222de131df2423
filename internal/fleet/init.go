package fleet

import (
	"errors"
	"fmt"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/pkgfile"
)

// ErrDeviceInit refuses init entries in a device document: they belong to
// the group a device joins.
var ErrDeviceInit = errors.New("a device document has no init entries (init: belongs to a group document)")

// maxInit bounds the init entries of one group.
const maxInit = 64

// CheckInit checks a group's init entries on their own: each names a
// package (group:name) once, and its run is a path relative to the
// package's install location without "." or ".." elements, as a service's
// start is. Whether the package, the version and the program exist is
// the server's to check against its builds.
func CheckInit(entries []api.InitEntry) error {
	if len(entries) > maxInit {
		return fmt.Errorf("init: %d entries, at most %d", len(entries), maxInit)
	}
	seen := map[string]bool{}
	for i, e := range entries {
		if e.Name == "" {
			return fmt.Errorf("init[%d]: no name", i)
		}
		if _, _, err := api.ParsePackageName(e.Name); err != nil {
			return fmt.Errorf("init[%d]: %w", i, err)
		}
		if seen[e.Name] {
			return fmt.Errorf("init %s: listed twice", e.Name)
		}
		seen[e.Name] = true
		if e.Run == "" {
			return fmt.Errorf("init %s: no run (want a program of the package, like bin/join)", e.Name)
		}
		if err := pkgfile.CheckRunPath(e.Run); err != nil {
			return fmt.Errorf("init %s: run: %w (want a path relative to the install location)", e.Name, err)
		}
	}
	return nil
}
