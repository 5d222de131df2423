package trust

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/drover-dev/drover/internal/atomicfile"
)

// Files of a key folder (drover trust init --dir K). The root keys and the
// targets key stay offline; the snapshot and timestamp keys go to the
// server (drover server --trust-dir) with root.json and targets.json.
const (
	RootFile      = "root.json"
	TargetsFile   = "targets.json"
	TargetsKey    = "targets.key"
	SnapshotKey   = "snapshot.key"
	TimestampKey  = "timestamp.key"
	rootKeyPrefix = "root-"
)

// Lifetimes of the metadata signed offline; the server's online roles
// have their own (trustserver).
const (
	RootExpiry    = 365 * 24 * time.Hour
	TargetsExpiry = 365 * 24 * time.Hour
)

// BinPrefix and BinBits name the hashed bins: 2^BinBits roles named
// BinPrefix-00 ... BinPrefix-ff.
const (
	BinPrefix = "bins"
	BinBits   = 8
)

// ErrExists means trust init found a key folder already set up.
var ErrExists = errors.New("already holds trust metadata")

// InitConfig says how many root keys to make and how many must sign.
type InitConfig struct {
	Dir       string
	Threshold int // root signatures needed; default 1
	Keys      int // root keys made; default max(Threshold, 1)
	Now       time.Time
}

// Init makes a key folder: root keys, a targets key, snapshot and
// timestamp keys, root.json (version 1, also as 1.root.json) and the
// top-level targets.json that delegates to the hashed bins.
func Init(cfg InitConfig) error {
	if cfg.Threshold <= 0 {
		cfg.Threshold = 1
	}
	if cfg.Keys == 0 {
		cfg.Keys = cfg.Threshold
	}
	if cfg.Keys < cfg.Threshold {
		return fmt.Errorf("threshold %d is more than the %d root keys", cfg.Threshold, cfg.Keys)
	}
	if cfg.Keys > 16 {
		return fmt.Errorf("%d root keys: at most 16", cfg.Keys)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return fmt.Errorf("trust init: %w", err)
	}
	if _, err := os.Stat(filepath.Join(cfg.Dir, RootFile)); err == nil {
		return fmt.Errorf("%s %w", cfg.Dir, ErrExists)
	}
	root := metadata.Root(cfg.Now.Add(RootExpiry).UTC().Truncate(time.Second))
	root.Signed.ConsistentSnapshot = false
	var rootKeys []*Key
	for i := range cfg.Keys {
		k, err := newKeyFile(filepath.Join(cfg.Dir, fmt.Sprintf("%s%d.key", rootKeyPrefix, i+1)))
		if err != nil {
			return err
		}
		rootKeys = append(rootKeys, k)
		if err := root.Signed.AddKey(k.Public, metadata.ROOT); err != nil {
			return err
		}
	}
	root.Signed.Roles[metadata.ROOT].Threshold = cfg.Threshold
	var targetsKey *Key
	for _, r := range []struct{ role, file string }{
		{metadata.TARGETS, TargetsKey}, {metadata.SNAPSHOT, SnapshotKey}, {metadata.TIMESTAMP, TimestampKey},
	} {
		k, err := newKeyFile(filepath.Join(cfg.Dir, r.file))
		if err != nil {
			return err
		}
		if err := root.Signed.AddKey(k.Public, r.role); err != nil {
			return err
		}
		if r.role == metadata.TARGETS {
			targetsKey = k
		}
	}
	if err := Sign(root, rootKeys...); err != nil {
		return err
	}
	targets := metadata.Targets(cfg.Now.Add(TargetsExpiry).UTC().Truncate(time.Second))
	delegate(targets, targetsKey)
	if err := Sign(targets, targetsKey); err != nil {
		return err
	}
	if err := writeMetadata(filepath.Join(cfg.Dir, TargetsFile), targets); err != nil {
		return err
	}
	return writeRoot(cfg.Dir, root)
}

// delegate makes targets delegate every target path to the hashed bins,
// signed by k.
func delegate(targets *metadata.Metadata[metadata.TargetsType], k *Key) {
	targets.Signed.Delegations = &metadata.Delegations{
		Keys: map[string]*metadata.Key{k.ID: k.Public},
		SuccinctRoles: &metadata.SuccinctRoles{
			KeyIDs: []string{k.ID}, Threshold: 1, BitLength: BinBits, NamePrefix: BinPrefix,
		},
	}
}

func newKeyFile(path string) (*Key, error) {
	k, pemData, err := NewKey()
	if err != nil {
		return nil, err
	}
	if err := atomicfile.WriteFile(path, pemData, 0o600); err != nil {
		return nil, err
	}
	return k, nil
}

func writeMetadata[T metadata.Roles](path string, md *metadata.Metadata[T]) error {
	data, err := md.ToBytes(true)
	if err != nil {
		return fmt.Errorf("encode %s: %w", filepath.Base(path), err)
	}
	return atomicfile.WriteFile(path, data, 0o644)
}

