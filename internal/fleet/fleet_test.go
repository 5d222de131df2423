package fleet

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/drover-dev/drover/internal/api"
)

func group(name, sel string, apps ...api.DesiredApp) api.Document {
	return api.Document{Kind: api.DocGroup, Group: name, Selector: sel, Apps: apps}
}

func device(id string, apps ...api.DesiredApp) api.Document {
	return api.Document{Kind: api.DocDevice, ID: id, Apps: apps}
}

func app(name, version string) api.DesiredApp { return api.DesiredApp{Name: name, Version: version} }

// summary is "name@version<source" per app, then "error: ..." lines.
func summary(r Result) []string {
	var out []string
	for _, a := range r.Apps {
		n := a.Name
		if a.Instance != "" {
			n += "[" + a.Instance + "]"
		}
		out = append(out, n+"@"+a.Version+"<"+a.Source)
	}
	for _, e := range r.Errors {
		out = append(out, "error: "+e[:strings.Index(e, ";")])
	}
	return out
}

func TestEffective(t *testing.T) {
	prodWeb := map[string]string{"env": "prod", "role": "web"}
	docs := []api.Document{
		group("all", "", app("x:agent", "1.0.0")),
		group("prod", "env=prod", app("x:web", "1.0.0"), app("x:log", "1.0.0")),
		group("prod-web", "env=prod,role=web", app("x:web", "2.0.0")),
		group("web-a", "role=web,env", app("x:cache", "1.0.0")),
		group("web-b", "role in (web),env=prod", app("x:cache", "2.0.0")),
		group("web-c", "role=web,!canary", app("x:log", "1.0.0")),
		device("d-own", app("x:web", "3.0.0"), app("x:cache", "1.0.0")),
		group("empty", "role=empty"),
	}
	set, err := Compile(docs)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		id      string
		labels  map[string]string
		applies bool
		want    []string
		sources []string
	}{
		{"only the catch-all group", "d1", map[string]string{"env": "dev"}, true,
			[]string{"x:agent@1.0.0<group/all"}, []string{"group/all"}},
		{"the most specific group wins per app; equal ties that agree are no error", "d2", map[string]string{"env": "prod"}, true,
			[]string{"x:agent@1.0.0<group/all", "x:web@1.0.0<group/prod", "x:log@1.0.0<group/prod"}, []string{"group/all", "group/prod"}},
		{"equal specificity that disagrees is an error for that app", "d3", prodWeb, true,
			[]string{"x:agent@1.0.0<group/all", "x:web@2.0.0<group/prod-web", "x:log@1.0.0<group/web-c", "error: x:cache: groups web-a and web-b (2 selector terms each) disagree"},
			[]string{"group/all", "group/prod-web", "group/web-c"}},
		{"the device's own document comes first", "d-own", prodWeb, true,
			[]string{"x:web@3.0.0<device/d-own", "x:cache@1.0.0<device/d-own", "x:agent@1.0.0<group/all", "x:log@1.0.0<group/web-c"},
			[]string{"device/d-own", "group/all", "group/web-c"}},
		{"a matching group with no apps applies", "d4", map[string]string{"role": "empty"}, true,
			[]string{"x:agent@1.0.0<group/all"}, []string{"group/all", "group/empty"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := set.Effective(tt.id, tt.labels)
			if r.Applies != tt.applies {
				t.Errorf("Applies = %v, want %v", r.Applies, tt.applies)
			}
			if diff := cmp.Diff(tt.want, summary(r)); diff != "" {
				t.Errorf("Effective(%s) mismatch (-want +got):\n%s", tt.id, diff)
			}
			if diff := cmp.Diff(tt.sources, r.Sources); diff != "" {
				t.Errorf("Sources mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestEffectiveUnset(t *testing.T) {
	set, err := Compile([]api.Document{group("prod", "env=prod", app("x:web", "1.0.0"))})
	if err != nil {
		t.Fatal(err)
	}
	if r := set.Effective("d1", map[string]string{"env": "dev"}); r.Applies || len(r.Apps) != 0 {
		t.Errorf("no document applies: Effective = %+v, want unset", r)
	}
	// An explicit empty device document applies: it removes everything.
	set, _ = set.With([]api.Document{device("d1")}, "")
	if r := set.Effective("d1", nil); !r.Applies {
		t.Errorf("empty device document: Applies = false")
	}
}

func TestPinsAndCutoff(t *testing.T) {
	t1 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	t2 := t1.Add(time.Hour)
	g := group("web", "role=web", app("x:web", "^1.2"), api.DesiredApp{Name: "x:web", Instance: "b", Version: "^1"})
	g.Pinned = []api.Pin{{Name: "x:web", Constraint: "^1.2", Version: "1.2.3"}, {Name: "x:web", Instance: "b", Constraint: "^1", Version: "1.9.0"}}
	g.Set = t2
	d := device("d1", app("x:tool", "1.0.0"))
	d.Set = t1
	set, err := Compile([]api.Document{g, d})
	if err != nil {
		t.Fatal(err)
	}
	r := set.Effective("d1", map[string]string{"role": "web"})
	if diff := cmp.Diff([]string{"x:tool@1.0.0<device/d1", "x:web@1.2.3<group/web", "x:web[b]@1.9.0<group/web"}, summary(r)); diff != "" {
		t.Errorf("pinned versions mismatch (-want +got):\n%s", diff)
	}
	if !r.Cutoff.Equal(t2) {
		t.Errorf("Cutoff = %v, want the newest document's %v", r.Cutoff, t2)
	}
	// Two groups with the same constraint but other pins disagree.
	g2 := group("web2", "role in (web)", app("x:web", "^1.2"))
	g2.Pinned = []api.Pin{{Name: "x:web", Constraint: "^1.2", Version: "1.3.0"}}
	set, _ = set.With([]api.Document{g2}, "")
	set = set.Without([]string{"device/d1"})
	r = set.Effective("d1", map[string]string{"role": "web"})
	if len(r.Errors) != 1 || !strings.Contains(r.Errors[0], "groups web and web2") {
		t.Errorf("pins that differ: Errors = %q, want one naming web and web2", r.Errors)
	}
}

func TestWithStaged(t *testing.T) {
	set, err := Compile([]api.Document{group("web", "role=web", app("x:web", "1.0.0"))})
	if err != nil {
		t.Fatal(err)
	}
	staged, err := set.With([]api.Document{group("web", "role=web", app("x:web", "2.0.0"))}, "rollout/r1")
	if err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{"role": "web"}
	if got := summary(staged.Effective("d1", labels)); !cmp.Equal(got, []string{"x:web@2.0.0<rollout/r1"}) {
		t.Errorf("staged: %v", got)
	}
	if got := summary(set.Effective("d1", labels)); !cmp.Equal(got, []string{"x:web@1.0.0<group/web"}) {
		t.Errorf("With changed the original: %v", got)
	}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		doc  api.Document
		want string
	}{
		{group("Prod", ""), `group "Prod": want a name`},
		{group("-x", ""), `group "-x": want a name`},
		{group("web", "env=prod,,x"), `group web: selector "env=prod,,x": want a label key, got ',' at column 10`},
		{api.Document{Kind: "cluster"}, `unknown kind "cluster"`},
	}
	for _, tt := range tests {
		_, err := Compile([]api.Document{tt.doc})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Compile(%+v) = %v, want %q", tt.doc, err, tt.want)
		}
	}
}

func TestDocumentsOfDerivedSets(t *testing.T) {
	base, err := Compile([]api.Document{device("b"), device("a"), group("g2", ""), group("g1", "x")})
	if err != nil {
		t.Fatal(err)
	}
	keys := func(s *Set) []string {
		var out []string
		for _, d := range s.Documents() {
			out = append(out, d.Key())
		}
		return out
	}
	with, err := base.With([]api.Document{device("c"), group("g0", "")}, "")
	if err != nil {
		t.Fatal(err)
	}
	without := with.Without([]string{"device/a", "group/g2"})
	for _, c := range []struct {
		set  *Set
		want []string
	}{
		{base, []string{"device/a", "device/b", "group/g1", "group/g2"}},
		{with, []string{"device/a", "device/b", "device/c", "group/g0", "group/g1", "group/g2"}},
		{without, []string{"device/b", "device/c", "group/g0", "group/g1"}},
	} {
		if got := keys(c.set); !cmp.Equal(got, c.want) {
			t.Errorf("Documents = %v, want %v", got, c.want)
		}
	}
	if r := without.Effective("a", nil); len(r.Sources) != 1 || r.Sources[0] != "group/g0" {
		t.Errorf("a removed device document still applies: %v", r.Sources)
	}
}

func TestEffectiveInit(t *testing.T) {
	at := time.Date(2026, 12, 2, 1, 0, 0, 0, time.UTC)
	withInit := func(d api.Document, set time.Time, entries ...api.InitEntry) api.Document {
		d.Init, d.Set = entries, set
		return d
	}
	join := api.InitEntry{Name: "com.example:join", Version: "^1", Run: "bin/join"}
	tune := api.InitEntry{Name: "com.example:tune", Version: "2.0.0", Run: "bin/tune"}
	edge := withInit(group("edge", "role=edge", app("com.example:web", "1.0.0")), at, join, tune)
	edge.Pinned = []api.Pin{{Name: "com.example:join", Constraint: "^1", Version: "1.4.0", Init: true}}
	core := withInit(group("core", "", app("com.example:web", "1.0.0")), at.Add(-time.Hour), join)
	later := withInit(group("later", "role=edge"), at.Add(time.Hour))
	for _, tt := range []struct {
		name    string
		docs    []api.Document
		labels  map[string]string
		want    []string // group/name@version:run
		sources []string
		cutoff  time.Time
	}{
		{"groups by name, entries in order, pinned", []api.Document{edge, core}, map[string]string{"role": "edge"},
			[]string{"core/com.example:join@^1:bin/join", "edge/com.example:join@1.4.0:bin/join", "edge/com.example:tune@2.0.0:bin/tune"},
			[]string{"group/core", "group/edge"}, at},
		{"only matching groups", []api.Document{edge, core}, map[string]string{"role": "db"},
			[]string{"core/com.example:join@^1:bin/join"}, []string{"group/core"}, at.Add(-time.Hour)},
		{"an app pin of the same name is not an init pin", []api.Document{func() api.Document {
			d := withInit(group("g", "", app("com.example:join", "^1")), at, join)
			d.Pinned = []api.Pin{{Name: "com.example:join", Constraint: "^1", Version: "1.0.0"}}
			return d
		}()}, nil, []string{"g/com.example:join@^1:bin/join"}, []string{"group/g"}, at},
		{"a group that gives only init entries is a source and sets the cutoff", []api.Document{core, withInit(group("later", "role=edge"), at.Add(time.Hour), tune)},
			map[string]string{"role": "edge"}, []string{"core/com.example:join@^1:bin/join", "later/com.example:tune@2.0.0:bin/tune"},
			[]string{"group/core", "group/later"}, at.Add(time.Hour)},
		{"no init, no apps: no cutoff", []api.Document{later}, map[string]string{"role": "edge"}, nil, []string{"group/later"}, time.Time{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			set, err := Compile(tt.docs)
			if err != nil {
				t.Fatal(err)
			}
			r := set.Effective("d1", tt.labels)
			var got []string
			for _, e := range r.Init {
				got = append(got, e.Group+"/"+e.Name+"@"+e.Version+":"+e.Run)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Init (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.sources, r.Sources); diff != "" {
				t.Errorf("Sources (-want +got):\n%s", diff)
			}
			if !r.Cutoff.Equal(tt.cutoff) {
				t.Errorf("Cutoff = %v, want %v", r.Cutoff, tt.cutoff)
			}
		})
	}
}
