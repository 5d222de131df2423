package resolve

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/drover-dev/drover/internal/api"
)

// build returns a candidate from "group:name:version" and comma-separated
// tags. Its digest is "coordinate/tags", so a test sees which build won.
func build(coord, tags string, deps ...api.Dependency) Candidate {
	i := strings.LastIndex(coord, ":")
	c := Candidate{Name: coord[:i], Version: coord[i+1:], Digest: coord + "/" + tags, Depends: deps}
	if tags != "" {
		c.Tags = strings.Split(tags, ",")
	}
	return c
}

func dep(name, version string) api.Dependency { return api.Dependency{Name: name, Version: version} }

func app(name, version string, tags ...string) api.DesiredApp {
	return api.DesiredApp{Name: name, Version: version, Tags: tags}
}

func inst(name, instance, version string) api.DesiredApp {
	return api.DesiredApp{Name: name, Version: version, Instance: instance}
}

// summary is what a test checks of a resolved app: the chosen build, its
// instance, entry tags and whether it is only a dependency.
func summary(a api.ResolvedApp) string {
	s := a.Digest
	if a.Instance != "" {
		s += " [" + a.Instance + "]"
	}
	if len(a.Tags) > 0 {
		s += " +" + strings.Join(a.Tags, ",")
	}
	if a.Dependency {
		s += " dep"
	}
	return s
}

const (
	tool = "com.example:tool"
	core = "com.example:core"
	base = "com.example:base"
	lib  = "com.example:lib"
)

func TestMatch(t *testing.T) {
	tests := []struct {
		name        string
		build, have []string
		ok          bool
		missing     []string
	}{
		{"generic build fits anything", nil, nil, true, nil},
		{"generic build fits tagged device", nil, []string{"linux"}, true, nil},
		{"all tags present", []string{"linux", "amd64"}, []string{"amd64", "linux", "systemd"}, true, nil},
		{"one missing", []string{"linux", "armv7l"}, []string{"linux", "amd64"}, false, []string{"armv7l"}},
		{"missing sorted and once", []string{"z", "linux", "a", "z"}, []string{"linux"}, false, []string{"a", "z"}},
		{"nothing known", []string{"linux"}, nil, false, []string{"linux"}},
		{"case matters", []string{"Linux"}, []string{"linux"}, false, []string{"Linux"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, missing := Match(tt.build, tt.have)
			if ok != tt.ok || !cmp.Equal(missing, tt.missing) {
				t.Errorf("Match(%v, %v) = %v, %v, want %v, %v", tt.build, tt.have, ok, missing, tt.ok, tt.missing)
			}
		})
	}
}

// versions is a package with releases, a prerelease and only generic builds.
var versions = []Candidate{
	build(tool+":1.0.0", ""),
	build(tool+":1.2.0", ""),
	build(tool+":1.2.5", ""),
	build(tool+":1.3.0", ""),
	build(tool+":2.0.0", ""),
	build(tool+":2.1.0-rc.1", ""),
}

