package pkgfile

import (
	"fmt"

	"github.com/drover-dev/drover/internal/api"
)

// CheckRunPath checks a program path given relative to a package's
// install location (a service's start, an init entry's run): relative,
// slash-separated, without empty, "." or ".." elements.
func CheckRunPath(p string) error { return checkPath(p) }

// CheckProgram reports whether run names an executable regular file of
// tree (a build's files for one device, pkgfile.Tree, or all its files):
// the error says what it is instead.
func CheckProgram(tree []api.File, run string) error {
	if err := checkPath(run); err != nil {
		return err
	}
	found := false
	for _, f := range tree {
		if f.Path != run {
			continue
		}
		found = true
		if f.Type != api.TypeFile {
			return fmt.Errorf("%s is a %s, not a file", run, f.Type)
		}
		if f.Mode&0o111 == 0 {
			return fmt.Errorf("%s is not executable (mode %04o)", run, f.Mode&0o777)
		}
	}
	if !found {
		return fmt.Errorf("%s is not a file of the package", run)
	}
	return nil
}
