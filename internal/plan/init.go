package plan

import (
	"slices"

	"github.com/drover-dev/drover/internal/api"
)

// PendingInit returns the init entries of a resolved state that have not
// run on the device, in order: those whose identity (group, name, build
// digest and run) no record of done has. An entry whose build or run
// changes is pending again; one that is unchanged never is, even after
// the device left its group and joined it again.
func PendingInit(init []api.ResolvedInit, done []api.InitRecord) []api.ResolvedInit {
	var out []api.ResolvedInit
	for _, e := range init {
		if !slices.ContainsFunc(done, func(r api.InitRecord) bool { return Ran(r, e) }) {
			out = append(out, e)
		}
	}
	return out
}

// Ran reports whether record r is of init entry e's identity.
func Ran(r api.InitRecord, e api.ResolvedInit) bool {
	return r.Group == e.Group && r.Name == e.Name && r.Digest == e.Digest && r.Run == e.Run
}

// RecordInit returns done with e recorded as succeeded at the time in
// r: it replaces the record of the same group and name (one per entry,
// so the list stays as small as the entries ever run), others keep
// their order.
func RecordInit(done []api.InitRecord, r api.InitRecord) []api.InitRecord {
	out := slices.DeleteFunc(slices.Clone(done), func(o api.InitRecord) bool { return o.Group == r.Group && o.Name == r.Name })
	return append(out, r)
}
