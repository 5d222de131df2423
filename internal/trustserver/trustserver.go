// Package trustserver is the server's side of drover trust (The Update
// Framework): it holds the online snapshot and timestamp keys, imports the
// root and targets metadata the operator signed offline, accepts bins the
// publisher signed, and keeps snapshot and timestamp metadata signed and
// fresh so that agents can tell a live server from a frozen one.
//
// It never holds the root or targets keys: a compromised server can
// delay updates (until the timestamp expires) but cannot make an agent
// accept a build the publisher did not sign.
package trustserver

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/trustedmetadata"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/store"
	"github.com/drover-dev/drover/internal/trust"
)

// Config configures a Repository.
type Config struct {
	// Dir (server --trust-dir) holds snapshot.key and timestamp.key, and
	// root.json (with N.root.json of every earlier version) and
	// targets.json as the operator signed them. It is read again at every
	// Interval, so copying a rotation's files there needs no restart.
	Dir string
	// TimestampExpiry and SnapshotExpiry are the lifetimes of the online
	// metadata; each is signed again when half of its life is gone.
	// Defaults: 24h and 7 days.
	TimestampExpiry time.Duration
	SnapshotExpiry  time.Duration
	// Interval is how often Run reads Dir and refreshes; default 1 minute
	// (and at most a quarter of TimestampExpiry).
	Interval time.Duration
	Logger   *slog.Logger
	Now      func() time.Time
}

// Repository is the server's TUF repository over a store.
type Repository struct {
	cfg Config
	log *slog.Logger
	st  store.Trust
	mu  sync.Mutex
}

// New imports Dir and signs fresh online metadata; it fails when Dir
// lacks what a repository needs.
func New(ctx context.Context, cfg Config, st store.Trust) (*Repository, error) {
	if cfg.TimestampExpiry <= 0 {
		cfg.TimestampExpiry = 24 * time.Hour
	}
	if cfg.SnapshotExpiry <= 0 {
		cfg.SnapshotExpiry = 7 * 24 * time.Hour
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Minute
	}
	cfg.Interval = min(cfg.Interval, cfg.TimestampExpiry/4)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	r := &Repository{cfg: cfg, log: cfg.Logger, st: st}
	if err := r.Sync(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

// Run syncs at every Interval until ctx is done.
func (r *Repository) Run(ctx context.Context) {
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := r.Sync(ctx); err != nil && ctx.Err() == nil {
				r.log.Error("trust metadata", "err", err)
			}
		}
	}
}

// Sync imports newer root and targets metadata from Dir and signs
// snapshot and timestamp again when they changed, near their expiry, or
// were signed by keys the root no longer lists.
func (r *Repository) Sync(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	root, err := r.importRoots(ctx)
	if err != nil {
		return err
	}
	if err := r.importTargets(ctx, root); err != nil {
		return err
	}
	for range 3 {
		err = r.refresh(ctx, root, nil)
		if !errors.Is(err, store.ErrConflict) {
			return err
		}
	}
	return err
}

func (r *Repository) readDir(name string) ([]byte, error) {
	return os.ReadFile(filepath.Join(r.cfg.Dir, name))
}

// importRoots stores the roots of Dir newer than the stored one, each
// verified against the one before, and returns the newest.
func (r *Repository) importRoots(ctx context.Context) (*metadata.Metadata[metadata.RootType], error) {
	data, err := r.readDir(trust.RootFile)
	if err != nil {
		return nil, fmt.Errorf("trust dir: %w", err)
	}
	given, err := metadata.Root().FromBytes(data)
	if err != nil {
		return nil, fmt.Errorf("trust dir %s: %w", trust.RootFile, err)
	}
	cur, err := r.st.TrustFile(ctx, metadata.ROOT, 0)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	prev := cur.Data
	for v := cur.Version + 1; v <= given.Signed.Version; v++ {
		next := data
		if v < given.Signed.Version {
			if next, err = r.readDir(fmt.Sprintf("%d.%s", v, trust.RootFile)); err != nil {
				return nil, fmt.Errorf("trust dir: root version %d is needed to trust version %d: %w", v, given.Signed.Version, err)
			}
		}
		if prev == nil {
			if _, err := trust.LoadRoot(next); err != nil {
				return nil, err
			}
			if m, _ := metadata.Root().FromBytes(next); m.Signed.Version != v {
				return nil, fmt.Errorf("trust dir: %d.root.json is version %d", v, m.Signed.Version)
			}
		} else {
			tm, err := trustedmetadata.New(prev)
			if err != nil {
				return nil, fmt.Errorf("stored root: %w", err)
			}
			if _, err := tm.UpdateRoot(next); err != nil {
				return nil, fmt.Errorf("trust dir: root version %d: %w", v, err)
			}
		}
		if err := r.st.PutTrustFiles(ctx, []store.TrustFile{{Role: metadata.ROOT, Version: v, Data: next}}); err != nil && !errors.Is(err, store.ErrConflict) {
			return nil, err
		}
		r.log.Info("trust: root imported", "version", v)
		prev = next
	}
	newest, err := r.st.TrustFile(ctx, metadata.ROOT, 0)
	if err != nil {
		return nil, err
	}
	return metadata.Root().FromBytes(newest.Data)
}

