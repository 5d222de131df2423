// Package resolve turns a device's desired state into the exact builds the
// device must have (DESIGN §2 "Tag match", §8 "Where the work happens"): each
// entry's version or constraint becomes the newest version that has a build
// fitting the device, tag matching picks one build of that version, and the
// dependencies of the chosen builds are added, dependencies first.
//
// The server resolves because it knows every package and can refuse an
// impossible state when the operator sets it; the agent only plans against
// its own disk (package plan). This package is pure logic: callers pass in
// what they know and store the answer.
package resolve

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/Masterminds/semver/v3"

	"github.com/drover-dev/drover/internal/api"
)

// Candidate is one pushed build the resolver may choose.
type Candidate struct {
	Name    string // group:name
	Version string // semantic version; a build whose version does not parse is never chosen
	Tags    []string
	Digest  string // manifest digest, the build's identity
	Depends []api.Dependency
}

// maxRounds bounds the search for dependency versions; real graphs settle
// in two or three rounds.
const maxRounds = 100

// maxVersionsShown bounds the versions listed in a "no version" message.
const maxVersionsShown = 8

// Resolve picks, for each desired app, the newest version fitting its
// constraint that has a build fitting the device, then adds the dependency
// closure and computes the digest. A build fits when its tags are all in
// deviceTags ∪ the entry's tags; the fitting build with most tags wins.
// Apps come out dependencies first, otherwise in desired order.
//
// Every error is an *Error whose Kind is one of the Err kinds.
func Resolve(device string, deviceTags []string, apps []api.DesiredApp, builds []Candidate) (*api.Resolved, error) {
	specs, err := check(apps)
	if err != nil {
		return nil, err
	}
	r := &resolver{device: device, deviceTags: deviceTags, idx: newIndex(builds)}

	explicit := make([]*node, len(apps))
	byName := map[string][]*node{}
	for i, a := range apps {
		n, err := r.explicit(a, specs[i])
		if err != nil {
			return nil, err
		}
		explicit[i] = n
		byName[n.name] = append(byName[n.name], n)
	}
	deps, err := r.closure(explicit, byName)
	if err != nil {
		return nil, err
	}
	ordered, err := order(explicit, byName, deps)
	if err != nil {
		return nil, err
	}

	res := &api.Resolved{Device: device, Apps: make([]api.ResolvedApp, 0, len(ordered))}
	for _, n := range ordered {
		res.Apps = append(res.Apps, api.ResolvedApp{
			Name:       n.name,
			Version:    n.version,
			Digest:     n.build.Digest,
			Tags:       n.tags,
			Instance:   n.instance,
			Params:     maps.Clone(n.params),
			Purge:      n.purge,
			Dependency: n.dep,
			BuildTags:  n.build.Tags,
		})
	}
	res.Digest = Digest(res.Apps)
	return res, nil
}

// Validate checks a desired state for a device whose tags are not known
// yet: every entry is well formed, names a pushed package, and some version
// of it matches the entry's constraint. Tags and dependencies are left to
// Resolve, once the device has reported.
func Validate(apps []api.DesiredApp, builds []Candidate) error {
	specs, err := check(apps)
	if err != nil {
		return err
	}
	idx := newIndex(builds)
	for i, a := range apps {
		versions, ok := idx[a.Name]
		if !ok {
			return errorf(ErrUnknownPackage, a.Name, "%s: unknown package", a.Name)
		}
		if !slices.ContainsFunc(versions, func(v *version) bool { return specs[i].allows(v.v) }) {
			return errorf(ErrNoVersion, a.Name, "%s: no version matches %q (versions: %s)",
				a.Name, specs[i].text, versionList(versions))
		}
	}
	return nil
}

// check validates the entries themselves and parses their versions.
func check(apps []api.DesiredApp) ([]spec, error) {
	specs := make([]spec, len(apps))
	seen := map[[2]string]bool{}
	for i, a := range apps {
		if _, _, err := api.ParsePackageName(a.Name); err != nil {
			return nil, errorf(ErrInvalid, a.Name, "desired app %d: %v", i+1, err)
		}
		who := display(a.Name, a.Instance)
		if a.Instance != "" && !api.ValidName(a.Instance) {
			return nil, errorf(ErrInvalid, a.Name, "%s: instance %q: want letters, digits, '.', '-' and '_'", who, a.Instance)
		}
		key := [2]string{a.Name, a.Instance}
		if seen[key] {
			return nil, errorf(ErrInvalid, a.Name, "%s: listed twice; give each entry its own instance", who)
		}
		seen[key] = true
		for _, t := range a.Tags {
			if !api.ValidTag(t) {
				return nil, errorf(ErrInvalid, a.Name, "%s: tag %q: want letters, digits, '.', '_', '+' and '-'", who, t)
			}
		}
		if _, err := json.Marshal(a.Params); err != nil {
			return nil, errorf(ErrInvalid, a.Name, "%s: params: %v", who, err)
		}
		s, err := parseSpec(a.Version)
		if err != nil {
			return nil, errorf(ErrInvalid, a.Name, "%s: %v", who, err)
		}
		specs[i] = s
	}
	return specs, nil
}

