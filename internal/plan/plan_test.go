package plan

import (
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/param"
)

func want(name, instance, version, digest string) api.ResolvedApp {
	return api.ResolvedApp{Name: name, Instance: instance, Version: version, Digest: digest, Tags: []string{}}
}

func have(name, instance, version, digest string) api.InstalledApp {
	return api.InstalledApp{Name: name, Instance: instance, Version: version, Digest: digest}
}

// deps is a dependsOf built from a table of package name -> dependencies.
func deps(table map[string][]string) func(api.InstalledApp) []string {
	return func(a api.InstalledApp) []string { return table[a.Name] }
}

func TestMake(t *testing.T) {
	tests := []struct {
		name      string
		resolved  *api.Resolved
		installed []api.InstalledApp
		dependsOf func(api.InstalledApp) []string
		want      []string // Step.String of each step
	}{
		{
			name:     "install in resolved order",
			resolved: &api.Resolved{Apps: []api.ResolvedApp{want("c:core", "", "1.0.0", "d1"), want("c:tool", "", "2.0.0", "d2")}},
			want:     []string{"install c:core 1.0.0", "install c:tool 2.0.0"},
		},
		{
			name:      "same digest is no step",
			resolved:  &api.Resolved{Apps: []api.ResolvedApp{want("c:tool", "", "1.0.0", "d1")}},
			installed: []api.InstalledApp{have("c:tool", "", "1.0.0", "d1")},
			want:      nil,
		},
		{
			name:      "nothing installed, nothing wanted",
			resolved:  &api.Resolved{},
			installed: nil,
			want:      nil,
		},
		{
			name:      "no resolved state keeps everything",
			resolved:  nil,
			installed: []api.InstalledApp{have("c:tool", "", "1.0.0", "d1")},
			want:      nil,
		},
		{
			name:      "upgrade",
			resolved:  &api.Resolved{Apps: []api.ResolvedApp{want("c:tool", "", "1.1.0", "d2")}},
			installed: []api.InstalledApp{have("c:tool", "", "1.0.0", "d1")},
			want:      []string{"upgrade c:tool 1.0.0 -> 1.1.0"},
		},
		{
			name:      "upgrade compares as semver, not text",
			resolved:  &api.Resolved{Apps: []api.ResolvedApp{want("c:tool", "", "1.10.0", "d2")}},
			installed: []api.InstalledApp{have("c:tool", "", "1.9.0", "d1")},
			want:      []string{"upgrade c:tool 1.9.0 -> 1.10.0"},
		},
		{
			name:      "prerelease to release is an upgrade",
			resolved:  &api.Resolved{Apps: []api.ResolvedApp{want("c:tool", "", "2.0.0", "d2")}},
			installed: []api.InstalledApp{have("c:tool", "", "2.0.0-rc.1", "d1")},
			want:      []string{"upgrade c:tool 2.0.0-rc.1 -> 2.0.0"},
		},
		{
			name:      "downgrade",
			resolved:  &api.Resolved{Apps: []api.ResolvedApp{want("c:tool", "", "1.0.0", "d1")}},
			installed: []api.InstalledApp{have("c:tool", "", "1.1.0", "d2")},
			want:      []string{"downgrade c:tool 1.1.0 -> 1.0.0"},
		},
		{
			name:      "reinstall another build of the same version",
			resolved:  &api.Resolved{Apps: []api.ResolvedApp{want("c:tool", "", "1.0.0", "bbbbbbbbbbbbbbbbbbbb")}},
			installed: []api.InstalledApp{have("c:tool", "", "1.0.0", "aaaaaaaaaaaaaaaaaaaa")},
			want:      []string{"reinstall c:tool 1.0.0 (build aaaaaaaaaaaa -> bbbbbbbbbbbb)"},
		},
		{
			name:      "unreadable installed version is replaced",
			resolved:  &api.Resolved{Apps: []api.ResolvedApp{want("c:tool", "", "1.0.0", "d2")}},
			installed: []api.InstalledApp{have("c:tool", "", "garbage", "d1")},
			want:      []string{"upgrade c:tool garbage -> 1.0.0"},
		},
		{
			name:      "installed without digest matches by version",
			resolved:  &api.Resolved{Apps: []api.ResolvedApp{want("c:tool", "", "1.0.0", "")}},
			installed: []api.InstalledApp{have("c:tool", "", "1.0.0", "")},
			want:      nil,
		},
		{
			name: "instances are separate apps",
			resolved: &api.Resolved{Apps: []api.ResolvedApp{
				want("c:tool", "blue", "1.1.0", "d2"), want("c:tool", "green", "1.0.0", "d1"),
			}},
			installed: []api.InstalledApp{have("c:tool", "blue", "1.0.0", "d1"), have("c:tool", "", "1.0.0", "d1")},
			want: []string{
				"upgrade c:tool[blue] 1.0.0 -> 1.1.0",
				"install c:tool[green] 1.0.0",
				"remove c:tool 1.0.0",
			},
		},
		{
			name:      "removal after installs",
			resolved:  &api.Resolved{Apps: []api.ResolvedApp{want("c:new", "", "1.0.0", "n1")}},
			installed: []api.InstalledApp{have("c:old", "", "2.0.0", "o2")},
			want:      []string{"install c:new 1.0.0", "remove c:old 2.0.0"},
		},
		{
			name:     "removal of a chain removes dependents first",
			resolved: &api.Resolved{},
			installed: []api.InstalledApp{
				have("c:a", "", "1.0.0", "a"), have("c:b", "", "1.0.0", "b"), have("c:c", "", "1.0.0", "c"),
			},
			// c:a needs c:b needs c:c, listed against the alphabet.
			dependsOf: deps(map[string][]string{"c:a": {"c:b"}, "c:b": {"c:c"}}),
			want:      []string{"remove c:a 1.0.0", "remove c:b 1.0.0", "remove c:c 1.0.0"},
		},
		{
			name:     "removal of a reversed chain",
			resolved: &api.Resolved{},
			installed: []api.InstalledApp{
				have("c:a", "", "1.0.0", "a"), have("c:b", "", "1.0.0", "b"), have("c:c", "", "1.0.0", "c"),
			},
			dependsOf: deps(map[string][]string{"c:c": {"c:b"}, "c:b": {"c:a"}}),
			want:      []string{"remove c:c 1.0.0", "remove c:b 1.0.0", "remove c:a 1.0.0"},
		},
		{
			name:     "removal with a shared dependency and independents",
			resolved: &api.Resolved{},
			installed: []api.InstalledApp{
				have("c:base", "", "1.0.0", "1"), have("c:x", "", "1.0.0", "2"), have("c:lone", "", "1.0.0", "3"),
				have("c:y", "", "1.0.0", "4"), have("c:mid", "", "1.0.0", "5"),
			},
			dependsOf: deps(map[string][]string{"c:x": {"c:mid", "c:base"}, "c:y": {"c:base"}, "c:mid": {"c:base", "c:gone"}}),
			want: []string{
				"remove c:x 1.0.0", "remove c:mid 1.0.0", "remove c:y 1.0.0", "remove c:base 1.0.0", "remove c:lone 1.0.0",
			},
		},
		{
			name:     "removal of a dependency still wanted by nothing in the removal set",
			resolved: &api.Resolved{Apps: []api.ResolvedApp{want("c:app", "", "1.0.0", "a")}},
			installed: []api.InstalledApp{
				have("c:app", "", "1.0.0", "a"), have("c:lib", "", "1.0.0", "l"), have("c:zed", "", "1.0.0", "z"),
			},
			dependsOf: deps(map[string][]string{"c:app": {"c:lib"}, "c:zed": {"c:lib"}}),
			want:      []string{"remove c:zed 1.0.0", "remove c:lib 1.0.0"},
		},
		{
			name:      "removal cycle does not hang",
			resolved:  &api.Resolved{},
			installed: []api.InstalledApp{have("c:a", "", "1.0.0", "a"), have("c:b", "", "1.0.0", "b")},
			dependsOf: deps(map[string][]string{"c:a": {"c:b", "c:a"}, "c:b": {"c:a"}}),
			want:      []string{"remove c:b 1.0.0", "remove c:a 1.0.0"},
		},
		{
			name:     "removal of instances",
			resolved: &api.Resolved{},
			installed: []api.InstalledApp{
				have("c:core", "", "1.0.0", "c"), have("c:tool", "green", "1.0.0", "t"), have("c:tool", "blue", "1.0.0", "t"),
			},
			dependsOf: deps(map[string][]string{"c:tool": {"c:core"}}),
			want:      []string{"remove c:tool[blue] 1.0.0", "remove c:tool[green] 1.0.0", "remove c:core 1.0.0"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			steps := Make(tt.resolved, tt.installed, tt.dependsOf)
			var got []string
			for _, s := range steps {
				got = append(got, s.String())
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Make() steps (-want +got):\n%s", diff)
			}
			if tt.want == nil && steps != nil {
				t.Errorf("Make() = %#v, want nil", steps)
			}
		})
	}
}