func (r *Repository) importTargets(ctx context.Context, root *metadata.Metadata[metadata.RootType]) error {
	data, err := r.readDir(trust.TargetsFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("trust dir: %w", err)
	}
	t, err := metadata.Targets().FromBytes(data)
	if err != nil {
		return fmt.Errorf("trust dir %s: %w", trust.TargetsFile, err)
	}
	cur, err := r.st.TrustFile(ctx, metadata.TARGETS, 0)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if t.Signed.Version <= cur.Version {
		return nil
	}
	if err := root.VerifyDelegate(metadata.TARGETS, t); err != nil {
		return fmt.Errorf("trust dir %s is not signed by the root's targets key: %w", trust.TargetsFile, err)
	}
	if err := r.st.PutTrustFiles(ctx, []store.TrustFile{{Role: metadata.TARGETS, Version: t.Signed.Version, Data: data}}); err != nil && !errors.Is(err, store.ErrConflict) {
		return err
	}
	r.log.Info("trust: targets imported", "version", t.Signed.Version)
	return nil
}

// refresh signs a new snapshot (with bins' versions changed) and
// timestamp when needed and stores them with bins, all at once.
func (r *Repository) refresh(ctx context.Context, root *metadata.Metadata[metadata.RootType], bins []store.TrustFile) error {
	now := r.cfg.Now().UTC()
	snapKey, err := trust.LoadKey(filepath.Join(r.cfg.Dir, trust.SnapshotKey))
	if err != nil {
		return err
	}
	tsKey, err := trust.LoadKey(filepath.Join(r.cfg.Dir, trust.TimestampKey))
	if err != nil {
		return err
	}
	targets, err := r.st.TrustFile(ctx, metadata.TARGETS, 0)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("trust dir has no %s", trust.TargetsFile)
		}
		return err
	}
	snap, snapOK, err := loadRole(ctx, r.st, metadata.SNAPSHOT, metadata.Snapshot)
	if err != nil {
		return err
	}
	changed := !snapOK || root.VerifyDelegate(metadata.SNAPSHOT, snap) != nil ||
		snap.Signed.Expires.Sub(now) < r.cfg.SnapshotExpiry/2 ||
		snap.Signed.Meta["targets.json"] == nil || snap.Signed.Meta["targets.json"].Version != targets.Version ||
		len(bins) > 0
	files := bins
	if changed {
		next := metadata.Snapshot()
		if snapOK {
			next.Signed.Meta = snap.Signed.Meta
			next.Signed.Version = snap.Signed.Version + 1
		}
		next.Signed.Meta["targets.json"] = metadata.MetaFile(targets.Version)
		for _, b := range bins {
			next.Signed.Meta[b.Role+".json"] = metadata.MetaFile(b.Version)
		}
		next.Signed.Expires = now.Add(r.cfg.SnapshotExpiry).Truncate(time.Second)
		if err := trust.Sign(next, snapKey); err != nil {
			return err
		}
		data, err := next.ToBytes(false)
		if err != nil {
			return err
		}
		files = append(files, store.TrustFile{Role: metadata.SNAPSHOT, Version: next.Signed.Version, Data: data})
		snap = next
	}
	ts, tsOK, err := loadRole(ctx, r.st, metadata.TIMESTAMP, metadata.Timestamp)
	if err != nil {
		return err
	}
	if changed || !tsOK || root.VerifyDelegate(metadata.TIMESTAMP, ts) != nil ||
		ts.Signed.Meta["snapshot.json"] == nil || ts.Signed.Meta["snapshot.json"].Version != snap.Signed.Version ||
		ts.Signed.Expires.Sub(now) < r.cfg.TimestampExpiry/2 {
		next := metadata.Timestamp(now.Add(r.cfg.TimestampExpiry).Truncate(time.Second))
		if tsOK {
			next.Signed.Version = ts.Signed.Version + 1
		}
		next.Signed.Meta["snapshot.json"] = metadata.MetaFile(snap.Signed.Version)
		if err := trust.Sign(next, tsKey); err != nil {
			return err
		}
		data, err := next.ToBytes(false)
		if err != nil {
			return err
		}
		files = append(files, store.TrustFile{Role: metadata.TIMESTAMP, Version: next.Signed.Version, Data: data})
	}
	if len(files) == 0 {
		return nil
	}
	return r.st.PutTrustFiles(ctx, files)
}