// writeRoot writes root as N.root.json and root.json.
func writeRoot(dir string, root *metadata.Metadata[metadata.RootType]) error {
	if err := writeMetadata(filepath.Join(dir, fmt.Sprintf("%d.%s", root.Signed.Version, RootFile)), root); err != nil {
		return err
	}
	return writeMetadata(filepath.Join(dir, RootFile), root)
}

// Roles that Rotate accepts.
var rotatable = []string{metadata.ROOT, metadata.TARGETS, metadata.SNAPSHOT, metadata.TIMESTAMP}

// Rotate gives role new keys in the key folder dir. The new root (one
// version up) is signed by the old root keys; a root rotation is signed
// by the old and the new root keys, so agents that trust the old root
// accept it. A targets rotation also re-signs targets.json to delegate the
// bins to the new key: builds signed with the old one are refused until
// they are pushed (signed) again.
func Rotate(dir, role string, now time.Time) error {
	if !slices.Contains(rotatable, role) {
		return fmt.Errorf("role %q: want one of %s", role, strings.Join(rotatable, ", "))
	}
	root, err := metadata.Root().FromFile(filepath.Join(dir, RootFile))
	if err != nil {
		return fmt.Errorf("read %s: %w", filepath.Join(dir, RootFile), err)
	}
	oldKeys, err := rootKeys(dir, root)
	if err != nil {
		return err
	}
	next := *root
	next.Signed.Version++
	next.Signed.Expires = now.Add(RootExpiry).UTC().Truncate(time.Second)
	next.ClearSignatures()
	r := next.Signed.Roles[role]
	old := r.KeyIDs
	r.KeyIDs = nil
	var newKeys []*Key
	type keyFile struct {
		path string
		pem  []byte
	}
	var files []keyFile
	count := len(old)
	for i := range count {
		k, pemData, err := NewKey()
		if err != nil {
			return err
		}
		name := map[string]string{metadata.TARGETS: TargetsKey, metadata.SNAPSHOT: SnapshotKey, metadata.TIMESTAMP: TimestampKey}[role]
		if role == metadata.ROOT {
			name = fmt.Sprintf("%s%d.key", rootKeyPrefix, i+1)
		}
		files = append(files, keyFile{filepath.Join(dir, name), pemData})
		newKeys = append(newKeys, k)
		if err := next.Signed.AddKey(k.Public, role); err != nil {
			return err
		}
	}
	for _, id := range old {
		if !usedKey(&next.Signed, id) {
			delete(next.Signed.Keys, id)
		}
	}
	if err := Sign(&next, oldKeys...); err != nil {
		return err
	}
	if role == metadata.ROOT {
		if err := Sign(&next, newKeys...); err != nil {
			return err
		}
	}
	var targets *metadata.Metadata[metadata.TargetsType]
	if role == metadata.TARGETS {
		targets, err = metadata.Targets().FromFile(filepath.Join(dir, TargetsFile))
		if err != nil {
			return fmt.Errorf("read %s: %w", TargetsFile, err)
		}
		targets.Signed.Version++
		targets.Signed.Expires = now.Add(TargetsExpiry).UTC().Truncate(time.Second)
		targets.ClearSignatures()
		delegate(targets, newKeys[0])
		if err := Sign(targets, newKeys[0]); err != nil {
			return err
		}
	}
	// Keys first: a crash after them leaves the old root in place and the
	// rotation can be run again.
	for _, f := range files {
		if err := atomicfile.WriteFile(f.path, f.pem, 0o600); err != nil {
			return err
		}
	}
	if targets != nil {
		if err := writeMetadata(filepath.Join(dir, TargetsFile), targets); err != nil {
			return err
		}
	}
	return writeRoot(dir, &next)
}

func usedKey(root *metadata.RootType, id string) bool {
	for _, r := range root.Roles {
		if slices.Contains(r.KeyIDs, id) {
			return true
		}
	}
	return false
}

// rootKeys loads the root keys of dir that root lists, and checks there
// are at least its threshold of them.
func rootKeys(dir string, root *metadata.Metadata[metadata.RootType]) ([]*Key, error) {
	role := root.Signed.Roles[metadata.ROOT]
	matches, err := filepath.Glob(filepath.Join(dir, rootKeyPrefix+"*.key"))
	if err != nil {
		return nil, err
	}
	var keys []*Key
	for _, m := range matches {
		k, err := LoadKey(m)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return nil, err
		}
		if slices.Contains(role.KeyIDs, k.ID) {
			keys = append(keys, k)
		}
	}
	if len(keys) < role.Threshold {
		return nil, fmt.Errorf("%s holds %d of the root keys, %d are needed to sign", dir, len(keys), role.Threshold)
	}
	return keys, nil
}
