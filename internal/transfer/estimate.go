package transfer

import "github.com/drover-dev/drover/internal/api"

// Need is one blob a device lacks for an install or an upgrade, as
// Estimate counts it.
type Need struct {
	// Size is the blob's size.
	Size int64
	// HasBase says the device has the same file (same path) of the
	// version it has installed: the blob can come as a delta.
	HasBase bool
	// Compressed and Delta are the sizes of its compressed form and of
	// its delta when known (the server's cache); 0 = unknown.
	Compressed, Delta int64
}

// Ratios Estimate uses for sizes it does not know, measured on real
// Debian updates (docs/benchmarks.md): whole files in a pack stream come
// to about a third of their size, a changed file as a delta against its
// old version to about a sixth.
const (
	EstimateCompressRatio = 0.35
	EstimateDeltaRatio    = 0.15
)

// Estimate returns the bytes a device receives from the network for
// needs: what drover_agent_download_bytes_total grows by, give or take
// the compression of the actual bytes.
func Estimate(needs []Need) int64 {
	var total int64
	for _, n := range needs {
		switch {
		case n.HasBase && n.Delta > 0:
			total += n.Delta
		case n.HasBase:
			total += int64(float64(n.Size) * EstimateDeltaRatio)
		case n.Compressed > 0:
			total += n.Compressed
		default:
			total += int64(float64(n.Size) * EstimateCompressRatio)
		}
	}
	return total
}

// Needs returns the blobs a device lacks to install the files of to
// (already chosen for the device's platform) when it has the build from
// installed (nil for a first install), each once; a file whose path from
// also has counts as having a base.
func Needs(from, to *api.Manifest) []Need {
	old := map[string]string{}
	seen := map[string]bool{}
	if from != nil {
		for _, f := range from.Files {
			if f.Digest != "" {
				old[f.Path] = f.Digest
				seen[f.Digest] = true
			}
		}
	}
	var out []Need
	for _, f := range to.Files {
		if f.Digest == "" || seen[f.Digest] {
			continue
		}
		seen[f.Digest] = true
		out = append(out, Need{Size: f.Size, HasBase: old[f.Path] != ""})
	}
	return out
}
