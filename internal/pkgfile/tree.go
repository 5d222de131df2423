package pkgfile

import (
	"cmp"
	"slices"
	"strings"

	"github.com/drover-dev/drover/internal/api"
)

// Tree returns the files to install where tags (device tags ∪ the
// desired-state entry's tags) hold: the generic tree, with every overlay
// whose tags all are in tags laid over it, fewer tags first, ties by
// overlay key (tags joined with commas). An entry replaces the entry at the
// same path of an earlier tree. The result is sorted by path, so parents
// come before what they hold; its entries keep their Overlay field.
func Tree(m *api.Manifest, tags []string) []api.File {
	have := make(map[string]bool, len(tags))
	for _, t := range tags {
		have[t] = true
	}
	fits := func(f api.File) bool {
		for _, t := range f.Overlay {
			if !have[t] {
				return false
			}
		}
		return true
	}
	var chosen []api.File
	for _, f := range m.Files {
		if fits(f) {
			chosen = append(chosen, f)
		}
	}
	// Stable: within one tree the manifest order (by path) is kept.
	slices.SortStableFunc(chosen, func(a, b api.File) int {
		return cmp.Or(cmp.Compare(len(a.Overlay), len(b.Overlay)), strings.Compare(overlayKey(a.Overlay), overlayKey(b.Overlay)))
	})
	byPath := make(map[string]api.File, len(chosen))
	for _, f := range chosen {
		byPath[f.Path] = f
	}
	out := make([]api.File, 0, len(byPath))
	for _, p := range sortedKeys(byPath) {
		out = append(out, byPath[p])
	}
	return out
}
