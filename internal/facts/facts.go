// Package facts detects what kind of machine the agent runs on (DESIGN §2):
// operating system, architecture, C library and its version, init system,
// distribution and its version, and a few numbers for the fleet page. Tags
// turns the facts into the device's system tags, which decide which build
// of a package fits the device.
//
// Detection reads files only (os-release, meminfo, the C library itself),
// needs no cgo and runs no program, except `ldd --version` as a last resort
// on the real root, so it works the same in a chroot image under test.
// DetectCloud (cloud.go) is apart: it asks a cloud metadata service over
// HTTP, within a short timeout, and caches the answer.
package facts

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"

	"github.com/drover-dev/drover/internal/api"
)

// Facts maps a fact's key (the Key constants) to its value. A fact that
// could not be detected is absent.
type Facts map[string]string

// Keys of Facts.
const (
	KeyHostname      = "hostname"
	KeyOS            = "os"           // runtime.GOOS: linux
	KeyArch          = "arch"         // GOARCH, arm refined by GOARM: amd64, arm64, armv7l
	KeyMachine       = "machine"      // uname machine: x86_64, aarch64, armv7l
	KeyCPUs          = "cpus"         // CPUs usable by the agent
	KeyMemoryBytes   = "memory_bytes" // MemTotal of /proc/meminfo in bytes
	KeyLibc          = "libc"         // glibc or musl
	KeyLibcVersion   = "libc_version" // 2.36, 1.2.4
	KeyInit          = "init"         // systemd, openrc or sysvinit
	KeyDistro        = "distro"       // ID of os-release: debian, alpine
	KeyDistroVersion = "distro_version"
	KeyKernel        = "kernel" // uname release
)

// Values of KeyLibc and KeyInit.
const (
	LibcGlibc    = "glibc"
	LibcMusl     = "musl"
	InitSystemd  = "systemd"
	InitOpenRC   = "openrc"
	InitSysvinit = "sysvinit"
)

// Config says where Detect looks.
type Config struct {
	// Root is the file system root the files (etc/os-release,
	// proc/meminfo, the C library, run/systemd/system) are read under;
	// "" means "/". Symbolic links are resolved inside Root. Facts of the
	// running kernel and process (hostname, kernel, machine, arch, cpus)
	// come from the running system whatever Root is.
	Root string
}

// Detect returns the facts of the machine. A fact whose file is missing is
// left out; that is normal (no os-release in a minimal container). An
// error reading a file that is there is returned, joined with any others,
// beside the facts that could be detected: callers may log it and go on.
// Only a Root that is not a readable directory gives nil Facts.
func Detect(cfg Config) (Facts, error) {
	root, err := cleanRoot(cfg.Root)
	if err != nil {
		return nil, err
	}
	d := detector{root: root, f: Facts{}}
	d.f[KeyOS] = runtime.GOOS
	d.f[KeyCPUs] = strconv.Itoa(runtime.NumCPU())
	if h, err := os.Hostname(); err == nil {
		d.f[KeyHostname] = h
	} else {
		d.errs = append(d.errs, fmt.Errorf("hostname: %w", err))
	}
	machine, release, err := uname()
	if err != nil {
		d.errs = append(d.errs, err)
	}
	d.f.set(KeyMachine, machine)
	d.f.set(KeyKernel, release)
	d.f.set(KeyArch, archName(runtime.GOARCH, goarm(), machine))

	d.osRelease()
	d.memory()
	d.libc()
	d.initSystem()
	return d.f, errors.Join(d.errs...)
}

