// Package fleet computes a device's effective desired state from the
// stored documents: its own device document first, then, app by app (an
// app is its name plus its instance), the matching group document whose
// selector has the most terms. Two groups of equal specificity that both
// name an app and disagree are an error for that device, never a silent
// pick. The package is pure: documents and labels in, apps and errors out.
package fleet

import (
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/selector"
)

var groupName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// ValidGroupName reports whether name is a valid group document name.
func ValidGroupName(name string) bool { return groupName.MatchString(name) }

// doc is a document compiled once: its selector parsed, its pins indexed.
type doc struct {
	api.Document
	sel    selector.Selector
	source string // EffectiveApp.Source of its apps
	pins   map[appKey]string
	inits  map[string]string // init entry name → pinned version
}

type appKey struct{ name, instance string }

func keyOf(a api.DesiredApp) appKey { return appKey{a.Name, a.Instance} }

// Set is a compiled set of documents. It is never changed once built:
// With and Without make new sets that share what did not change, so
// laying a few documents over thousands costs only the few.
type Set struct {
	base   map[string]*doc // device documents by id, shared between sets
	over   map[string]*doc // device documents laid over base; nil = removed
	groups []*doc          // by name
}

// device returns device id's document, if any.
func (s *Set) device(id string) (*doc, bool) {
	if d, ok := s.over[id]; ok {
		return d, d != nil
	}
	d, ok := s.base[id]
	return d, ok
}

// derived returns a new set sharing s's base with a copy of its overlay.
func (s *Set) derived(extra int) *Set {
	n := &Set{base: s.base, over: make(map[string]*doc, len(s.over)+extra), groups: slices.Clone(s.groups)}
	for k, v := range s.over {
		n.over[k] = v
	}
	return n
}

// Compile parses every group's selector. A bad selector or group name is
// an error naming the document.
func Compile(docs []api.Document) (*Set, error) {
	s := &Set{base: map[string]*doc{}}
	if err := s.add(docs, ""); err != nil {
		return nil, err
	}
	// Everything compiled so far is the shared base.
	for k, v := range s.over {
		s.base[k] = v
	}
	s.over = nil
	return s, nil
}

// With returns a copy of s in which docs replace the documents with the
// same Key (or are added), their apps' Source being source when it is not
// empty. s itself is not changed.
func (s *Set) With(docs []api.Document, source string) (*Set, error) {
	n := s.derived(len(docs))
	return n, n.add(docs, source)
}

// Without returns a copy of s without the documents of these keys.
func (s *Set) Without(keys []string) *Set {
	drop := map[string]bool{}
	for _, k := range keys {
		drop[k] = true
	}
	n := s.derived(len(keys))
	n.groups = nil
	for _, g := range s.groups {
		if !drop[g.Key()] {
			n.groups = append(n.groups, g)
		}
	}
	for _, k := range keys {
		if id, ok := strings.CutPrefix(k, api.DocDevice+"/"); ok {
			n.over[id] = nil
		}
	}
	return n
}

func (s *Set) add(docs []api.Document, source string) error {
	for _, d := range docs {
		c := &doc{Document: d, source: source, pins: map[appKey]string{}}
		if c.source == "" {
			c.source = d.Key()
		}
		for _, p := range d.Pinned {
			if p.Init {
				if c.inits == nil {
					c.inits = map[string]string{}
				}
				c.inits[p.Name] = p.Version
				continue
			}
			c.pins[appKey{p.Name, p.Instance}] = p.Version
		}
		switch d.Kind {
		case api.DocDevice:
			if s.over == nil {
				s.over = map[string]*doc{}
			}
			s.over[d.ID] = c
		case api.DocGroup:
			if !ValidGroupName(d.Group) {
				return fmt.Errorf("group %q: want a name of lowercase letters, digits and '-', at most 63 long", d.Group)
			}
			sel, err := selector.Parse(d.Selector)
			if err != nil {
				return fmt.Errorf("group %s: %w", d.Group, err)
			}
			c.sel = sel
			i := sort.Search(len(s.groups), func(i int) bool { return s.groups[i].Group >= d.Group })
			if i < len(s.groups) && s.groups[i].Group == d.Group {
				s.groups[i] = c
			} else {
				s.groups = slices.Insert(s.groups, i, c)
			}
		default:
			return fmt.Errorf("document %q: unknown kind %q", d.Key(), d.Kind)
		}
	}
	return nil
}