// display names an entry in messages: group:name, with [instance] when set.
func display(name, instance string) string {
	if instance == "" {
		return name
	}
	return name + "[" + instance + "]"
}

// version is one version of a package and its builds.
type version struct {
	v      *semver.Version
	builds []Candidate
}

// index maps a package name to its versions, newest first.
type index map[string][]*version

func newIndex(builds []Candidate) index {
	byKey := map[string]map[string]*version{}
	for _, b := range builds {
		v, err := semver.StrictNewVersion(b.Version)
		if err != nil {
			// The repository refuses such builds at push; one that
			// slipped through must not stop every device from resolving.
			continue
		}
		vs := byKey[b.Name]
		if vs == nil {
			vs = map[string]*version{}
			byKey[b.Name] = vs
		}
		key := v.String()
		if vs[key] == nil {
			vs[key] = &version{v: v}
		}
		// The same build listed twice is one build, not an ambiguity.
		if !slices.ContainsFunc(vs[key].builds, func(c Candidate) bool { return c.Digest == b.Digest && b.Digest != "" }) {
			vs[key].builds = append(vs[key].builds, b)
		}
	}
	idx := index{}
	for name, vs := range byKey {
		list := slices.Collect(maps.Values(vs))
		slices.SortFunc(list, func(a, b *version) int {
			if c := b.v.Compare(a.v); c != 0 {
				return c
			}
			// Equal precedence, other build metadata: still a fixed order.
			return strings.Compare(b.v.String(), a.v.String())
		})
		idx[name] = list
	}
	return idx
}

// versionList prints the newest versions for a "no version" message.
func versionList(versions []*version) string {
	var out []string
	for i, v := range versions {
		if i == maxVersionsShown {
			out = append(out, "...")
			break
		}
		out = append(out, v.v.String())
	}
	return strings.Join(out, ", ")
}

// node is one app of the resolved state: an explicit entry, or a package
// only there because another needs it.
type node struct {
	name     string
	instance string
	version  string
	v        *semver.Version
	build    Candidate
	tags     []string // entry tags; for a dependency, its dependents' tags
	params   map[string]any
	purge    bool
	dep      bool
}

// coord names the chosen version in messages.
func (n *node) coord() string {
	return display(n.name, n.instance) + ":" + n.version
}

type resolver struct {
	device     string
	deviceTags []string
	idx        index
}

// deviceName names the device in messages.
func (r *resolver) deviceName() string {
	if r.device == "" {
		return "the device"
	}
	return r.device
}

// explicit resolves one desired-state entry.
func (r *resolver) explicit(a api.DesiredApp, s spec) (*node, error) {
	versions, ok := r.idx[a.Name]
	if !ok {
		return nil, errorf(ErrUnknownPackage, a.Name, "%s: unknown package", display(a.Name, a.Instance))
	}
	tags := api.NormalizeTags(a.Tags)
	v, b, found, err := r.choose(a.Name, s.allows, tagSet(r.deviceTags, tags), "")
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, errorf(ErrNoVersion, a.Name, "%s: no version matches %q (versions: %s)",
			display(a.Name, a.Instance), s.text, versionList(versions))
	}
	return &node{
		name: a.Name, instance: a.Instance, version: v.v.String(), v: v.v, build: b,
		tags: tags, params: a.Params, purge: a.Purge,
	}, nil
}

// choose picks the newest version of name that allows accepts and that
// has a build fitting have. found is false when no version is accepted at
// all. When accepted versions exist but none has a fitting build, the
// error is about the newest of them. neededBy, when set, ends messages.
func (r *resolver) choose(name string, allows func(*semver.Version) bool, have map[string]bool, neededBy string) (*version, Candidate, bool, error) {
	var newest *version
	for _, v := range r.idx[name] {
		if !allows(v.v) {
			continue
		}
		if newest == nil {
			newest = v
		}
		best := fitting(v.builds, have)
		switch {
		case len(best) == 1:
			return v, best[0], true, nil
		case len(best) > 1:
			// A tie among fitting builds is the operator's to settle;
			// falling back to an older version would be a silent pick too.
			sets := make([]string, len(best))
			for i, b := range best {
				sets[i] = tagList(b.Tags)
			}
			slices.Sort(sets)
			return nil, Candidate{}, true, errorf(ErrAmbiguous, name,
				"%s:%s: ambiguous: builds %s all fit %s with %d tags each; push a more specific build or remove one%s",
				name, v.v, joinAnd(sets), r.deviceName(), len(api.NormalizeTags(best[0].Tags)), neededBy)
		}
	}
	if newest == nil {
		return nil, Candidate{}, false, nil
	}
	return nil, Candidate{}, true, errorf(ErrNoFit, name, "%s:%s: no build fits %s: %s%s",
		name, newest.v, r.deviceName(), closest(newest.builds, have), neededBy)
}