func TestMakeStepFields(t *testing.T) {
	r := &api.Resolved{Apps: []api.ResolvedApp{want("c:new", "", "1.0.0", "n"), want("c:tool", "blue", "1.1.0", "t2")}}
	installed := []api.InstalledApp{have("c:tool", "blue", "1.0.0", "t1"), have("c:old", "", "2.0.0", "o")}
	got := Make(r, installed, nil)
	wantSteps := []Step{
		{Action: Install, Name: "c:new", To: &r.Apps[0]},
		{Action: Upgrade, Name: "c:tool", Instance: "blue", From: &installed[0], To: &r.Apps[1]},
		{Action: Remove, Name: "c:old", From: &installed[1]},
	}
	if diff := cmp.Diff(wantSteps, got); diff != "" {
		t.Errorf("Make() (-want +got):\n%s", diff)
	}
}

func TestStepString(t *testing.T) {
	from := have("com.example:tool", "", "1.0.0", "d1")
	to := want("com.example:tool", "", "1.1.0", "d2")
	tests := []struct {
		step Step
		want string
	}{
		{Step{Action: Upgrade, Name: "com.example:tool", From: &from, To: &to}, "upgrade com.example:tool 1.0.0 -> 1.1.0"},
		{Step{Action: Install, Name: "com.example:tool", To: &to}, "install com.example:tool 1.1.0"},
		{Step{Action: Remove, Name: "com.example:tool", From: &from}, "remove com.example:tool 1.0.0"},
		{Step{Action: Install, Name: "com.example:tool", Instance: "blue", To: &to}, "install com.example:tool[blue] 1.1.0"},
		{Step{Action: Reinstall, Name: "com.example:tool", From: &api.InstalledApp{Version: "1.1.0"}, To: &to}, "reinstall com.example:tool 1.1.0 (build unknown -> d2)"},
		{Step{Action: Remove, Name: "com.example:tool"}, "remove com.example:tool"},
	}
	for _, tt := range tests {
		if got := tt.step.String(); got != tt.want {
			t.Errorf("Step.String() = %q, want %q", got, tt.want)
		}
	}
}

