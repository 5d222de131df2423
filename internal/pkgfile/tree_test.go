package pkgfile

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/drover-dev/drover/internal/api"
)

func TestTree(t *testing.T) {
	f := func(path, digest string, overlay ...string) api.File {
		return api.File{Path: path, Type: "file", Digest: digest, Overlay: overlay}
	}
	m := &api.Manifest{Files: []api.File{
		f("a", "generic"),
		f("b", "generic"),
		f("c", "generic"),
		f("a", "arm", "armv7l"),
		f("b", "arm", "armv7l"),
		f("x", "arm", "armv7l"),
		f("b", "arm-neon", "armv7l", "neon"),
		f("c", "glibc", "glibc"),
		f("c", "musl", "musl"),
		f("a", "neon", "neon"),
	}}
	tests := []struct {
		tags []string
		want []api.File
	}{
		{nil, []api.File{f("a", "generic"), f("b", "generic"), f("c", "generic")}},
		{[]string{"linux", "amd64"}, []api.File{f("a", "generic"), f("b", "generic"), f("c", "generic")}},
		{[]string{"armv7l"}, []api.File{f("a", "arm", "armv7l"), f("b", "arm", "armv7l"), f("c", "generic"), f("x", "arm", "armv7l")}},
		// Two one-tag overlays: ties by name, so neon wins over armv7l;
		// the two-tag overlay comes last.
		{[]string{"neon", "armv7l", "glibc"}, []api.File{f("a", "neon", "neon"), f("b", "arm-neon", "armv7l", "neon"), f("c", "glibc", "glibc"), f("x", "arm", "armv7l")}},
		{[]string{"neon"}, []api.File{f("a", "neon", "neon"), f("b", "generic"), f("c", "generic")}},
	}
	for _, tc := range tests {
		got := Tree(m, tc.tags)
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("Tree(%v) mismatch (-want +got):\n%s", tc.tags, diff)
		}
	}
}