func TestResolve(t *testing.T) {
	tests := []struct {
		name       string
		deviceTags []string
		apps       []api.DesiredApp
		builds     []Candidate
		want       []string // summary of each app, in order
		wantErr    error
		wantMsg    string // substring of the error message
	}{
		// Tag match.
		{
			name:       "most specific build wins",
			deviceTags: []string{"linux", "amd64", "systemd"},
			apps:       []api.DesiredApp{app(tool, "")},
			builds: []Candidate{
				build(tool+":1.0.0", ""), build(tool+":1.0.0", "linux"),
				build(tool+":1.0.0", "linux,amd64"), build(tool+":1.0.0", "linux,arm64"),
			},
			want: []string{tool + ":1.0.0/linux,amd64"},
		},
		{
			name:       "generic build when nothing specific fits",
			deviceTags: []string{"freebsd"},
			apps:       []api.DesiredApp{app(tool, "")},
			builds:     []Candidate{build(tool+":1.0.0", ""), build(tool+":1.0.0", "linux")},
			want:       []string{tool + ":1.0.0/"},
		},
		{
			name:       "tie is ambiguous and names both tag sets",
			deviceTags: []string{"linux", "amd64", "glibc"},
			apps:       []api.DesiredApp{app(tool, "")},
			builds: []Candidate{
				build(tool+":1.0.0", "linux"), build(tool+":1.0.0", "linux,amd64"), build(tool+":1.0.0", "glibc,linux"),
			},
			wantErr: ErrAmbiguous,
			wantMsg: "com.example:tool:1.0.0: ambiguous: builds amd64,linux and glibc,linux all fit",
		},
		{
			name:       "tie is not settled by an older version",
			deviceTags: []string{"a", "b"},
			apps:       []api.DesiredApp{app(tool, "")},
			builds:     []Candidate{build(tool+":1.0.0", "a"), build(tool+":2.0.0", "a"), build(tool+":2.0.0", "b")},
			wantErr:    ErrAmbiguous,
			wantMsg:    "2.0.0: ambiguous: builds a and b all fit device-1 with 1 tags each",
		},
		{
			name:       "same build listed twice is not a tie",
			deviceTags: []string{"linux"},
			apps:       []api.DesiredApp{app(tool, "")},
			builds:     []Candidate{build(tool+":1.0.0", "linux"), build(tool+":1.0.0", "linux")},
			want:       []string{tool + ":1.0.0/linux"},
		},
		{
			name:       "no fit names the missing tags of the closest builds",
			deviceTags: []string{"linux", "amd64"},
			apps:       []api.DesiredApp{app(tool, "1.2.0")},
			builds:     []Candidate{build(tool+":1.2.0", "linux,armv7l"), build(tool+":1.2.0", "aarch64,linux,musl")},
			wantErr:    ErrNoFit,
			wantMsg:    "com.example:tool:1.2.0: no build fits device-1: missing tags armv7l (build armv7l,linux)",
		},
		{
			name:       "no fit lists every equally close build",
			deviceTags: []string{"linux"},
			apps:       []api.DesiredApp{app(tool, "")},
			builds:     []Candidate{build(tool+":1.0.0", "linux,armv7l"), build(tool+":1.0.0", "linux,arm64")},
			wantErr:    ErrNoFit,
			wantMsg:    "missing tags arm64 (build arm64,linux); missing tags armv7l (build armv7l,linux)",
		},
		{
			name:       "entry tags widen the match",
			deviceTags: []string{"linux"},
			apps:       []api.DesiredApp{app(tool, "", "armv7l", "armv7l")},
			builds:     []Candidate{build(tool+":1.0.0", "linux,armv7l"), build(tool+":1.0.0", "linux")},
			want:       []string{tool + ":1.0.0/linux,armv7l +armv7l"},
		},
		{
			name:   "device without tags gets the generic build",
			apps:   []api.DesiredApp{app(tool, "")},
			builds: []Candidate{build(tool+":1.0.0", "linux"), build(tool+":1.0.0", "")},
			want:   []string{tool + ":1.0.0/"},
		},

		// Versions.
		{name: "empty version is newest release", apps: []api.DesiredApp{app(tool, "")}, builds: versions, want: []string{tool + ":2.0.0/"}},
		{name: "latest is newest release", apps: []api.DesiredApp{app(tool, "latest")}, builds: versions, want: []string{tool + ":2.0.0/"}},
		{name: "caret", apps: []api.DesiredApp{app(tool, "^1.2")}, builds: versions, want: []string{tool + ":1.3.0/"}},
		{name: "tilde", apps: []api.DesiredApp{app(tool, "~1.2")}, builds: versions, want: []string{tool + ":1.2.5/"}},
		{name: "range", apps: []api.DesiredApp{app(tool, ">=1.0.0, <1.3.0")}, builds: versions, want: []string{tool + ":1.2.5/"}},
		{name: "or", apps: []api.DesiredApp{app(tool, "1.0.0 || 1.2.0")}, builds: versions, want: []string{tool + ":1.2.0/"}},
		{name: "exact", apps: []api.DesiredApp{app(tool, "1.2.0")}, builds: versions, want: []string{tool + ":1.2.0/"}},
		{name: "exact with spaces", apps: []api.DesiredApp{app(tool, " 1.2.0 ")}, builds: versions, want: []string{tool + ":1.2.0/"}},
		{name: "partial version is a wildcard", apps: []api.DesiredApp{app(tool, "1.2")}, builds: versions, want: []string{tool + ":1.2.5/"}},
		{name: "caret skips prerelease", apps: []api.DesiredApp{app(tool, "^2")}, builds: versions, want: []string{tool + ":2.0.0/"}},
		{name: "exact prerelease", apps: []api.DesiredApp{app(tool, "2.1.0-rc.1")}, builds: versions, want: []string{tool + ":2.1.0-rc.1/"}},
		{name: "prerelease constraint", apps: []api.DesiredApp{app(tool, ">=2.1.0-rc.0")}, builds: versions, want: []string{tool + ":2.1.0-rc.1/"}},
		{
			name: "no version matches", apps: []api.DesiredApp{app(tool, "^3")}, builds: versions,
			wantErr: ErrNoVersion,
			wantMsg: `com.example:tool: no version matches "^3" (versions: 2.1.0-rc.1, 2.0.0, 1.3.0, 1.2.5, 1.2.0, 1.0.0)`,
		},
		{name: "exact version missing", apps: []api.DesiredApp{app(tool, "1.1.0")}, builds: versions, wantErr: ErrNoVersion},
		{
			name:   "only prereleases and latest",
			apps:   []api.DesiredApp{app(tool, "")},
			builds: []Candidate{build(tool+":1.0.0-beta.1", "")}, wantErr: ErrNoVersion,
		},
		{
			name: "bad constraint", apps: []api.DesiredApp{app(tool, "^^1")}, builds: versions,
			wantErr: ErrInvalid, wantMsg: `com.example:tool: version "^^1": not a version or constraint`,
		},
		{
			name:       "newest fitting version wins over a newer version without a fitting build",
			deviceTags: []string{"amd64"},
			apps:       []api.DesiredApp{app(tool, "")},
			builds:     []Candidate{build(tool+":2.0.0", "armv7l"), build(tool+":1.5.0", "amd64"), build(tool+":1.0.0", "amd64")},
			want:       []string{tool + ":1.5.0/amd64"},
		},
		{
			name:       "no fit is about the newest matching version",
			deviceTags: []string{"amd64"},
			apps:       []api.DesiredApp{app(tool, "^1")},
			builds:     []Candidate{build(tool+":2.0.0", "amd64"), build(tool+":1.5.0", "armv7l"), build(tool+":1.0.0", "armv7l")},
			wantErr:    ErrNoFit,
			wantMsg:    "com.example:tool:1.5.0: no build fits device-1: missing tags armv7l",
		},
		{
			name:   "build with unparsable version is never chosen",
			apps:   []api.DesiredApp{app(tool, "")},
			builds: []Candidate{build(tool+":1.0.0", ""), build(tool+":9", "")},
			want:   []string{tool + ":1.0.0/"},
		},

		// Dependencies.
		{
			name: "closure comes dependencies first",
			apps: []api.DesiredApp{app("com.example:x", ""), app(tool, ""), app("com.example:y", "")},
			builds: []Candidate{
				build("com.example:x:1.0.0", ""), build("com.example:y:1.0.0", ""),
				build(tool+":1.0.0", "", dep(core, "^1")),
				build(core+":1.0.0", "", dep(base, "")), build(core+":2.0.0", ""),
				build(base+":1.0.0", ""),
			},
			want: []string{
				"com.example:x:1.0.0/", base + ":1.0.0/ dep", core + ":1.0.0/ dep", tool + ":1.0.0/", "com.example:y:1.0.0/",
			},
		},
		{
			name: "shared dependency gets one version satisfying all",
			apps: []api.DesiredApp{app("com.example:a", ""), app("com.example:b", "")},
			builds: []Candidate{
				build("com.example:a:1.0.0", "", dep(core, ">=1.0.0")),
				build("com.example:b:1.0.0", "", dep(core, "<1.5.0")),
				build(core+":1.0.0", ""), build(core+":1.4.0", ""), build(core+":1.6.0", ""), build(core+":2.0.0", ""),
			},
			want: []string{core + ":1.4.0/ dep", "com.example:a:1.0.0/", "com.example:b:1.0.0/"},
		},
		{
			name: "conflicting constraints name both dependents",
			apps: []api.DesiredApp{app("com.example:a", ""), app("com.example:b", "")},
			builds: []Candidate{
				build("com.example:a:1.0.0", "", dep(core, "^1.0.0")),
				build("com.example:b:1.0.0", "", dep(core, "^2.0.0")),
				build(core+":1.0.0", ""), build(core+":2.0.0", ""),
			},
			wantErr: ErrDependency,
			wantMsg: `com.example:core: no version satisfies every dependent: com.example:a:1.0.0 needs "^1.0.0", com.example:b:1.0.0 needs "^2.0.0"`,
		},
		{
			name:    "dependency with no matching version",
			apps:    []api.DesiredApp{app(tool, "")},
			builds:  []Candidate{build(tool+":1.0.0", "", dep(core, ">=3")), build(core+":1.0.0", "")},
			wantErr: ErrNoVersion,
			wantMsg: `com.example:core: no version matches ">=3", needed by com.example:tool:1.0.0 (versions: 1.0.0)`,
		},
		{
			name:    "unknown dependency",
			apps:    []api.DesiredApp{app(tool, "")},
			builds:  []Candidate{build(tool+":1.0.0", "", dep(core, ""))},
			wantErr: ErrUnknownPackage,
			wantMsg: "com.example:core: unknown package, needed by com.example:tool:1.0.0",
		},
		{
			name:    "dependency with bad constraint",
			apps:    []api.DesiredApp{app(tool, "")},
			builds:  []Candidate{build(tool+":1.0.0", "", dep(core, "one")), build(core+":1.0.0", "")},
			wantErr: ErrInvalid,
			wantMsg: `com.example:tool:1.0.0: dependency com.example:core: version "one"`,
		},
		{
			name:       "dependency fits with the dependent's entry tags",
			deviceTags: []string{"linux"},
			apps:       []api.DesiredApp{app(tool, "", "armv7l")},
			builds:     []Candidate{build(tool+":1.0.0", "", dep(core, "")), build(core+":1.0.0", "armv7l,linux")},
			want:       []string{core + ":1.0.0/armv7l,linux +armv7l dep", tool + ":1.0.0/ +armv7l"},
		},
		{
			name:       "dependency without a fitting build says who needs it",
			deviceTags: []string{"linux"},
			apps:       []api.DesiredApp{app(tool, "")},
			builds:     []Candidate{build(tool+":1.0.0", "", dep(core, "")), build(core+":1.0.0", "armv7l,linux")},
			wantErr:    ErrNoFit,
			wantMsg:    "com.example:core:1.0.0: no build fits device-1: missing tags armv7l (build armv7l,linux) (needed by com.example:tool:1.0.0)",
		},
		{
			name: "dependency settles when a later dependent constrains it",
			apps: []api.DesiredApp{app(tool, ""), app("com.example:other", "")},
			builds: []Candidate{
				build(tool+":1.0.0", "", dep(core, "")),
				build(core+":1.0.0", "", dep(lib, "<2")),
				build("com.example:other:1.0.0", "", dep(lib, "")),
				build(lib+":1.0.0", ""),
				build(lib+":2.0.0", "", dep(base, "")), // its dependency must not linger
				build(base+":1.0.0", ""),
			},
			want: []string{lib + ":1.0.0/ dep", core + ":1.0.0/ dep", tool + ":1.0.0/", "com.example:other:1.0.0/"},
		},
		{
			// A solution exists (a 2 with b 1, or the reverse), but choosing
			// newest-first flips both each round: not a backtracking solver,
			// so it says so and asks for a pin instead of looping.
			name: "choices that never settle",
			apps: []api.DesiredApp{app(tool, "")},
			builds: []Candidate{
				build(tool+":1.0.0", "", dep("com.example:a", ""), dep("com.example:b", "")),
				build("com.example:a:1.0.0", ""), build("com.example:a:2.0.0", "", dep("com.example:b", "<2")),
				build("com.example:b:1.0.0", ""), build("com.example:b:2.0.0", "", dep("com.example:a", "<2")),
			},
			wantErr: ErrDependency,
			wantMsg: "dependency versions do not settle (com.example:a, com.example:b)",
		},
		{
			name: "a pin settles them",
			apps: []api.DesiredApp{app(tool, ""), app("com.example:a", "2.0.0")},
			builds: []Candidate{
				build(tool+":1.0.0", "", dep("com.example:a", ""), dep("com.example:b", "")),
				build("com.example:a:1.0.0", ""), build("com.example:a:2.0.0", "", dep("com.example:b", "<2")),
				build("com.example:b:1.0.0", ""), build("com.example:b:2.0.0", "", dep("com.example:a", "<2")),
			},
			want: []string{"com.example:b:1.0.0/ dep", "com.example:a:2.0.0/", tool + ":1.0.0/"},
		},
		{
			name: "explicit entry satisfies a dependent",
			apps: []api.DesiredApp{app(tool, ""), app(core, "^1", "x")},
			builds: []Candidate{
				build(tool+":1.0.0", "", dep(core, ">=1.0.0")), build(core+":1.0.0", ""), build(core+":2.0.0", ""),
			},
			want: []string{core + ":1.0.0/ +x", tool + ":1.0.0/"},
		},
		{
			name: "explicit entry conflicting with a dependent",
			apps: []api.DesiredApp{app(tool, ""), app(core, "1.0.0")},
			builds: []Candidate{
				build(tool+":1.0.0", "", dep(core, ">=2.0.0")), build(core+":1.0.0", ""), build(core+":2.0.0", ""),
			},
			wantErr: ErrDependency,
			wantMsg: `com.example:core: com.example:tool:1.0.0 needs com.example:core ">=2.0.0", but the desired state picks com.example:core:1.0.0`,
		},
		{
			name: "cycle",
			apps: []api.DesiredApp{app("com.example:a", "")},
			builds: []Candidate{
				build("com.example:a:1.0.0", "", dep("com.example:b", "")),
				build("com.example:b:1.0.0", "", dep("com.example:a", "")),
			},
			wantErr: ErrDependency,
			wantMsg: "dependency cycle: com.example:a:1.0.0 -> com.example:b:1.0.0 -> com.example:a:1.0.0",
		},
		{
			name:    "self dependency",
			apps:    []api.DesiredApp{app(tool, "")},
			builds:  []Candidate{build(tool+":1.0.0", "", dep(tool, ""))},
			wantErr: ErrDependency,
			wantMsg: "dependency cycle: com.example:tool:1.0.0 -> com.example:tool:1.0.0",
		},
		{
			name: "cycle among dependencies",
			apps: []api.DesiredApp{app(tool, "")},
			builds: []Candidate{
				build(tool+":1.0.0", "", dep(core, "")),
				build(core+":1.0.0", "", dep(lib, "")),
				build(lib+":1.0.0", "", dep(core, "")),
			},
			wantErr: ErrDependency,
			wantMsg: "dependency cycle: com.example:core:1.0.0 -> com.example:lib:1.0.0 -> com.example:core:1.0.0",
		},

		// Entries.
		{
			name:    "unknown package",
			apps:    []api.DesiredApp{app("com.example:nope", "")},
			builds:  versions,
			wantErr: ErrUnknownPackage,
			wantMsg: "com.example:nope: unknown package",
		},
		{
			name:   "instances of one package",
			apps:   []api.DesiredApp{inst(tool, "blue", "1.0.0"), inst(tool, "green", "^1.2"), inst(tool, "", "")},
			builds: versions,
			want:   []string{tool + ":1.0.0/ [blue]", tool + ":1.3.0/ [green]", tool + ":2.0.0/"},
		},
		{
			name: "dependency on a package with instances needs every instance to fit",
			apps: []api.DesiredApp{inst(core, "a", "1.0.0"), inst(core, "b", "2.0.0"), app(tool, "")},
			builds: []Candidate{
				build(tool+":1.0.0", "", dep(core, "^2")), build(core+":1.0.0", ""), build(core+":2.0.0", ""),
			},
			wantErr: ErrDependency,
			wantMsg: "picks com.example:core[a]:1.0.0",
		},
		{
			name:    "same name and instance twice",
			apps:    []api.DesiredApp{inst(tool, "blue", ""), inst(tool, "blue", "1.0.0")},
			builds:  versions,
			wantErr: ErrInvalid,
			wantMsg: "com.example:tool[blue]: listed twice",
		},
		{
			name:    "same name without instance twice",
			apps:    []api.DesiredApp{app(tool, ""), app(tool, "1.0.0")},
			builds:  versions,
			wantErr: ErrInvalid,
		},
		{name: "bad name", apps: []api.DesiredApp{app("tool", "")}, builds: versions, wantErr: ErrInvalid, wantMsg: `package name "tool"`},
		{name: "bad tag", apps: []api.DesiredApp{app(tool, "", "a b")}, builds: versions, wantErr: ErrInvalid, wantMsg: `tag "a b"`},
		{name: "bad instance", apps: []api.DesiredApp{inst(tool, "../x", "")}, builds: versions, wantErr: ErrInvalid, wantMsg: `instance "../x"`},
		{name: "no apps", builds: versions, want: []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Resolve("device-1", tt.deviceTags, tt.apps, tt.builds)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Resolve() error = %v, want %v", err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantMsg) {
					t.Errorf("Resolve() error = %q, want it to contain %q", err, tt.wantMsg)
				}
				var e *Error
				if !errors.As(err, &e) || e.App == "" {
					t.Errorf("Resolve() error = %#v, want an *Error naming the app", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Resolve() error = %v", err)
			}
			sum := []string{}
			for _, a := range got.Apps {
				sum = append(sum, summary(a))
				if a.Tags == nil {
					t.Errorf("Resolve() app %s has nil tags, want []", a.Name)
				}
			}
			if diff := cmp.Diff(tt.want, sum); diff != "" {
				t.Errorf("Resolve() apps (-want +got):\n%s", diff)
			}
			if got.Device != "device-1" || got.Digest != Digest(got.Apps) {
				t.Errorf("Resolve() device, digest = %q, %q, want device-1, %q", got.Device, got.Digest, Digest(got.Apps))
			}
		})
	}
}

