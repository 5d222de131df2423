package api

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// idRe is what a device id, and every certificate name, may look like:
// the name becomes a file name, a URL path element and a column of
// `device ls`, so no slashes, no leading dot, no spaces or control
// characters, at most 63 characters.
var idRe = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$`)

// ValidDeviceID reports whether id is a valid device id. It is the one
// rule for device ids and certificate names (server, device and admin):
// every route, the state set, certificate issue and authentication use it.
func ValidDeviceID(id string) bool { return idRe.MatchString(id) }

// ValidDigest reports whether d is a digest as drover writes them: the
// SHA-256 of the content as 64 lowercase hex characters. It is the one
// check of that format (blobs, manifests, scripts, templates, states).
func ValidDigest(d string) bool {
	if len(d) != 64 {
		return false
	}
	for i := 0; i < len(d); i++ {
		c := d[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// NormalizeTags returns tags sorted and without duplicates, as a new
// non-nil slice: the canonical form of a tag set (a build's, a device's,
// a desired-state entry's), so that order never changes a digest or a
// match.
func NormalizeTags(tags []string) []string {
	out := slices.Clone(tags)
	if out == nil {
		out = []string{}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// ParseSize parses a byte count: a whole number of bytes, or a number
// with a unit, kB, MB, GB (powers of 1000; k, m, g alone too) or KiB,
// MiB, GiB (powers of 1024), case-insensitive: "10MB" is 10,000,000
// bytes. It is the one size syntax of drover.yaml, the agent's flags and
// drover-bench.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	lower := strings.ToLower(t)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{
		{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30},
		{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"k", 1e3}, {"m", 1e6}, {"g", 1e9}, {"b", 1},
	} {
		if strings.HasSuffix(lower, u.suffix) {
			mult, t = u.mult, strings.TrimSpace(t[:len(t)-len(u.suffix)])
			break
		}
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || !(f >= 0 && f*float64(mult) <= 1<<50) { // NaN fails too
		return 0, fmt.Errorf("size %q: want a number of bytes like 10MB, 1.5GiB or 4096", s)
	}
	return int64(f * float64(mult)), nil
}
