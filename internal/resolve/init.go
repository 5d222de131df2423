package resolve

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"

	"github.com/drover-dev/drover/internal/api"
)

// InitEntry is an init entry to resolve: its group and the entry, its
// version pinned.
type InitEntry struct {
	Group string
	api.InitEntry
}

// Init resolves init entries to exact builds the way Resolve resolves an
// app (newest version the constraint allows with a build that fits the
// device; most tags wins; a tie is an error), without dependencies: an
// init program runs from its own build's files. The order is kept.
func Init(device string, deviceTags []string, entries []InitEntry, builds []Candidate) ([]api.ResolvedInit, error) {
	if len(entries) == 0 {
		return nil, nil
	}
	r := &resolver{device: device, deviceTags: deviceTags, idx: newIndex(builds)}
	out := make([]api.ResolvedInit, 0, len(entries))
	for _, e := range entries {
		a := api.DesiredApp{Name: e.Name, Version: e.Version}
		specs, err := check([]api.DesiredApp{a})
		if err != nil {
			return nil, err
		}
		n, err := r.explicit(a, specs[0])
		if err != nil {
			return nil, err
		}
		out = append(out, api.ResolvedInit{Group: e.Group, Name: n.name, Version: n.version, Digest: n.build.Digest, Run: e.Run,
			BuildTags: n.build.Tags})
	}
	return out, nil
}

// StateDigest is the digest of a resolved state of apps and init
// entries: Digest(apps) when there are no init entries (so states without
// any keep the digest they always had), else a digest over both.
func StateDigest(apps []api.ResolvedApp, init []api.ResolvedInit) string {
	d := Digest(apps)
	if len(init) == 0 {
		return d
	}
	b, _ := json.Marshal(init) // strings only: cannot fail
	sum := sha256.Sum256(append([]byte(d+"\x00init\x00"), b...))
	return hex.EncodeToString(sum[:])
}
