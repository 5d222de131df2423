package resolve

import "github.com/Masterminds/semver/v3"

// Pin returns the newest version of package name that version (an entry's
// version field: exact, a constraint, or "" / "latest") allows among
// builds, regardless of tags: what a document's constraint is pinned to
// when it is set. exact is true when version already names one version
// (nothing to pin).
func Pin(name, version string, builds []Candidate) (pinned string, exact bool, err error) {
	s, err := parseSpec(version)
	if err != nil {
		return "", false, errorf(ErrInvalid, name, "%s: %v", name, err)
	}
	if s.exact != nil {
		return s.exact.String(), true, nil
	}
	versions, ok := newIndex(builds)[name]
	if !ok {
		return "", false, errorf(ErrUnknownPackage, name, "%s: unknown package", name)
	}
	for _, v := range versions {
		if s.allows(v.v) {
			return v.v.String(), false, nil
		}
	}
	return "", false, errorf(ErrNoVersion, name, "%s: no version matches %q (versions: %s)", name, s.text, versionList(versions))
}

// Newer returns the versions of name newer than pinned that version
// allows among builds, newest first: what a new state set of the same
// document would move to.
func Newer(name, version, pinned string, builds []Candidate) []string {
	s, err := parseSpec(version)
	if err != nil || s.exact != nil {
		return nil
	}
	p, err := semver.StrictNewVersion(pinned)
	if err != nil {
		return nil
	}
	var out []string
	for _, v := range newIndex(builds)[name] {
		if v.v.GreaterThan(p) && s.allows(v.v) {
			out = append(out, v.v.String())
		}
	}
	return out
}
