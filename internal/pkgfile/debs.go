package pkgfile

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/proc"
)

// debsDir holds the Debian packages of a root-mode package source.
const debsDir = "debs"

// The shapes of a .deb's control fields (Debian Policy 5.6.1, 5.6.7,
// 5.6.12), bounded in length.
var (
	debNameRe    = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]{1,127}$`)
	debVersionRe = regexp.MustCompile(`^(?:[0-9]{1,9}:)?[0-9][A-Za-z0-9.+~:-]{0,127}$`)
	debArchRe    = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)
)

// dpkgDebTimeout bounds reading one .deb's control fields.
const dpkgDebTimeout = time.Minute

// debs adds every .deb of the debs/ folder, with its control fields read
// by dpkg-deb, so the agent knows what it installs before it runs dpkg.
func (b *builder) debs(e os.DirEntry) error {
	if !e.IsDir() {
		return invalidf("%s: not a directory", debsDir)
	}
	if b.m.Install != api.InstallRoot {
		return invalidf("%s/: Debian packages need install: root (dpkg installs them into the device's root); this package is install: %s", debsDir, b.m.Install)
	}
	dir := filepath.Join(b.dir, debsDir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("read package source: %w", err)
	}
	for _, d := range entries {
		where := debsDir + "/" + d.Name()
		if !d.Type().IsRegular() || !strings.HasSuffix(d.Name(), ".deb") {
			return invalidf("%s: want only regular .deb files in %s/", where, debsDir)
		}
		p := filepath.Join(dir, d.Name())
		fields, err := debFields(p)
		if err != nil {
			return invalidf("%s: %v", where, err)
		}
		digest, size, err := b.addBlob(p, where)
		if err != nil {
			return err
		}
		b.m.Debs = append(b.m.Debs, api.Deb{Name: fields[0], Version: fields[1], Arch: fields[2], Digest: digest, Size: size})
	}
	slices.SortFunc(b.m.Debs, func(x, y api.Deb) int { return strings.Compare(x.Name, y.Name) })
	return nil
}

// debFields returns the Package, Version and Architecture of a .deb,
// as dpkg-deb reads them.
func debFields(path string) ([3]string, error) {
	var out, errb bytes.Buffer
	_, err := proc.Run(context.Background(), proc.Cmd{
		Path:    "dpkg-deb",
		Args:    []string{"--field", path, "Package", "Version", "Architecture"},
		Stdout:  &out,
		Stderr:  &errb,
		Timeout: dpkgDebTimeout,
	})
	if err != nil {
		msg := strings.TrimSpace(errb.String())
		if msg == "" {
			msg = err.Error()
		}
		return [3]string{}, fmt.Errorf("dpkg-deb: %s", msg)
	}
	var f [3]string
	for line := range strings.SplitSeq(out.String(), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "Package":
			f[0] = v
		case "Version":
			f[1] = v
		case "Architecture":
			f[2] = v
		}
	}
	return f, nil
}

// validateDebs checks the debs of a manifest: root mode only, valid
// control fields and digests, sorted by name, each name once.
func validateDebs(m *api.Manifest) error {
	if len(m.Debs) > 0 && m.Install != api.InstallRoot {
		return invalidf("manifest: debs: Debian packages need install: root, not %s", m.Install)
	}
	for i, d := range m.Debs {
		if !debNameRe.MatchString(d.Name) {
			return invalidf("manifest: deb %q: package name: want lowercase letters, digits, '+', '-' and '.'", d.Name)
		}
		if !debVersionRe.MatchString(d.Version) {
			return invalidf("manifest: deb %s: version %q is not a Debian version", d.Name, d.Version)
		}
		if !debArchRe.MatchString(d.Arch) {
			return invalidf("manifest: deb %s: architecture %q: want lowercase letters, digits and '-'", d.Name, d.Arch)
		}
		if !api.ValidDigest(d.Digest) {
			return invalidf("manifest: deb %s: digest %q: want 64 lowercase hex characters", d.Name, d.Digest)
		}
		if d.Size < 0 || d.Size > DefaultMaxBlob {
			return invalidf("manifest: deb %s: size %d out of range", d.Name, d.Size)
		}
		if i > 0 && m.Debs[i-1].Name >= d.Name {
			return invalidf("manifest: debs: want sorted by name, each name once (%s)", d.Name)
		}
	}
	return nil
}