func TestReconfigure(t *testing.T) {
	pd := func(v map[string]any) string { return param.Digest(param.Strings(v)) }
	tests := []struct {
		name      string
		installed string // params digest recorded at install
		params    map[string]any
		want      []Action
	}{
		{"no params either side", "", nil, nil},
		{"same values", pd(map[string]any{"port": int64(81)}), map[string]any{"port": float64(81)}, nil},
		{"changed value", pd(map[string]any{"port": int64(81)}), map[string]any{"port": int64(82)}, []Action{Reconfigure}},
		{"values added", "", map[string]any{"port": int64(81)}, []Action{Reconfigure}},
		{"values dropped", pd(map[string]any{"port": int64(81)}), nil, []Action{Reconfigure}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &api.Resolved{Apps: []api.ResolvedApp{{Name: "g:a", Version: "1.0.0", Digest: "d1", Instance: "blue", Params: tt.params}}}
			in := []api.InstalledApp{{Name: "g:a", Version: "1.0.0", Digest: "d1", Instance: "blue", ParamsDigest: tt.installed}}
			var got []Action
			for _, s := range Make(r, in, nil) {
				got = append(got, s.Action)
				if s.String() != "reconfigure g:a[blue] 1.0.0" {
					t.Errorf("String() = %q", s.String())
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Make() actions = %v, want %v", got, tt.want)
			}
		})
	}
}