// cleanRoot makes root absolute and checks that it is a directory.
func cleanRoot(root string) (string, error) {
	if root == "" {
		root = "/"
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return "", fmt.Errorf("root %s: %w", root, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return "", fmt.Errorf("root %s: %w", root, pathErr(err))
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("root %s: not a directory", root)
	}
	return abs, nil
}

// detector collects facts and the errors met on the way.
type detector struct {
	root string
	f    Facts
	errs []error
}

// set records a fact unless its value is empty.
func (f Facts) set(key, value string) {
	if value != "" {
		f[key] = value
	}
}

// path returns rel resolved under the root, symbolic links included, so
// that an absolute link in an image never reaches the host's files.
func (d *detector) path(rel string) string {
	p, err := securejoin.SecureJoin(d.root, rel)
	if err != nil {
		// SecureJoin fails only on a symlink loop or a bad root; a
		// plain join then fails to open, which reads as "missing".
		return filepath.Join(d.root, rel)
	}
	return p
}

// readSmall reads at most limit bytes of rel under the root. A missing
// file gives ok = false and no error.
func (d *detector) readSmall(rel string, limit int64) (data []byte, ok bool) {
	p := d.path(rel)
	f, err := os.Open(p)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			d.errs = append(d.errs, fmt.Errorf("read %s: %w", p, pathErr(err)))
		}
		return nil, false
	}
	defer f.Close()
	data, err = readLimited(f, limit)
	if err != nil {
		d.errs = append(d.errs, fmt.Errorf("read %s: %w", p, pathErr(err)))
		return nil, false
	}
	return data, true
}

// exists reports whether rel is there under the root (any file type).
func (d *detector) exists(rel string) bool {
	_, err := os.Stat(d.path(rel))
	return err == nil
}

// osRelease reads the distribution from etc/os-release, else
// usr/lib/os-release (the os-release(5) order).
func (d *detector) osRelease() {
	for _, rel := range []string{"etc/os-release", "usr/lib/os-release"} {
		data, ok := d.readSmall(rel, 64<<10)
		if !ok {
			continue
		}
		kv := parseOSRelease(string(data))
		d.f.set(KeyDistro, kv["ID"])
		d.f.set(KeyDistroVersion, kv["VERSION_ID"])
		return
	}
}

// memory reads MemTotal from proc/meminfo.
func (d *detector) memory() {
	data, ok := d.readSmall("proc/meminfo", 64<<10)
	if !ok {
		return
	}
	if n, ok := parseMemTotal(string(data)); ok {
		d.f[KeyMemoryBytes] = strconv.FormatUint(n, 10)
	}
}

// initSystem finds the init system. systemd is told by /run/systemd/system, the
// test sd_booted(3) makes: installed but not running does not count.
func (d *detector) initSystem() {
	switch {
	case d.exists("run/systemd/system"):
		d.f[KeyInit] = InitSystemd
	case d.exists("sbin/openrc") || d.exists("sbin/openrc-run"):
		d.f[KeyInit] = InitOpenRC
	case d.exists("etc/inittab"):
		d.f[KeyInit] = InitSysvinit
	}
}

// Tags returns the system tags of f, sorted and each once: os, arch, libc,
// libc-VERSION, init, distro, distro-VERSION, and the cloud tags of cloud
// facts (cloud-aws, region-eu-west-1, zone-eu-west-1a,
// instance-type-t3.micro). A version of three or more
// parts also gives its major.minor tag (musl 1.2.4: musl-1.2 and
// musl-1.2.4; alpine 3.19.1: alpine-3.19 and alpine-3.19.1), so a build
// can target a release series. Empty values and values that are not valid
// tags (api.ValidTag) are left out.
func Tags(f Facts) []string {
	var tags []string
	add := func(t string) {
		if t != "" && api.ValidTag(t) {
			tags = append(tags, t)
		}
	}
	versioned := func(name, version string) {
		if name == "" {
			return
		}
		add(name)
		if version == "" {
			return
		}
		add(name + "-" + version)
		if parts := strings.Split(version, "."); len(parts) > 2 {
			add(name + "-" + parts[0] + "." + parts[1])
		}
	}
	add(f[KeyOS])
	add(f[KeyArch])
	add(f[KeyInit])
	versioned(f[KeyLibc], f[KeyLibcVersion])
	versioned(f[KeyDistro], f[KeyDistroVersion])
	for _, t := range cloudTags(f) { // cloud.go
		add(t)
	}
	slices.Sort(tags)
	return slices.Compact(tags)
}

// pathErr strips the operation and path from an os error whose path our
// message already names.
func pathErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
