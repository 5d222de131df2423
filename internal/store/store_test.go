package store_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/store"
)

func TestSortBuilds(t *testing.T) {
	in := []api.Build{
		{Coordinate: "org.b:app:1.0.0"},
		{Coordinate: "org.a:app:1.10.0"},
		{Coordinate: "org.a:app:1.9.0", Tags: []string{"linux"}},
		{Coordinate: "org.a:app:not-semver"},
		{Coordinate: "org.a:app:2.0.0"},
		{Coordinate: "org.a:app:1.9.0", Tags: []string{"amd64", "linux"}},
		{Coordinate: "org.a:app:2.0.0-rc.1"},
		{Coordinate: "org.a:app:1.9.0", Tags: []string{}},
	}
	want := []string{
		"org.a:app:1.9.0 []",
		"org.a:app:1.9.0 [amd64 linux]",
		"org.a:app:1.9.0 [linux]",
		"org.a:app:1.10.0 []",
		"org.a:app:2.0.0-rc.1 []",
		"org.a:app:2.0.0 []",
		"org.a:app:not-semver []",
		"org.b:app:1.0.0 []",
	}
	store.SortBuilds(in)
	var got []string
	for _, b := range in {
		got = append(got, b.Coordinate+" "+fmtTags(b.Tags))
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("SortBuilds order mismatch (-want +got):\n%s", diff)
	}
}

func fmtTags(tags []string) string {
	s := "["
	for i, t := range tags {
		if i > 0 {
			s += " "
		}
		s += t
	}
	return s + "]"
}
