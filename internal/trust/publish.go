package trust

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/drover-dev/drover/internal/api"
)

// BinExpiry is how long a bin signed by the publisher stays valid; pushing
// any build of a bin signs it again.
const BinExpiry = 365 * 24 * time.Hour

// TargetPath is the TUF target path of a build: its coordinate, and its
// tags (sorted, without duplicates) after an "@" when it has any, e.g.
// "com.example:web:1.2.0@amd64,linux".
func TargetPath(coordinate string, tags []string) string {
	t := slices.Clone(tags)
	slices.Sort(t)
	t = slices.Compact(t)
	if len(t) == 0 {
		return coordinate
	}
	return coordinate + "@" + strings.Join(t, ",")
}

// Build is one build to sign: its coordinate, its tags and its manifest's
// digest (SHA-256, hex) and length.
type Build struct {
	Coordinate string
	Tags       []string
	Digest     string
	Length     int64
}

// Remote is what the publisher needs of the server.
type Remote interface {
	// TrustMetadata returns the newest metadata file name ("targets.json",
	// "bins-3a.json"); an error wrapping ErrNotFound if there is none.
	TrustMetadata(ctx context.Context, name string) ([]byte, error)
	// PutTrustMetadata uploads signed targets metadata, role name to
	// bytes; an *api.Error with ECONFLICT when another push came first.
	PutTrustMetadata(ctx context.Context, roles map[string][]byte) error
}

// ErrNotFound is what a Remote or a Fetcher wraps for a file it lacks.
var ErrNotFound = errors.New("no such metadata")

// SignBuilds adds the builds to their bins, signs each changed bin with
// key and uploads them. A bin not validly signed by key (one from before a
// targets key rotation) starts empty, so builds that only the old key
// signed stay refused until pushed again. It retries when another
// publisher changed a bin at the same time.
func SignBuilds(ctx context.Context, remote Remote, key *Key, builds []Build, now time.Time) error {
	var err error
	for range 5 {
		err = signOnce(ctx, remote, key, builds, now)
		var ae *api.Error
		if !errors.As(err, &ae) || ae.Code != api.ECONFLICT {
			return err
		}
	}
	return err
}

func signOnce(ctx context.Context, remote Remote, key *Key, builds []Build, now time.Time) error {
	data, err := remote.TrustMetadata(ctx, TargetsFile)
	if err != nil {
		return fmt.Errorf("sign: the server has no targets metadata (is it run with --trust-dir?): %w", err)
	}
	top, err := metadata.Targets().FromBytes(data)
	if err != nil {
		return fmt.Errorf("sign: the server's targets.json: %w", err)
	}
	d := top.Signed.Delegations
	if d == nil || d.SuccinctRoles == nil || !slices.Contains(d.SuccinctRoles.KeyIDs, key.ID) {
		return fmt.Errorf("sign: the server's targets.json (version %d) does not delegate to key %s: give the server the targets.json of this key's folder", top.Signed.Version, key.ID[:12])
	}
	bins := map[string]*metadata.Metadata[metadata.TargetsType]{}
	for _, b := range builds {
		path := TargetPath(b.Coordinate, b.Tags)
		name := d.SuccinctRoles.GetRolesForTarget(path)[0].Name
		bin, ok := bins[name]
		if !ok {
			if bin, err = currentBin(ctx, remote, top, name); err != nil {
				return err
			}
			bins[name] = bin
		}
		sum, err := hex.DecodeString(b.Digest)
		if err != nil || len(sum) != sha256.Size {
			return fmt.Errorf("sign %s: digest %q is not a SHA-256", path, b.Digest)
		}
		bin.Signed.Targets[path] = &metadata.TargetFiles{
			Length: b.Length,
			Hashes: metadata.Hashes{"sha256": sum},
			Path:   path,
		}
	}
	out := map[string][]byte{}
	for name, bin := range bins {
		bin.Signed.Version++
		bin.Signed.Expires = now.Add(BinExpiry).UTC().Truncate(time.Second)
		bin.ClearSignatures()
		if err := Sign(bin, key); err != nil {
			return err
		}
		if out[name], err = bin.ToBytes(false); err != nil {
			return err
		}
	}
	return remote.PutTrustMetadata(ctx, out)
}

// currentBin returns the server's bin name if the current delegation
// signed it, else an empty bin that continues its version numbers.
func currentBin(ctx context.Context, remote Remote, top *metadata.Metadata[metadata.TargetsType], name string) (*metadata.Metadata[metadata.TargetsType], error) {
	fresh := metadata.Targets()
	fresh.Signed.Version = 0
	data, err := remote.TrustMetadata(ctx, name+".json")
	if isNotFound(err) {
		return fresh, nil
	}
	if err != nil {
		return nil, fmt.Errorf("sign: fetch %s: %w", name, err)
	}
	bin, err := metadata.Targets().FromBytes(data)
	if err != nil {
		return nil, fmt.Errorf("sign: the server's %s: %w", name, err)
	}
	if top.VerifyDelegate(name, bin) != nil {
		fresh.Signed.Version = bin.Signed.Version
		return fresh, nil
	}
	if bin.Signed.Targets == nil {
		bin.Signed.Targets = map[string]*metadata.TargetFiles{}
	}
	return bin, nil
}