func loadRole[T metadata.Roles](ctx context.Context, st store.Trust, role string, mk func(...time.Time) *metadata.Metadata[T]) (*metadata.Metadata[T], bool, error) {
	f, err := st.TrustFile(ctx, role, 0)
	if errors.Is(err, store.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	md, err := mk().FromBytes(f.Data)
	if err != nil {
		// Unreadable stored metadata is replaced, never served on.
		return nil, false, nil
	}
	return md, true, nil
}

// MaxUpload bounds the bins of one upload: all of them.
const MaxUpload = 1 << trust.BinBits

// Upload accepts bins the publisher signed (role name to bytes): each must
// be a bin of the stored targets' delegation, signed by its keys, newer
// than the one served and not expired. They are stored with a new
// snapshot and timestamp in one write.
func (r *Repository) Upload(ctx context.Context, roles map[string][]byte) error {
	if len(roles) == 0 || len(roles) > MaxUpload {
		return api.Errorf(api.EINVALID, fmt.Sprintf("upload between 1 and %d bins", MaxUpload))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	rootF, err := r.st.TrustFile(ctx, metadata.ROOT, 0)
	if err != nil {
		return err
	}
	root, err := metadata.Root().FromBytes(rootF.Data)
	if err != nil {
		return err
	}
	topF, err := r.st.TrustFile(ctx, metadata.TARGETS, 0)
	if err != nil {
		return err
	}
	top, err := metadata.Targets().FromBytes(topF.Data)
	if err != nil {
		return err
	}
	d := top.Signed.Delegations
	if d == nil || d.SuccinctRoles == nil {
		return api.Errorf(api.ECONFLICT, "the served targets.json delegates to no bins")
	}
	snap, _, err := loadRole(ctx, r.st, metadata.SNAPSHOT, metadata.Snapshot)
	if err != nil {
		return err
	}
	now := r.cfg.Now()
	var bins []store.TrustFile
	for name, data := range roles {
		if !d.SuccinctRoles.IsDelegatedRole(name) {
			return api.Errorf(api.EINVALID, fmt.Sprintf("%q is not a bin of the served targets metadata", name))
		}
		bin, err := metadata.Targets().FromBytes(data)
		if err != nil {
			return api.Errorf(api.EINVALID, fmt.Sprintf("%s: %v", name, err))
		}
		if err := top.VerifyDelegate(name, bin); err != nil {
			return api.Errorf(api.EFORBIDDEN, fmt.Sprintf("%s is not signed by the targets key the served targets.json delegates to: %v", name, err))
		}
		if bin.Signed.IsExpired(now) {
			return api.Errorf(api.EINVALID, fmt.Sprintf("%s is expired", name))
		}
		if snap != nil {
			if m := snap.Signed.Meta[name+".json"]; m != nil && bin.Signed.Version <= m.Version {
				return api.Errorf(api.ECONFLICT, fmt.Sprintf("%s version %d: the served one is version %d", name, bin.Signed.Version, m.Version))
			}
		}
		bins = append(bins, store.TrustFile{Role: name, Version: bin.Signed.Version, Data: data})
	}
	err = r.refresh(ctx, root, bins)
	if errors.Is(err, store.ErrConflict) {
		return api.Errorf(api.ECONFLICT, err.Error())
	}
	return err
}

var (
	versionedRoot = regexp.MustCompile(`^([1-9][0-9]{0,17})\.root\.json$`)
	roleFile      = regexp.MustCompile(`^([a-z][a-z0-9-]{0,31})\.json$`)
)

// File returns the metadata file name as served under /v1/trust/:
// "N.root.json" or "ROLE.json" (the newest). ErrNotFound (store) when
// there is none.
func (r *Repository) File(ctx context.Context, name string) ([]byte, error) {
	if m := versionedRoot.FindStringSubmatch(name); m != nil {
		v, _ := strconv.ParseInt(m[1], 10, 64)
		f, err := r.st.TrustFile(ctx, metadata.ROOT, v)
		return f.Data, err
	}
	if m := roleFile.FindStringSubmatch(name); m != nil {
		f, err := r.st.TrustFile(ctx, m[1], 0)
		return f.Data, err
	}
	return nil, api.Errorf(api.ENOTFOUND, fmt.Sprintf("no trust metadata %q", name))
}