// Documents returns the documents of s: devices by id, then groups by name.
func (s *Set) Documents() []api.Document {
	var ids []string
	for id := range s.base {
		if _, ok := s.over[id]; !ok {
			ids = append(ids, id)
		}
	}
	for id, d := range s.over {
		if d != nil {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	out := make([]api.Document, 0, len(ids)+len(s.groups))
	for _, id := range ids {
		d, _ := s.device(id)
		out = append(out, d.Document)
	}
	for _, g := range s.groups {
		out = append(out, g.Document)
	}
	return out
}

// Result is a device's effective desired state.
type Result struct {
	// Applies is false when no document applies to the device (no own
	// document, no matching group): its state is unset and the agent
	// leaves it alone.
	Applies bool
	// Apps are the effective apps: the device document's in its order,
	// then the groups' by group name and entry order. Version is the
	// pinned exact version when the document pinned the entry.
	Apps []api.EffectiveApp
	// Errors name each app two equally specific groups disagree on.
	Errors []string
	// Sources are the keys of the documents that gave at least one app
	// (or, for a document with no apps, that applies), sorted.
	Sources []string
	// Init are the init entries of the matching groups: groups by name,
	// each group's entries in its order, Version pinned.
	Init []Init
	// Cutoff is the newest Set time of the documents that gave apps or
	// init entries: only
	// builds pushed at or before it are considered when resolving, so a
	// later push reaches no device by itself. Zero means no bound.
	Cutoff time.Time
}

// Matching returns the group documents whose selector matches labels.
func (s *Set) Matching(labels map[string]string) []api.Document {
	var out []api.Document
	for _, g := range s.groups {
		if g.sel.Matches(labels) {
			out = append(out, g.Document)
		}
	}
	return out
}

// Effective computes device id's effective desired state.
func (s *Set) Effective(id string, labels map[string]string) Result {
	var r Result
	sources := map[string]bool{}
	taken := map[appKey]bool{}
	use := func(d *doc, a api.DesiredApp) {
		if v, ok := d.pins[keyOf(a)]; ok {
			a.Version = v
		}
		r.Apps = append(r.Apps, api.EffectiveApp{DesiredApp: a, Source: d.source})
		sources[d.Key()] = true
		if d.Set.After(r.Cutoff) {
			r.Cutoff = d.Set
		}
	}
	if d, ok := s.device(id); ok {
		r.Applies = true
		sources[d.Key()] = true
		if d.Set.After(r.Cutoff) {
			r.Cutoff = d.Set
		}
		for _, a := range d.Apps {
			taken[keyOf(a)] = true
			use(d, a)
		}
	}
	var matching []*doc
	for _, g := range s.groups {
		if g.sel.Matches(labels) {
			matching = append(matching, g)
			r.Applies = true
			if len(g.Apps) == 0 || len(g.Init) > 0 {
				sources[g.Key()] = true
			}
			if len(g.Init) > 0 && g.Set.After(r.Cutoff) {
				r.Cutoff = g.Set
			}
			for _, e := range g.Init {
				if v, ok := g.inits[e.Name]; ok {
					e.Version = v
				}
				r.Init = append(r.Init, Init{Group: g.Group, InitEntry: e})
			}
		}
	}
	// Candidates per app, in group name order.
	type cand struct {
		d *doc
		a api.DesiredApp
	}
	var order []appKey
	cands := map[appKey][]cand{}
	for _, g := range matching {
		for _, a := range g.Apps {
			k := keyOf(a)
			if taken[k] {
				continue
			}
			if _, ok := cands[k]; !ok {
				order = append(order, k)
			}
			cands[k] = append(cands[k], cand{g, a})
		}
	}
	for _, k := range order {
		cs := cands[k]
		best := 0
		for _, c := range cs {
			best = max(best, c.d.sel.Terms())
		}
		var top []cand
		for _, c := range cs {
			if c.d.sel.Terms() == best {
				top = append(top, c)
			}
		}
		agree := true
		for _, c := range top[1:] {
			if !same(top[0].d, top[0].a, c.d, c.a) {
				agree = false
			}
		}
		if !agree {
			var names []string
			for _, c := range top {
				names = append(names, c.d.Group)
			}
			r.Errors = append(r.Errors, fmt.Sprintf("%s: groups %s (%d selector terms each) disagree; give the device its own entry or make one group more specific",
				display(k), strings.Join(names, " and "), best))
			continue
		}
		use(top[0].d, top[0].a)
	}
	r.Sources = make([]string, 0, len(sources))
	for k := range sources {
		r.Sources = append(r.Sources, k)
	}
	sort.Strings(r.Sources)
	return r
}

// same reports whether two groups' entries for one app agree: the same
// entry and the same pinned version.
func same(d1 *doc, a1 api.DesiredApp, d2 *doc, a2 api.DesiredApp) bool {
	v1, v2 := a1.Version, a2.Version
	if p, ok := d1.pins[keyOf(a1)]; ok {
		v1 = p
	}
	if p, ok := d2.pins[keyOf(a2)]; ok {
		v2 = p
	}
	a1.Version, a2.Version = v1, v2
	return reflect.DeepEqual(normal(a1), normal(a2))
}

func normal(a api.DesiredApp) api.DesiredApp {
	a.Tags = slices.Clone(a.Tags)
	slices.Sort(a.Tags)
	if len(a.Tags) == 0 {
		a.Tags = nil
	}
	if len(a.Params) == 0 {
		a.Params = nil
	}
	return a
}

func display(k appKey) string {
	if k.instance != "" {
		return k.name + "[" + k.instance + "]"
	}
	return k.name
}

// Init is one init entry of a device's effective state, with its group.
type Init struct {
	Group string
	api.InitEntry
}

// DesiredApps returns the effective apps as desired-state entries, for the
// resolver.
func (r Result) DesiredApps() []api.DesiredApp {
	out := make([]api.DesiredApp, len(r.Apps))
	for i, a := range r.Apps {
		out[i] = a.DesiredApp
	}
	return out
}
