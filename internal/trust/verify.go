package trust

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/config"
	"github.com/theupdateframework/go-tuf/v2/metadata/trustedmetadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/updater"

	"github.com/drover-dev/drover/internal/api"
)

// The checks a build can fail, named in the agent's step-failed event.
const (
	CheckUnsigned    = "unsigned"    // no valid targets metadata lists the build
	CheckDigest      = "digest"      // listed, with another manifest digest or length
	CheckExpired     = "expired"     // metadata past its expiry (a frozen server)
	CheckRollback    = "rollback"    // metadata older than the agent already trusts
	CheckThreshold   = "threshold"   // metadata without enough valid signatures
	CheckUnavailable = "unavailable" // metadata could not be fetched or read
)

// Refused is the error of a build that failed a check.
type Refused struct {
	Check  string // one of the Check constants
	Target string // the build's target path
	Err    error
}

func (r *Refused) Error() string {
	return fmt.Sprintf("trust: %s refused (%s): %v", r.Target, r.Check, r.Err)
}

func (r *Refused) Unwrap() error { return r.Err }

// Fetcher gets metadata files from the server by name ("timestamp.json",
// "2.root.json", "bins-3a.json"); a missing one is an error wrapping
// ErrNotFound.
type Fetcher interface {
	TrustMetadata(ctx context.Context, name string) ([]byte, error)
}

// VerifierConfig configures a Verifier.
type VerifierConfig struct {
	// Dir keeps the trusted metadata between runs (the agent's
	// <home>/system/trust), so older or frozen metadata is caught.
	Dir string
	// Root is the root.json the operator gave (agent --trust-root): the
	// trust to start from when Dir holds none yet.
	Root []byte
	Now  func() time.Time
}

// Verifier checks builds against the TUF metadata the server serves.
// It is safe for concurrent use (calls are serialized).
type Verifier struct {
	cfg   VerifierConfig
	fetch Fetcher
	mu    sync.Mutex
}

// NewVerifier checks that cfg.Root is a root.json signed by its own
// threshold, and prepares cfg.Dir.
func NewVerifier(cfg VerifierConfig, fetch Fetcher) (*Verifier, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if _, err := LoadRoot(cfg.Root); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("trust: %w", err)
	}
	return &Verifier{cfg: cfg, fetch: fetch}, nil
}

// LoadRoot parses root.json and checks it is signed by a threshold of its
// own root keys.
func LoadRoot(data []byte) (*metadata.Metadata[metadata.RootType], error) {
	tm, err := trustedmetadata.New(data)
	if err != nil {
		return nil, fmt.Errorf("trust root: %w", err)
	}
	return tm.Root, nil
}

// trustedRoot is the newest root this machine trusts: the one kept in
// Dir, else the operator's.
func (v *Verifier) trustedRoot() []byte {
	data, err := os.ReadFile(filepath.Join(v.cfg.Dir, RootFile))
	if err == nil {
		if local, lerr := LoadRoot(data); lerr == nil {
			if given, gerr := LoadRoot(v.cfg.Root); gerr != nil || local.Signed.Version >= given.Signed.Version {
				return data
			}
		}
	}
	return v.cfg.Root
}

// Check refreshes the metadata the TUF way (root chain, timestamp,
// snapshot, targets, bins: signatures, thresholds, versions, expiry) and
// checks that every build is listed with its digest (and length, when
// given). The first failure is a *Refused.
func (v *Verifier) Check(ctx context.Context, builds []Build) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	up, err := v.updater(ctx)
	if err == nil {
		err = up.Refresh()
	}
	if err != nil {
		target := ""
		if len(builds) > 0 {
			target = TargetPath(builds[0].Coordinate, builds[0].Tags)
		}
		return &Refused{Check: classify(err), Target: target, Err: err}
	}
	for _, b := range builds {
		path := TargetPath(b.Coordinate, b.Tags)
		tf, err := up.GetTargetInfo(path)
		if err != nil {
			check := classify(err)
			if check == CheckUnavailable && (strings.Contains(err.Error(), "not found") || strings.Contains(err.Error(), "does not contain information")) {
				check = CheckUnsigned
			}
			return &Refused{Check: check, Target: path, Err: err}
		}
		want, _ := hex.DecodeString(b.Digest)
		got := tf.Hashes["sha256"]
		if len(want) != sha256.Size || !bytes.Equal(got, want) {
			return &Refused{Check: CheckDigest, Target: path,
				Err: fmt.Errorf("manifest %s is not the signed %s", short(b.Digest), short(hex.EncodeToString(got)))}
		}
		if b.Length != 0 && tf.Length != b.Length {
			return &Refused{Check: CheckDigest, Target: path,
				Err: fmt.Errorf("manifest is %d bytes, the signed one %d", b.Length, tf.Length)}
		}
	}
	return nil
}

func short(d string) string {
	if len(d) > 12 {
		return d[:12]
	}
	return d
}

// classify names the check an error of go-tuf failed.
func classify(err error) string {
	switch {
	case errors.Is(err, &metadata.ErrExpiredMetadata{}):
		return CheckExpired
	case errors.Is(err, &metadata.ErrBadVersionNumber{}):
		return CheckRollback
	case errors.Is(err, &metadata.ErrUnsignedMetadata{}):
		// go-tuf says how many trusted keys signed: none at all is an
		// unsigned file (a key no longer trusted, a forgery), some is a
		// threshold not reached.
		var u *metadata.ErrUnsignedMetadata
		if errors.As(err, &u) && strings.Contains(u.Msg, "got 0,") {
			return CheckUnsigned
		}
		return CheckThreshold
	case errors.Is(err, &metadata.ErrLengthOrHashMismatch{}):
		return CheckDigest
	}
	return CheckUnavailable
}

// metadataURL is the base the updater builds file URLs on; the fetcher
// turns them back into names.
const metadataURL = "drover-trust:/"

func (v *Verifier) updater(ctx context.Context) (*updater.Updater, error) {
	cfg, err := config.New(metadataURL, v.trustedRoot())
	if err != nil {
		return nil, err
	}
	cfg.LocalMetadataDir = v.cfg.Dir
	cfg.LocalTargetsDir = filepath.Join(v.cfg.Dir, "targets")
	cfg.Fetcher = fetcher{ctx: ctx, f: v.fetch}
	up, err := updater.New(cfg)
	if err != nil {
		return nil, err
	}
	up.UnsafeSetRefTime(v.cfg.Now().UTC())
	return up, nil
}

// fetcher adapts a Fetcher to go-tuf's.
type fetcher struct {
	ctx context.Context
	f   Fetcher
}

func (f fetcher) DownloadFile(urlPath string, maxLength int64, _ time.Duration) ([]byte, error) {
	name := strings.TrimPrefix(urlPath, metadataURL)
	data, err := f.f.TrustMetadata(f.ctx, name)
	if isNotFound(err) {
		return nil, &metadata.ErrDownloadHTTP{StatusCode: 404, URL: name}
	}
	if err != nil {
		return nil, &metadata.ErrDownload{Msg: fmt.Sprintf("%s: %v", name, err)}
	}
	if int64(len(data)) > maxLength {
		return nil, &metadata.ErrDownloadLengthMismatch{Msg: fmt.Sprintf("%s is over %d bytes", name, maxLength)}
	}
	return data, nil
}

// isNotFound tells a file the server lacks from a failure to ask.
func isNotFound(err error) bool {
	var ae *api.Error
	return errors.Is(err, ErrNotFound) || (errors.As(err, &ae) && ae.Code == api.ENOTFOUND)
}
