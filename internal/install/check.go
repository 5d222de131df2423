package install

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"

	"github.com/drover-dev/drover/internal/api"
)

// CheckInstalled reports whether the disk holds exactly the build m of
// app (with the overlays have selects): every file's content digest and
// mode, every symlink's target, every directory. Prefix mode looks
// through <software-root>/<group path>/<name>/current; root mode under
// root, resolving parents the way the engine does. Files the manifest
// does not list (rendered templates, data) are not an error.
//
// It is the invariant of the crash tests, exported so an end-to-end test
// can check a real agent's folders the same way.
func CheckInstalled(root, softwareRoot string, app api.InstalledApp, m *api.Manifest, have []string) error {
	if m == nil {
		return fmt.Errorf("check %s: no manifest", app.Name)
	}
	c := m.Coordinate()
	if c.PackageName() != app.Name || c.Version != app.Version {
		return fmt.Errorf("check %s %s: manifest is %s", app.Name, app.Version, c)
	}
	tree, err := selectTree(m, have)
	if err != nil {
		return fmt.Errorf("check %s: %w", c, err)
	}
	mode := app.Install
	if mode == "" {
		mode = m.Install
	}
	var locate func(rel string, follow bool) (string, error)
	checkDirMode := false
	switch mode {
	case api.InstallRoot:
		root = filepath.Clean(root)
		if r, err := filepath.EvalSymlinks(root); err == nil {
			root = r
		}
		locate = func(rel string, follow bool) (string, error) {
			if follow {
				return securejoin.SecureJoin(root, rel)
			}
			parent, err := securejoin.SecureJoin(root, path.Dir(rel))
			if err != nil {
				return "", err
			}
			return filepath.Join(parent, path.Base(rel)), nil
		}
	case api.InstallPrefix, "":
		pkgDir, err := PackageDir(softwareRoot, app.Name, app.Instance)
		if err != nil {
			return fmt.Errorf("check %s: %w", c, err)
		}
		cur, err := os.Readlink(filepath.Join(pkgDir, "current"))
		if err != nil {
			return fmt.Errorf("check %s: %w", c, err)
		}
		if cur == "" || strings.Contains(cur, "/") || cur == "." || cur == ".." {
			return fmt.Errorf("check %s: current points at %q, not a version folder", c, cur)
		}
		loc := filepath.Join(pkgDir, cur)
		if !isDir(loc) {
			return fmt.Errorf("check %s: %s is not a directory", c, loc)
		}
		locate = func(rel string, _ bool) (string, error) {
			return filepath.Join(loc, filepath.FromSlash(rel)), nil
		}
		checkDirMode = true
	default:
		return fmt.Errorf("check %s: install mode %q", c, mode)
	}
	var errs []error
	for _, f := range tree {
		if len(errs) >= 20 {
			errs = append(errs, errors.New("more differences not shown"))
			break
		}
		if err := checkOne(f, locate, checkDirMode); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f.Path, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("check %s: %w", c, err)
	}
	return nil
}

func checkOne(f api.File, locate func(string, bool) (string, error), dirMode bool) error {
	p, err := locate(f.Path, f.Type == api.TypeDir)
	if err != nil {
		return err
	}
	fi, err := os.Lstat(p)
	if err != nil {
		return err
	}
	switch f.Type {
	case api.TypeDir:
		if !fi.IsDir() {
			return fmt.Errorf("is %v, want a directory", fi.Mode().Type())
		}
		if dirMode && uint32(fi.Mode().Perm()) != f.Mode&0o777 {
			return fmt.Errorf("mode %o, want %o", fi.Mode().Perm(), f.Mode&0o777)
		}
	case api.TypeSymlink:
		if fi.Mode()&fs.ModeSymlink == 0 {
			return fmt.Errorf("is %v, want a symlink", fi.Mode().Type())
		}
		t, err := os.Readlink(p)
		if err != nil {
			return err
		}
		if t != f.Target {
			return fmt.Errorf("symlink to %q, want %q", t, f.Target)
		}
	case api.TypeFile:
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("is %v, want a regular file", fi.Mode().Type())
		}
		if uint32(fi.Mode().Perm()) != f.Mode&0o777 {
			return fmt.Errorf("mode %o, want %o", fi.Mode().Perm(), f.Mode&0o777)
		}
		if fi.Size() != f.Size {
			return fmt.Errorf("%d bytes, want %d", fi.Size(), f.Size)
		}
		d, err := fileDigest(p)
		if err != nil {
			return err
		}
		if d != f.Digest {
			return fmt.Errorf("content %s, want %s", d, f.Digest)
		}
	default:
		return fmt.Errorf("type %q", f.Type)
	}
	return nil
}