// fitting returns the fitting builds with the most tags.
func fitting(builds []Candidate, have map[string]bool) []Candidate {
	var best []Candidate
	most := -1
	for _, b := range builds {
		if len(missingFrom(b.Tags, have)) > 0 {
			continue
		}
		n := len(api.NormalizeTags(b.Tags))
		switch {
		case n > most:
			most, best = n, []Candidate{b}
		case n == most:
			best = append(best, b)
		}
	}
	return best
}

// closest names the missing tags of the builds that miss fewest.
func closest(builds []Candidate, have map[string]bool) string {
	var lines []string
	fewest := -1
	for _, b := range builds {
		m := missingFrom(b.Tags, have)
		line := fmt.Sprintf("missing tags %s (build %s)", strings.Join(m, ","), tagList(b.Tags))
		switch {
		case fewest < 0 || len(m) < fewest:
			fewest, lines = len(m), []string{line}
		case len(m) == fewest:
			lines = append(lines, line)
		}
	}
	slices.Sort(lines)
	return strings.Join(slices.Compact(lines), "; ")
}

// joinAnd joins "a", "a and b", "a, b and c".
func joinAnd(s []string) string {
	if len(s) <= 1 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " and " + s[len(s)-1]
}

// need is one dependent's request for a package.
type need struct {
	from *node
	spec spec
}

// round is what one walk over the chosen apps found.
type round struct {
	names  []string          // needed packages, in discovery order
	needs  map[string][]need // who needs each, with which constraint
	chosen map[string]*node  // dependency-only packages chosen from needs
	errs   []error           // in discovery order
}

// closure adds the dependencies of the explicit apps and returns the
// dependency-only apps. A package several dependents need gets the newest
// version that satisfies them all. Choosing a version changes which
// dependencies its build declares, so the choice is repeated until it
// stops changing; this settles in a round or two for real package graphs
// and is deliberately not a full backtracking solver.
func (r *resolver) closure(explicit []*node, byName map[string][]*node) (map[string]*node, error) {
	chosen := map[string]*node{}
	seen := map[string]bool{}
	for range maxRounds {
		rd := r.walk(explicit, byName, chosen)
		if sameChoice(chosen, rd.chosen) {
			if len(rd.errs) > 0 {
				return nil, rd.errs[0]
			}
			if err := checkExplicit(rd, byName); err != nil {
				return nil, err
			}
			return chosen, nil
		}
		sig := signature(rd.chosen)
		if seen[sig] {
			break
		}
		seen[sig] = true
		chosen = rd.chosen
	}
	names := slices.Sorted(maps.Keys(chosen))
	return nil, errorf(ErrDependency, strings.Join(names[:min(1, len(names))], ""),
		"dependency versions do not settle (%s): each choice asks for another; pin versions in the desired state",
		strings.Join(names, ", "))
}

// walk follows the dependencies of the explicit apps through the chosen
// dependency-only apps and chooses every needed package anew.
func (r *resolver) walk(explicit []*node, byName map[string][]*node, chosen map[string]*node) round {
	rd := round{needs: map[string][]need{}, chosen: map[string]*node{}}
	tags := map[string]map[string]bool{}
	visited := map[*node]bool{}
	var visit func(n *node)
	visit = func(n *node) {
		if visited[n] {
			return
		}
		visited[n] = true
		for _, d := range n.build.Depends {
			if _, _, err := api.ParsePackageName(d.Name); err != nil {
				rd.errs = append(rd.errs, errorf(ErrInvalid, n.name, "%s: dependency: %v", n.coord(), err))
				continue
			}
			s, err := parseSpec(d.Version)
			if err != nil {
				rd.errs = append(rd.errs, errorf(ErrInvalid, n.name, "%s: dependency %s: %v", n.coord(), d.Name, err))
				continue
			}
			if _, ok := rd.needs[d.Name]; !ok {
				rd.names = append(rd.names, d.Name)
				tags[d.Name] = map[string]bool{}
			}
			rd.needs[d.Name] = append(rd.needs[d.Name], need{from: n, spec: s})
			if len(byName[d.Name]) > 0 {
				// Desired explicitly: the entry's own choice must do
				// (checkExplicit); it is walked as a root.
				continue
			}
			for _, t := range n.tags {
				tags[d.Name][t] = true
			}
			if c := chosen[d.Name]; c != nil {
				visit(c)
			}
		}
	}
	for _, n := range explicit {
		visit(n)
	}
	for _, name := range rd.names {
		if len(byName[name]) > 0 {
			continue
		}
		n, err := r.dependency(name, rd.needs[name], api.NormalizeTags(slices.Collect(maps.Keys(tags[name]))))
		if err != nil {
			rd.errs = append(rd.errs, err)
			continue
		}
		rd.chosen[name] = n
	}
	return rd
}

