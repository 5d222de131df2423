package facts

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Where C libraries live. Multiarch directories (lib/x86_64-linux-gnu,
// ...) are found by listing lib and usr/lib.
var (
	glibcDirs = []string{"lib", "lib64", "usr/lib", "usr/lib64"}
	muslDirs  = []string{"lib", "usr/lib"}
)

var (
	// glibc's libc.so.6 holds the banner it prints when run:
	// "GNU C Library (Debian GLIBC 2.36-9) stable release version 2.36."
	// The version must be followed by a non-digit, so a match cut short
	// at a chunk boundary ("2.3" of "2.36") is never taken.
	glibcRe = regexp.MustCompile(`release version (\d+(?:\.\d+)+)\.?[^\d]`)
	// musl's loader holds its version as a string of its own, which its
	// ldd mode prints: "\x001.2.4\x00".
	muslRe = regexp.MustCompile(`\x00(1\.\d{1,3}\.\d{1,3})\x00`)
	// Before glibc 2.34 libc.so.6 was a link to libc-2.31.so.
	glibcNameRe = regexp.MustCompile(`^libc-(\d+(?:\.\d+)+)\.so$`)
)

// scanLimit bounds how much of a C library we read; libc.so.6 is about
// 2 MB, more with debug symbols.
const scanLimit = 64 << 20

// libc finds the C library and its version: glibc by libc.so.6, musl by
// its loader ld-musl-ARCH.so.1. glibc wins when both are there, as on a
// Debian machine with the musl package installed for building.
func (d *detector) libc() {
	if v, ok := d.glibc(); ok {
		d.f[KeyLibc] = LibcGlibc
		d.f.set(KeyLibcVersion, v)
		return
	}
	if v, ok := d.musl(); ok {
		d.f[KeyLibc] = LibcMusl
		d.f.set(KeyLibcVersion, v)
		return
	}
	// The files are somewhere else (NixOS keeps them in /nix/store): on
	// the real root, ask ldd, which both C libraries provide.
	if d.root == "/" && runtime.GOOS == "linux" {
		libc, v := runLdd()
		d.f.set(KeyLibc, libc)
		d.f.set(KeyLibcVersion, v)
	}
}

// glibc returns the version of the first libc.so.6 found and whether one
// was found at all.
func (d *detector) glibc() (version string, found bool) {
	var candidates []string
	for _, dir := range glibcDirs {
		candidates = append(candidates, dir+"/libc.so.6")
	}
	for _, dir := range []string{"lib", "usr/lib"} {
		for _, name := range d.list(dir) {
			if strings.Contains(name, "-linux-gnu") {
				candidates = append(candidates, dir+"/"+name+"/libc.so.6")
			}
		}
	}
	for _, c := range candidates {
		p := d.path(c)
		if !isFile(p) {
			continue
		}
		found = true
		v, err := scanFile(p, scanLimit, 64, glibcRe)
		if err != nil {
			d.errs = append(d.errs, err)
		}
		if v == "" {
			// p has its links resolved, so this sees libc-2.31.so.
			if m := glibcNameRe.FindStringSubmatch(path.Base(p)); m != nil {
				v = m[1]
			}
		}
		if v != "" {
			return v, true
		}
	}
	return "", found
}

// musl returns the version of the first musl loader found and whether one
// was found at all.
func (d *detector) musl() (version string, found bool) {
	for _, dir := range muslDirs {
		for _, name := range d.list(dir) {
			if !strings.HasPrefix(name, "ld-musl-") || !strings.HasSuffix(name, ".so.1") {
				continue
			}
			p := d.path(dir + "/" + name)
			if !isFile(p) {
				continue
			}
			found = true
			v, err := scanFile(p, scanLimit, 32, muslRe)
			if err != nil {
				d.errs = append(d.errs, err)
			}
			if v != "" {
				return v, true
			}
		}
	}
	return "", found
}

// list returns the sorted names in dir under the root; a missing
// directory is empty.
func (d *detector) list(dir string) []string {
	entries, err := os.ReadDir(d.path(dir))
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			d.errs = append(d.errs, fmt.Errorf("list %s: %w", d.path(dir), pathErr(err)))
		}
		return nil
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	return names
}

// isFile reports whether p is a regular file (after links).
func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// scanFile returns the first submatch of re in the first limit bytes of
// the file at p, or "". It reads in chunks and keeps the last overlap
// bytes of each, so a match of at most overlap bytes across two chunks is
// still found.
func scanFile(p string, limit int64, overlap int, re *regexp.Regexp) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", p, pathErr(err))
	}
	defer f.Close()
	return scan(io.LimitReader(f, limit), overlap, re)
}

// scan is scanFile on a reader.
func scan(r io.Reader, overlap int, re *regexp.Regexp) (string, error) {
	chunk := make([]byte, 64<<10)
	var window []byte
	for {
		n, err := io.ReadFull(r, chunk)
		window = append(window, chunk[:n]...)
		if m := re.FindSubmatch(window); m != nil {
			return string(m[1]), nil
		}
		switch {
		case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
			return "", nil
		case err != nil:
			return "", err
		}
		if len(window) > overlap {
			window = append(window[:0], window[len(window)-overlap:]...)
		}
	}
}

// runLdd asks `ldd --version`. musl's ldd answers on stderr with exit
// status 1, so the output counts whatever the status.
func runLdd() (libc, version string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, "ldd", "--version").CombinedOutput()
	if len(out) > 64<<10 {
		out = out[:64<<10]
	}
	return parseLdd(string(out))
}
