package resolve

import (
	"errors"
	"testing"

	"github.com/drover-dev/drover/internal/api"
)

func TestInit(t *testing.T) {
	builds := []Candidate{
		build("com.example:join:1.0.0", "linux"), build("com.example:join:1.0.0", "arm64,linux"),
		build("com.example:join:1.1.0", "armv7l"),
		build("com.example:join:2.0.0", "linux", dep("com.example:lib", "1.0.0")),
		build("com.example:tie:1.0.0", "a"), build("com.example:tie:1.0.0", "b"),
	}
	entry := func(name, version string) InitEntry {
		return InitEntry{Group: "edge", InitEntry: api.InitEntry{Name: name, Version: version, Run: "bin/join"}}
	}
	for _, tt := range []struct {
		name    string
		tags    []string
		entries []InitEntry
		want    []string // digests
		err     ErrKind
	}{
		{"most tags wins", []string{"linux", "arm64"}, []InitEntry{entry("com.example:join", "1.0.0")}, []string{"com.example:join:1.0.0/arm64,linux"}, ""},
		{"newest fitting version", []string{"linux"}, []InitEntry{entry("com.example:join", "^1")}, []string{"com.example:join:1.0.0/linux"}, ""},
		{"dependencies are not added", []string{"linux"}, []InitEntry{entry("com.example:join", "2.0.0")}, []string{"com.example:join:2.0.0/linux"}, ""},
		{"order kept", []string{"linux", "a"}, []InitEntry{entry("com.example:tie", ""), entry("com.example:join", "1.0.0")},
			[]string{"com.example:tie:1.0.0/a", "com.example:join:1.0.0/linux"}, ""},
		{"no fitting build", []string{"darwin"}, []InitEntry{entry("com.example:join", "^1")}, nil, ErrNoFit},
		{"a tie is an error", []string{"a", "b"}, []InitEntry{entry("com.example:tie", "")}, nil, ErrAmbiguous},
		{"unknown", []string{"linux"}, []InitEntry{entry("com.example:nope", "")}, nil, ErrUnknownPackage},
		{"none", []string{"linux"}, nil, nil, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Init("d1", tt.tags, tt.entries, builds)
			if tt.err != "" {
				if !errors.Is(err, tt.err) {
					t.Fatalf("Init = %v, %v, want %v", got, err, tt.err)
				}
				return
			}
			if err != nil || len(got) != len(tt.want) {
				t.Fatalf("Init = %+v, %v, want %v", got, err, tt.want)
			}
			for i, g := range got {
				if g.Digest != tt.want[i] || g.Group != "edge" || g.Run != "bin/join" {
					t.Errorf("Init[%d] = %+v, want build %s of group edge, run bin/join", i, g, tt.want[i])
				}
			}
		})
	}
}

func TestStateDigest(t *testing.T) {
	apps := []api.ResolvedApp{{Name: "com.example:web", Version: "1.0.0", Digest: "w"}}
	one := []api.ResolvedInit{{Group: "edge", Name: "com.example:join", Version: "1.0.0", Digest: "j1", Run: "bin/join"}}
	if StateDigest(apps, nil) != Digest(apps) {
		t.Errorf("StateDigest without init entries differs from Digest: states without any would all change")
	}
	seen := map[string]string{"no init": StateDigest(apps, nil)}
	for name, entries := range map[string][]api.ResolvedInit{
		"one":       one,
		"new build": {{Group: "edge", Name: "com.example:join", Version: "1.0.0", Digest: "j2", Run: "bin/join"}},
		"new run":   {{Group: "edge", Name: "com.example:join", Version: "1.0.0", Digest: "j1", Run: "bin/other"}},
		"new group": {{Group: "core", Name: "com.example:join", Version: "1.0.0", Digest: "j1", Run: "bin/join"}},
	} {
		d := StateDigest(apps, entries)
		for other, od := range seen {
			if od == d {
				t.Errorf("StateDigest of %q equals that of %q", name, other)
			}
		}
		seen[name] = d
	}
	if StateDigest(apps, one) != StateDigest(apps, []api.ResolvedInit{one[0]}) {
		t.Errorf("StateDigest is not deterministic")
	}
}