// dependency chooses a dependency-only package for its dependents.
func (r *resolver) dependency(name string, needs []need, tags []string) (*node, error) {
	first := needs[0].from.coord()
	versions, ok := r.idx[name]
	if !ok {
		return nil, errorf(ErrUnknownPackage, name, "%s: unknown package, needed by %s", name, first)
	}
	allows := func(v *semver.Version) bool {
		for _, nd := range needs {
			if !nd.spec.allows(v) {
				return false
			}
		}
		return true
	}
	v, b, found, err := r.choose(name, allows, tagSet(r.deviceTags, tags), " (needed by "+first+")")
	if err != nil {
		return nil, err
	}
	if !found {
		// One constraint nothing satisfies is a missing version; several
		// that each could be met but not together are a conflict.
		var asks []string
		for _, nd := range needs {
			if !slices.ContainsFunc(versions, func(v *version) bool { return nd.spec.allows(v.v) }) {
				return nil, errorf(ErrNoVersion, name, "%s: no version matches %q, needed by %s (versions: %s)",
					name, nd.spec.text, nd.from.coord(), versionList(versions))
			}
			asks = append(asks, fmt.Sprintf("%s needs %q", nd.from.coord(), nd.spec.text))
		}
		return nil, errorf(ErrDependency, name, "%s: no version satisfies every dependent: %s",
			name, strings.Join(asks, ", "))
	}
	return &node{name: name, version: v.v.String(), v: v.v, build: b, tags: tags, dep: true}, nil
}

// checkExplicit checks that each package desired explicitly satisfies what
// its dependents ask of it.
func checkExplicit(rd round, byName map[string][]*node) error {
	for _, name := range rd.names {
		for _, m := range byName[name] {
			for _, nd := range rd.needs[name] {
				if !nd.spec.allows(m.v) {
					return errorf(ErrDependency, name, "%s: %s needs %s %q, but the desired state picks %s",
						name, nd.from.coord(), name, nd.spec.text, m.coord())
				}
			}
		}
	}
	return nil
}

// sameChoice reports whether two rounds chose the same builds with the
// same tags.
func sameChoice(a, b map[string]*node) bool {
	if len(a) != len(b) {
		return false
	}
	for name, x := range a {
		y := b[name]
		if y == nil || x.version != y.version || x.build.Digest != y.build.Digest || !slices.Equal(x.tags, y.tags) {
			return false
		}
	}
	return true
}

// signature identifies a round's choices, to notice a repeat.
func signature(chosen map[string]*node) string {
	var sb strings.Builder
	for _, name := range slices.Sorted(maps.Keys(chosen)) {
		n := chosen[name]
		fmt.Fprintf(&sb, "%s:%s#%s%v;", name, n.version, n.build.Digest, n.tags)
	}
	return sb.String()
}

// order sorts the apps dependencies first. A depth-first walk from the
// explicit entries in desired order pulls each dependency forward just
// before its first dependent and leaves everything else in desired order.
func order(explicit []*node, byName map[string][]*node, deps map[string]*node) ([]*node, error) {
	const (
		unseen = iota
		active
		done
	)
	state := map[*node]int{}
	var stack, out []*node
	var visit func(n *node) error
	visit = func(n *node) error {
		switch state[n] {
		case done:
			return nil
		case active:
			i := slices.Index(stack, n)
			path := make([]string, 0, len(stack)-i+1)
			for _, s := range stack[i:] {
				path = append(path, s.coord())
			}
			path = append(path, n.coord())
			return errorf(ErrDependency, n.name, "dependency cycle: %s", strings.Join(path, " -> "))
		}
		state[n] = active
		stack = append(stack, n)
		for _, d := range n.build.Depends {
			targets := byName[d.Name]
			if len(targets) == 0 && deps[d.Name] != nil {
				targets = []*node{deps[d.Name]}
			}
			for _, t := range targets {
				if err := visit(t); err != nil {
					return err
				}
			}
		}
		stack = stack[:len(stack)-1]
		state[n] = done
		out = append(out, n)
		return nil
	}
	for _, n := range explicit {
		if err := visit(n); err != nil {
			return nil, err
		}
	}
	return out, nil
}