func TestResolveCarriesEntryFields(t *testing.T) {
	apps := []api.DesiredApp{{
		Name: tool, Version: "1.0.0", Tags: []string{"b", "a"}, Instance: "blue",
		Params: map[string]any{"port": 8081}, Purge: true,
	}}
	got, err := Resolve("device-1", nil, apps, []Candidate{build(tool+":1.0.0", "")})
	if err != nil {
		t.Fatal(err)
	}
	want := []api.ResolvedApp{{
		Name: tool, Version: "1.0.0", Digest: tool + ":1.0.0/", Tags: []string{"a", "b"}, Instance: "blue",
		Params: map[string]any{"port": 8081}, Purge: true,
	}}
	if diff := cmp.Diff(want, got.Apps); diff != "" {
		t.Errorf("Resolve() apps (-want +got):\n%s", diff)
	}
	apps[0].Params["port"] = 1
	if got.Apps[0].Params["port"] != 8081 {
		t.Errorf("Resolve() params share the caller's map")
	}
}

func TestResolveIsDeterministic(t *testing.T) {
	builds := []Candidate{
		build(tool+":1.0.0", "", dep(core, ""), dep(lib, "")),
		build(core+":1.0.0", "", dep(base, "")),
		build(lib+":1.0.0", "", dep(base, "")),
		build(base+":1.0.0", ""),
	}
	first, err := Resolve("d", nil, []api.DesiredApp{app(tool, "", "x", "y")}, builds)
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		// Reordered candidates and entry tags change nothing.
		rev := append([]Candidate{}, builds...)
		for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
			rev[i], rev[j] = rev[j], rev[i]
		}
		got, err := Resolve("d", nil, []api.DesiredApp{app(tool, "", "y", "x")}, rev)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(first, got); diff != "" {
			t.Fatalf("Resolve() differs between runs (-first +now):\n%s", diff)
		}
	}
	var names []string
	for _, a := range first.Apps {
		names = append(names, a.Name)
	}
	if want := []string{base, core, lib, tool}; !cmp.Equal(names, want) {
		t.Errorf("Resolve() order = %v, want %v", names, want)
	}
}

