package api

import (
	"regexp"
	"slices"
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
