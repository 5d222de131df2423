package resolve

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/Masterminds/semver/v3"

	"github.com/drover-dev/drover/internal/api"
)

// Match reports whether a build with buildTags fits a device that has the
// tags in have: every build tag must be in have (DESIGN §2). Otherwise it
// returns the build tags that have lacks, sorted and once each.
func Match(buildTags, have []string) (ok bool, missing []string) {
	missing = missingFrom(buildTags, tagSet(have))
	return len(missing) == 0, missing
}

// tagSet returns the tags as a set.
func tagSet(tags ...[]string) map[string]bool {
	set := map[string]bool{}
	for _, ts := range tags {
		for _, t := range ts {
			set[t] = true
		}
	}
	return set
}

// missingFrom returns the tags of build not in have, sorted, once each;
// nil when the build fits.
func missingFrom(build []string, have map[string]bool) []string {
	var missing []string
	for _, t := range build {
		if !have[t] {
			missing = append(missing, t)
		}
	}
	slices.Sort(missing)
	return slices.Compact(missing)
}

// tagList prints a build's tag set for messages.
func tagList(tags []string) string {
	if len(tags) == 0 {
		return "(no tags)"
	}
	return strings.Join(api.NormalizeTags(tags), ",")
}

// Digest returns the hex SHA-256 of the canonical JSON encoding of apps:
// the same apps always give the same digest, and any change to a field
// gives another. Agents compare it to tell whether their state is current.
func Digest(apps []api.ResolvedApp) string {
	// nil and empty mean the same here; encode both alike so the digest
	// depends on the content only.
	norm := make([]api.ResolvedApp, len(apps))
	for i, a := range apps {
		if a.Tags == nil {
			a.Tags = []string{}
		}
		norm[i] = a
	}
	b, err := json.Marshal(norm)
	if err != nil {
		// Only params JSON cannot hold (NaN, functions) get here, and
		// Resolve refuses those; still answer deterministically (fmt
		// prints maps sorted by key) rather than fail.
		b = fmt.Appendf(nil, "%#v", norm)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// maxSpecLen bounds the version text of an entry or a dependency: a
// constraint longer than this is a mistake, not a need.
const maxSpecLen = 256

// spec is a parsed version request: "" or "latest" (newest release), an
// exact version, or a semver constraint.
type spec struct {
	text  string
	exact *semver.Version
	c     *semver.Constraints
}

// parseSpec parses the version field of a desired-state entry or a
// dependency.
func parseSpec(s string) (spec, error) {
	t := strings.TrimSpace(s)
	if t == "" || t == "latest" {
		return spec{text: "latest"}, nil
	}
	if len(t) > maxSpecLen {
		return spec{}, fmt.Errorf("version %.20q...: longer than %d characters", t, maxSpecLen)
	}
	if v, err := semver.StrictNewVersion(t); err == nil {
		return spec{text: t, exact: v}, nil
	}
	c, err := semver.NewConstraint(t)
	if err != nil {
		return spec{}, fmt.Errorf("version %q: not a version or constraint (like 1.2.0, ^1.2, ~1.2, >=1.0.0, <2.0.0)", t)
	}
	return spec{text: t, c: c}, nil
}

// allows reports whether v is acceptable. Like semver constraints, "latest"
// skips prereleases; an exact version means exactly that version,
// build metadata included.
func (s spec) allows(v *semver.Version) bool {
	switch {
	case s.exact != nil:
		return v.String() == s.exact.String()
	case s.c != nil:
		return s.c.Check(v)
	default:
		return v.Prerelease() == ""
	}
}