func TestDigest(t *testing.T) {
	a := []api.ResolvedApp{
		{Name: core, Version: "1.0.0", Digest: "aa", Tags: []string{}, Dependency: true},
		{Name: tool, Version: "1.2.0", Digest: "bb", Tags: []string{"armv7l"}, Instance: "blue", Params: map[string]any{"port": 8081, "mode": "fast"}},
	}
	// Pinned so that a change of encoding, which would make every agent
	// think its state changed, is noticed. It is the SHA-256 of
	// [{"name":"com.example:core","version":"1.0.0","digest":"aa","tags":[],"dependency":true},
	//  {"name":"com.example:tool","version":"1.2.0","digest":"bb","tags":["armv7l"],"instance":"blue","params":{"mode":"fast","port":8081}}]
	// written on one line.
	const golden = "0802093a74e2f49684730072c209ee1336b108bba5fb0c554245875dc211e252"
	if got := Digest(a); got != golden {
		t.Errorf("Digest() = %s, want %s", got, golden)
	}

	nilTags := []api.ResolvedApp{{Name: core, Version: "1.0.0", Digest: "aa"}}
	emptyTags := []api.ResolvedApp{{Name: core, Version: "1.0.0", Digest: "aa", Tags: []string{}}}
	if Digest(nilTags) != Digest(emptyTags) {
		t.Errorf("Digest() differs for nil and empty tags")
	}
	if Digest(nil) != Digest([]api.ResolvedApp{}) {
		t.Errorf("Digest() differs for nil and empty apps")
	}

	changes := []struct {
		name   string
		change func(apps []api.ResolvedApp)
	}{
		{"name", func(x []api.ResolvedApp) { x[1].Name = "com.example:other" }},
		{"version", func(x []api.ResolvedApp) { x[1].Version = "1.2.1" }},
		{"build digest", func(x []api.ResolvedApp) { x[1].Digest = "cc" }},
		{"tags", func(x []api.ResolvedApp) { x[1].Tags = []string{"arm64"} }},
		{"instance", func(x []api.ResolvedApp) { x[1].Instance = "green" }},
		{"param value", func(x []api.ResolvedApp) { x[1].Params = map[string]any{"port": 8082, "mode": "fast"} }},
		{"purge", func(x []api.ResolvedApp) { x[1].Purge = true }},
		{"dependency", func(x []api.ResolvedApp) { x[0].Dependency = false }},
		{"order", func(x []api.ResolvedApp) { x[0], x[1] = x[1], x[0] }},
	}
	for _, c := range changes {
		t.Run(c.name, func(t *testing.T) {
			b := make([]api.ResolvedApp, len(a))
			copy(b, a)
			c.change(b)
			if Digest(b) == Digest(a) {
				t.Errorf("Digest() unchanged after changing %s", c.name)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	builds := []Candidate{build(tool+":1.0.0", "armv7l"), build(tool+":1.5.0", "armv7l", dep("com.example:missing", ""))}
	tests := []struct {
		name    string
		apps    []api.DesiredApp
		wantErr error
	}{
		{"tags are ignored", []api.DesiredApp{app(tool, "^1")}, nil},
		{"exact version", []api.DesiredApp{app(tool, "1.0.0")}, nil},
		{"empty state", nil, nil},
		{"unknown package", []api.DesiredApp{app(tool, ""), app(core, "")}, ErrUnknownPackage},
		{"no version", []api.DesiredApp{app(tool, "^2")}, ErrNoVersion},
		{"bad constraint", []api.DesiredApp{app(tool, ">>1")}, ErrInvalid},
		{"duplicate", []api.DesiredApp{app(tool, ""), app(tool, "")}, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := Validate(tt.apps, builds); !errors.Is(err, tt.wantErr) {
				t.Errorf("Validate(%v) = %v, want %v", tt.apps, err, tt.wantErr)
			}
		})
	}
}

func TestErrorKinds(t *testing.T) {
	// Every kind is distinct, so errors.Is never confuses two.
	kinds := []ErrKind{ErrUnknownPackage, ErrNoVersion, ErrNoFit, ErrAmbiguous, ErrDependency, ErrInvalid}
	for i, a := range kinds {
		for j, b := range kinds {
			if (i == j) != errors.Is(&Error{Kind: a}, b) {
				t.Errorf("errors.Is(%v, %v) = %v", a, b, i != j)
			}
		}
	}
}

func FuzzResolve(f *testing.F) {
	f.Add("^1.2", "linux,armv7l", "linux", ">=1.0.0, <2.0.0", "")
	f.Add("", "", "", "", "blue")
	f.Add("1.0.0 || ~2", "a,,b", "x y", "~>1", "../x")
	f.Add("latest", "glibc-2.36", "amd64,linux", "2.1.0-rc.1", "")
	f.Add(">=2.1.0-rc.0", "musl", "", "*", "green")
	f.Fuzz(func(t *testing.T, version, entryTags, deviceTags, depVersion, instance string) {
		builds := []Candidate{
			build(tool+":1.0.0", "linux"),
			build(tool+":1.2.0", "linux,armv7l", dep(core, depVersion)),
			build(tool+":1.2.0", "linux,amd64", dep(core, depVersion)),
			build(tool+":2.1.0-rc.1", "", dep(core, depVersion), dep(tool, depVersion)),
			build(core+":1.0.0", "armv7l"),
			build(core+":2.0.0", "", dep(base, version)),
			build(base+":1.0.0", ""),
		}
		apps := []api.DesiredApp{
			{Name: tool, Version: version, Tags: strings.Split(entryTags, ","), Instance: instance},
			{Name: base, Version: depVersion},
		}
		res, err := Resolve("fuzz", strings.Split(deviceTags, ","), apps, builds)
		if verr := Validate(apps, builds); verr != nil && err == nil {
			t.Errorf("Validate() = %v but Resolve() succeeded", verr)
		}
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Message == "" || e.Kind == "" {
				t.Fatalf("Resolve() error = %#v, want an *Error with kind and message", err)
			}
			return
		}
		if res.Digest != Digest(res.Apps) {
			t.Errorf("Resolve() digest %q does not match its apps", res.Digest)
		}
		pos := map[string]int{}
		for i, a := range res.Apps {
			pos[a.Name] = i
		}
		for _, a := range res.Apps {
			var c *Candidate
			for i := range builds {
				if builds[i].Digest == a.Digest {
					c = &builds[i]
				}
			}
			if c == nil {
				t.Fatalf("Resolve() chose %s, not a candidate", a.Digest)
			}
			for _, d := range c.Depends {
				if i, ok := pos[d.Name]; !ok || i >= pos[a.Name] {
					t.Errorf("Resolve() put %s before its dependency %s", a.Name, d.Name)
				}
			}
		}
	})
}

func TestPinAndNewer(t *testing.T) {
	builds := []Candidate{build("com.example:web:1.2.0", "linux"), build("com.example:web:1.3.0", "armv7l"), build("com.example:web:2.0.0", ""), build("com.example:web:1.4.0-rc.1", "")}
	tests := []struct {
		version   string
		want      string
		exact     bool
		err       ErrKind
		newerThan string
		newer     []string
	}{
		{"^1.2", "1.3.0", false, "", "1.2.0", []string{"1.3.0"}},
		{"", "2.0.0", false, "", "1.2.0", []string{"2.0.0", "1.3.0"}},
		{"1.2.0", "1.2.0", true, "", "1.2.0", nil},
		{"^3", "", false, ErrNoVersion, "", nil},
		{"nonsense!", "", false, ErrInvalid, "", nil},
	}
	for _, tt := range tests {
		got, exact, err := Pin("com.example:web", tt.version, builds)
		if tt.err != "" {
			if !errors.Is(err, tt.err) {
				t.Errorf("Pin(%q) = %q, %v, want %v", tt.version, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want || exact != tt.exact {
			t.Errorf("Pin(%q) = %q, %v, %v, want %q, %v", tt.version, got, exact, err, tt.want, tt.exact)
		}
		if n := Newer("com.example:web", tt.version, tt.newerThan, builds); !slices.Equal(n, tt.newer) {
			t.Errorf("Newer(%q, than %s) = %v, want %v", tt.version, tt.newerThan, n, tt.newer)
		}
	}
	if _, _, err := Pin("com.example:nope", "^1", builds); !errors.Is(err, ErrUnknownPackage) {
		t.Errorf("Pin(unknown package) = %v, want ErrUnknownPackage", err)
	}
}
