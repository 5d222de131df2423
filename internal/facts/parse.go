package facts

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// readLimited reads r to its end, or fails if it holds more than limit
// bytes: a fact file that large is not what we think it is.
func readLimited(r io.Reader, limit int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("larger than %d bytes", limit)
	}
	return data, nil
}

// parseOSRelease parses os-release(5): KEY=VALUE lines, the value bare or
// in single or double quotes, with shell escapes inside double quotes.
// Comments, blank lines and lines that are not assignments are skipped.
func parseOSRelease(s string) map[string]string {
	kv := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok || key == "" || strings.ContainsAny(key, " \t\"'") {
			continue
		}
		kv[key] = unquote(value)
	}
	return kv
}

// unquote undoes the shell quoting os-release allows.
func unquote(v string) string {
	if len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\'' {
		return v[1 : len(v)-1]
	}
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		v = v[1 : len(v)-1]
		var b strings.Builder
		for i := 0; i < len(v); i++ {
			if v[i] == '\\' && i+1 < len(v) && strings.IndexByte("\\\"$`", v[i+1]) >= 0 {
				i++
			}
			b.WriteByte(v[i])
		}
		return b.String()
	}
	return v
}

// parseMemTotal returns MemTotal of /proc/meminfo in bytes.
func parseMemTotal(s string) (uint64, bool) {
	for line := range strings.Lines(s) {
		rest, ok := strings.CutPrefix(line, "MemTotal:")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			return 0, false
		}
		n, err := strconv.ParseUint(fields[0], 10, 64)
		if err != nil {
			return 0, false
		}
		unit := uint64(1)
		if len(fields) > 1 {
			switch strings.ToLower(fields[1]) {
			case "kb":
				unit = 1024
			case "mb":
				unit = 1024 * 1024
			default:
				return 0, false
			}
		}
		if n > ^uint64(0)/unit {
			return 0, false
		}
		return n * unit, true
	}
	return 0, false
}

// parseVersion returns the dotted version number at the start of s
// ("2.36." gives 2.36, "1.2.4-r1" gives 1.2.4), or "" if s does not start
// with digit.digit.
func parseVersion(s string) string {
	end := 0
	for end < len(s) && (s[end] >= '0' && s[end] <= '9' || s[end] == '.') {
		end++
	}
	v := strings.Trim(s[:end], ".")
	if !strings.Contains(v, ".") || strings.Contains(v, "..") || len(v) > 16 {
		return ""
	}
	return v
}

// parseLdd reads the output of `ldd --version`, which glibc and musl both
// answer: "ldd (Debian GLIBC 2.36-9+deb12u14) 2.36" or "musl libc
// (x86_64)\nVersion 1.2.4".
func parseLdd(out string) (libc, version string) {
	switch {
	case strings.Contains(out, "musl"):
		for line := range strings.Lines(out) {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Version "); ok {
				return LibcMusl, parseVersion(v)
			}
		}
		return LibcMusl, ""
	case strings.Contains(out, "GLIBC") || strings.Contains(out, "GNU libc") || strings.Contains(out, "GNU C Library"):
		first, _, _ := strings.Cut(out, "\n")
		fields := strings.Fields(first)
		if len(fields) == 0 {
			return LibcGlibc, ""
		}
		return LibcGlibc, parseVersion(fields[len(fields)-1])
	}
	return "", ""
}
