package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/blob"
	"github.com/drover-dev/drover/internal/pki"
	"github.com/drover-dev/drover/internal/store"
	"github.com/drover-dev/drover/internal/transfer"
)

// TransferConfig configures how blobs travel in fewer bytes: compressed
// forms of blobs, pack streams and per-file deltas, all kept on disk
// once made.
type TransferConfig struct {
	// Dir keeps compressed forms, packs and deltas, beside the blobs.
	// Empty turns them off: agents then fetch whole blobs, as from an
	// older server.
	Dir string
	// MaxCache bounds the bytes kept in Dir; 0 = 4 GiB. The least
	// recently used go first.
	MaxCache int64
	// DeltaWorkers is how many deltas are made at once; 0 = 1. Each holds
	// a base and a target (at most transfer.MaxDeltaFile each) in memory.
	DeltaWorkers int
	// DeltaWait bounds how long a pack request waits for deltas being
	// made; those not ready by then travel whole (and the delta is kept
	// for the next device). 0 = 30s.
	DeltaWait time.Duration
	// MaxPack bounds how many blobs one pack request names; 0 = 20000.
	MaxPack int
}

// xfer is the server's transfer state: the disk cache and the delta
// workers.
type xfer struct {
	cfg   TransferConfig
	blobs blob.Store
	log   interface{ Warn(string, ...any) }

	trimMu sync.Mutex   // one trim at a time
	total  atomic.Int64 // bytes in the cache, about: counted on create, recounted by trim

	ctx    context.Context // cancelled by stop
	cancel context.CancelFunc
	sem    chan *transfer.Differ // one per delta worker, reused from delta to delta
	packs  chan struct{}         // packs being made: each holds a 64 MiB window
	wg     sync.WaitGroup
	mu     sync.Mutex
	busy   map[string]chan struct{} // delta key -> closed when made
}

// Cache folders under TransferConfig.Dir.
const (
	zDir     = "zstd"  // zstd/<digest>: a blob compressed alone
	deltaDir = "delta" // delta/<base>-<target>: a delta, empty when none is worth it
	packDir  = "pack"  // pack/<key>: a whole pack answer
	tmpDir   = "tmp"   // work in progress, renamed into place
)

func newXfer(cfg TransferConfig, blobs blob.Store, log interface{ Warn(string, ...any) }) (*xfer, error) {
	if cfg.Dir == "" {
		return nil, nil
	}
	if cfg.MaxCache == 0 {
		cfg.MaxCache = 4 << 30
	}
	if cfg.DeltaWorkers == 0 {
		cfg.DeltaWorkers = 1
	}
	if cfg.DeltaWait == 0 {
		cfg.DeltaWait = 30 * time.Second
	}
	if cfg.MaxPack == 0 {
		cfg.MaxPack = 20000
	}
	for _, d := range []string{zDir, deltaDir, packDir, tmpDir} {
		if err := os.MkdirAll(filepath.Join(cfg.Dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("transfer cache: %w", err)
		}
	}
	// Leftovers of a crash are never complete.
	entries, _ := os.ReadDir(filepath.Join(cfg.Dir, tmpDir))
	for _, e := range entries {
		_ = os.Remove(filepath.Join(cfg.Dir, tmpDir, e.Name()))
	}
	ctx, cancel := context.WithCancel(context.Background())
	x := &xfer{cfg: cfg, blobs: blobs, log: log, ctx: ctx, cancel: cancel,
		sem: make(chan *transfer.Differ, cfg.DeltaWorkers), busy: map[string]chan struct{}{},
		packs: make(chan struct{}, maxPacksMaking)}
	for range cfg.DeltaWorkers {
		x.sem <- &transfer.Differ{}
	}
	x.trim()
	return x, nil
}

// stop cancels delta work and waits for the workers.
func (x *xfer) stop() {
	if x == nil {
		return
	}
	x.cancel()
	x.wg.Wait()
	for range x.cfg.DeltaWorkers {
		(<-x.sem).Close()
	}
}

func (x *xfer) path(kind, name string) string { return filepath.Join(x.cfg.Dir, kind, name) }

// open opens a cached file and marks it used.
func (x *xfer) open(kind, name string) (*os.File, error) {
	f, err := os.Open(x.path(kind, name))
	if err == nil {
		now := time.Now()
		_ = os.Chtimes(f.Name(), now, now)
	}
	return f, err
}

// create writes a cache file through fn, atomically: a reader sees it
// whole or not at all. keep=false leaves the result as a temp file for
// the caller to use once and remove.
func (x *xfer) create(kind, name string, keep bool, fn func(w *os.File) error) (string, error) {
	f, err := os.CreateTemp(filepath.Join(x.cfg.Dir, tmpDir), kind+"-*")
	if err != nil {
		return "", err
	}
	err = fn(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	if !keep {
		return f.Name(), nil
	}
	final := x.path(kind, name)
	if err := os.Rename(f.Name(), final); err != nil {
		os.Remove(f.Name())
		return "", err
	}
	x.added(final)
	return final, nil
}

// added counts a new cache file and trims the cache when it is over its
// bound.
func (x *xfer) added(path string) {
	if fi, err := os.Stat(path); err == nil && x.total.Add(fi.Size()) > x.cfg.MaxCache {
		x.trim()
	}
}

// trim counts the cache and removes the least recently used files while
// it is over its bound.
func (x *xfer) trim() {
	if !x.trimMu.TryLock() {
		return
	}
	defer x.trimMu.Unlock()
	type entry struct {
		path string
		size int64
		used time.Time
	}
	var all []entry
	var total int64
	for _, kind := range []string{zDir, deltaDir, packDir} {
		_ = filepath.WalkDir(filepath.Join(x.cfg.Dir, kind), func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return nil
			}
			if fi, err := d.Info(); err == nil {
				all = append(all, entry{p, fi.Size(), fi.ModTime()})
				total += fi.Size()
			}
			return nil
		})
	}
	defer func() { x.total.Store(total) }()
	if total <= x.cfg.MaxCache {
		return
	}
	sort.Slice(all, func(i, j int) bool { return all[i].used.Before(all[j].used) })
	for _, e := range all {
		if total <= x.cfg.MaxCache*9/10 {
			break
		}
		if os.Remove(e.path) == nil {
			total -= e.size
		}
	}
}

// compressed returns the cached zstd form of a blob, making it on first
// use; nil when the blob does not get smaller compressed.
//
// One request compresses a blob; others asking for it meanwhile (a fleet
// given a new state fetches the same blobs at once) wait for its result
// instead of each compressing it again.
func (x *xfer) compressed(ctx context.Context, digest string) (*os.File, error) {
	key := zDir + "/" + digest
	for {
		f, err := x.open(zDir, digest)
		if err == nil {
			if fi, err := f.Stat(); err == nil && fi.Size() == 0 {
				f.Close()
				return nil, nil // marked: not worth it
			}
			return f, nil
		}
		x.mu.Lock()
		ch, busy := x.busy[key]
		if !busy {
			ch = make(chan struct{})
			x.busy[key] = ch
		}
		x.mu.Unlock()
		if busy {
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		f, err = x.compress(ctx, digest)
		x.mu.Lock()
		delete(x.busy, key)
		x.mu.Unlock()
		close(ch)
		return f, err
	}
}

// compress makes the cached zstd form of a blob (compressed).
func (x *xfer) compress(ctx context.Context, digest string) (*os.File, error) {
	src, err := x.blobs.Open(ctx, digest)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return nil, err
	}
	tmp, err := x.create(zDir, digest, false, func(w *os.File) error {
		zw, err := zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedBestCompression),
			zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(true))
		if err != nil {
			return err
		}
		if _, err := io.Copy(zw, src); err != nil {
			zw.Close()
			return err
		}
		return zw.Close()
	})
	if err != nil {
		return nil, fmt.Errorf("compress blob %s: %w", digest, err)
	}
	defer os.Remove(tmp)
	zfi, err := os.Stat(tmp)
	if err != nil {
		return nil, err
	}
	if zfi.Size() >= fi.Size() {
		_, err := x.create(zDir, digest, true, func(*os.File) error { return nil })
		return nil, err
	}
	if err := os.Rename(tmp, x.path(zDir, digest)); err != nil {
		return nil, err
	}
	x.added(x.path(zDir, digest))
	return x.open(zDir, digest)
}

func deltaKey(base, target string) string { return base + "-" + target }

// delta returns the cached delta from base to target: ok is false while
// it is not made yet (want starts making it), data is empty when no delta
// is worth sending.
func (x *xfer) delta(base, target string) (data []byte, ok bool) {
	data, err := os.ReadFile(x.path(deltaDir, deltaKey(base, target)))
	if err != nil {
		return nil, false
	}
	return data, true
}

// want starts making the delta from base to target on a delta worker,
// unless it exists or is being made, and returns a channel closed when
// it is done (or given up).
func (x *xfer) want(base, target string) <-chan struct{} {
	key := deltaKey(base, target)
	x.mu.Lock()
	defer x.mu.Unlock()
	if ch, ok := x.busy[key]; ok {
		return ch
	}
	ch := make(chan struct{})
	if _, err := os.Stat(x.path(deltaDir, key)); err == nil || x.ctx.Err() != nil {
		close(ch)
		return ch
	}
	x.busy[key] = ch
	x.wg.Add(1)
	go func() {
		defer x.wg.Done()
		defer func() {
			x.mu.Lock()
			delete(x.busy, key)
			x.mu.Unlock()
			close(ch)
		}()
		var d *transfer.Differ
		select {
		case d = <-x.sem:
		case <-x.ctx.Done():
			return
		}
		defer func() { x.sem <- d }()
		if err := x.makeDelta(d, base, target); err != nil && x.ctx.Err() == nil {
			x.log.Warn("make delta", "base", base, "target", target, "err", err)
		}
	}()
	return ch
}

// makeDelta computes one delta and caches it; an empty file records that
// a delta would not be clearly smaller than the blob compressed.
func (x *xfer) makeDelta(d *transfer.Differ, base, target string) error {
	read := func(d string) ([]byte, error) {
		n, err := x.blobs.Stat(x.ctx, d)
		if err != nil {
			return nil, err
		}
		if n > transfer.MaxDeltaFile {
			return nil, errTooLarge
		}
		f, err := x.blobs.Open(x.ctx, d)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		return io.ReadAll(io.LimitReader(f, transfer.MaxDeltaFile))
	}
	b, err := read(base)
	var t []byte
	if err == nil {
		t, err = read(target)
	}
	var data []byte
	switch {
	case errors.Is(err, errTooLarge):
		// Too large to hold: no delta, the blob travels whole.
	case err != nil:
		return err
	default:
		if data, err = d.Delta(b, t); err != nil {
			return err
		}
		// Worth it only when clearly smaller than the blob compressed
		// on its own (gzip'd files, say, do not compress at all).
		whole, err := d.CompressedSize(t)
		if err != nil {
			return err
		}
		if len(data) > whole*9/10 {
			data = nil
		}
	}
	_, err = x.create(deltaDir, deltaKey(base, target), true, func(w *os.File) error {
		_, err := w.Write(data)
		return err
	})
	return err
}

var errTooLarge = errors.New("too large for a delta")

// maxPacksMaking bounds the packs made at once (more wait), and so the
// server's memory: each compresses over a 64 MiB window.
const maxPacksMaking = 2

// packKey names a pack answer by what was asked.
func packKey(req api.PackRequest) string {
	h := sha256.New()
	if req.Format >= transfer.PackFormat2 {
		fmt.Fprintf(h, "format %d\n", transfer.PackFormat2)
	}
	for _, d := range req.Digests {
		fmt.Fprintf(h, "%s:%s\n", d, req.Bases[d])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// handlePack answers POST /v1/blobs/pack: the named blobs, and deltas
// where a base is given and a delta is ready, in one zstd stream.
func (s *Server) handlePack(w http.ResponseWriter, r *http.Request, p peer) error {
	x := s.xfer
	if x == nil {
		return api.Errorf(api.ENOTFOUND, fmt.Sprintf("no such call: %s %s", r.Method, r.URL.Path))
	}
	var req api.PackRequest
	if err := readJSON(r, 16<<20, &req); err != nil {
		return err
	}
	if len(req.Digests) == 0 || len(req.Digests) > x.cfg.MaxPack {
		return api.Errorf(api.EINVALID, fmt.Sprintf("a pack names 1 to %d blobs, not %d", x.cfg.MaxPack, len(req.Digests)))
	}
	seen := make(map[string]bool, len(req.Digests))
	for _, d := range req.Digests {
		if !api.ValidDigest(d) {
			return api.Errorf(api.EINVALID, fmt.Sprintf("invalid digest %q", d))
		}
		if seen[d] {
			return api.Errorf(api.EINVALID, fmt.Sprintf("digest %s named twice", d))
		}
		seen[d] = true
	}
	for t, b := range req.Bases {
		if !seen[t] || !api.ValidDigest(b) || b == t {
			return api.Errorf(api.EINVALID, fmt.Sprintf("base %q of %q: want a valid digest for a blob the pack names", b, t))
		}
	}
	if err := s.mayReadAll(r.Context(), p, req); err != nil {
		return err
	}
	key := packKey(req)
	if f, err := x.open(packDir, key); err == nil {
		defer f.Close()
		servePack(w, r, f, key)
		return nil
	}
	// Deltas are made on the workers; this request waits for them a
	// bounded time, other requests not at all.
	var waits []<-chan struct{}
	for _, t := range req.Digests {
		if b := req.Bases[t]; b != "" {
			waits = append(waits, x.want(b, t))
		}
	}
	deadline := time.NewTimer(x.cfg.DeltaWait)
	defer deadline.Stop()
	complete := true
wait:
	for _, ch := range waits {
		select {
		case <-ch:
		case <-deadline.C:
			complete = false
			break wait
		case <-r.Context().Done():
			return r.Context().Err()
		}
	}
	select {
	case x.packs <- struct{}{}:
	case <-r.Context().Done():
		return r.Context().Err()
	}
	defer func() { <-x.packs }()
	if complete {
		// Made by a request that waited here for the same answer.
		if f, err := x.open(packDir, key); err == nil {
			defer f.Close()
			servePack(w, r, f, key)
			return nil
		}
	}
	name, err := x.create(packDir, key, complete, func(w *os.File) error {
		return s.writePack(r.Context(), w, req)
	})
	if err != nil {
		return fmt.Errorf("make pack: %w", err)
	}
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	if !complete {
		// Made for this answer only: it cannot be resumed.
		os.Remove(name)
		key = ""
	}
	servePack(w, r, f, key)
	return nil
}

// servePack sends a pack answer. One kept in the cache carries its key as
// ETag, so a dropped download resumes with Range and If-Range.
func servePack(w http.ResponseWriter, r *http.Request, f *os.File, key string) {
	w.Header().Set("Content-Type", transfer.PackContentType)
	if key == "" {
		r.Header.Del("Range")
	} else {
		w.Header().Set("ETag", `"pack-`+key+`"`)
	}
	http.ServeContent(w, r, "", time.Time{}, f)
}

// writePack writes the pack stream of req onto f: each blob as a delta
// when one is ready and worth it, else whole. In format 2, x86-64 ELF
// files go through the x86 filter when that makes them smaller: a pass
// with the filter and one without measure each file's share of the
// stream, and when some file is smaller unfiltered a third pass writes
// each file the smaller way (files that share code, such as git's
// programs, match each other better unfiltered).
func (s *Server) writePack(ctx context.Context, f *os.File, req api.PackRequest) error {
	// The whole blobs' sizes bound what the pack carries (a delta is
	// smaller than its blob): the stream's window is fitted to it.
	var total int64
	entries := make([]packEntry, len(req.Digests))
	for i, d := range req.Digests {
		n, err := s.blobs.Stat(ctx, d)
		if err != nil {
			return err
		}
		total += n
		e := packEntry{digest: d, size: n}
		if b := req.Bases[d]; b != "" {
			if data, ok := s.xfer.delta(b, d); ok && len(data) > 0 {
				e.base, e.delta = b, data
			}
		}
		entries[i] = e
	}
	if req.Format < transfer.PackFormat2 {
		_, err := s.packPass(ctx, f, req, total, entries, nil)
		return err
	}
	filter := make([]bool, len(entries))
	anyELF := false
	for i, e := range entries {
		if e.base == "" && e.size >= minFilterFile && e.size <= transfer.MaxFilterFile {
			if filter[i], _ = s.isX86ELF(ctx, e.digest); filter[i] {
				anyELF = true
			}
		}
	}
	if !anyELF {
		_, err := s.packPass(ctx, f, req, total, entries, nil)
		return err
	}
	plain, err := s.packPass(ctx, io.Discard, req, total, entries, nil)
	if err != nil {
		return err
	}
	filtered, err := s.packPass(ctx, f, req, total, entries, filter)
	if err != nil {
		return err
	}
	mixed := false
	for i := range filter {
		if filter[i] && filtered[i] > plain[i] {
			filter[i], mixed = false, true
		}
	}
	if !mixed {
		return nil
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if err := f.Truncate(0); err != nil {
		return err
	}
	_, err = s.packPass(ctx, f, req, total, entries, filter)
	return err
}

// minFilterFile is the smallest file the x86 filter is tried on: below
// it the entry's share of the stream cannot be told.
const minFilterFile = 4 << 10

// packEntry is one blob of a pack answer: a delta from base when one is
// ready, else the whole blob.
type packEntry struct {
	digest, base string
	size         int64
	delta        []byte
}

// packPass writes one pack stream of entries onto w, filtering those
// filter marks, and returns each entry's share of the compressed stream.
func (s *Server) packPass(ctx context.Context, w io.Writer, req api.PackRequest, total int64, entries []packEntry, filter []bool) ([]int64, error) {
	var pw *transfer.PackWriter
	var err error
	if req.Format >= transfer.PackFormat2 {
		pw, err = transfer.NewPackWriter2(w, total, req.Digests)
	} else {
		pw, err = transfer.NewPackWriter(w, total)
	}
	if err != nil {
		return nil, err
	}
	shares := make([]int64, len(entries))
	for i, e := range entries {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		before := pw.Written()
		switch {
		case e.base != "":
			err = pw.Delta(e.digest, e.base, e.delta)
		case filter != nil && filter[i]:
			var data []byte
			if data, err = s.readBlob(ctx, e.digest, e.size); err == nil {
				err = pw.Filtered(e.digest, data)
			}
		default:
			var f *os.File
			if f, err = s.blobs.Open(ctx, e.digest); err == nil {
				err = pw.Blob(e.digest, e.size, f)
				f.Close()
			}
		}
		if err != nil {
			return nil, err
		}
		shares[i] = pw.Written() - before
	}
	return shares, pw.Close()
}

// readBlob reads a blob of size bytes whole.
func (s *Server) readBlob(ctx context.Context, digest string, size int64) ([]byte, error) {
	f, err := s.blobs.Open(ctx, digest)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data := make([]byte, size)
	if _, err := io.ReadFull(f, data); err != nil {
		return nil, fmt.Errorf("read blob %s: %w", digest, err)
	}
	return data, nil
}

// isX86ELF reports whether a blob starts as an x86-64 ELF file.
func (s *Server) isX86ELF(ctx context.Context, digest string) (bool, error) {
	f, err := s.blobs.Open(ctx, digest)
	if err != nil {
		return false, err
	}
	defer f.Close()
	head := make([]byte, 20)
	if _, err := io.ReadFull(f, head); err != nil {
		return false, nil
	}
	return transfer.IsX86ELF(head), nil
}

// mayReadAll checks that the caller may read every blob of req, exactly
// as GET /v1/blobs/{digest} does, and every base too: a base must belong
// to the device's desired state or to a build it reports installed.
func (s *Server) mayReadAll(ctx context.Context, p peer, req api.PackRequest) error {
	if p.role == pki.RoleAdmin {
		return nil
	}
	res, err := s.res.get(ctx, p.name)
	if err != nil {
		return err
	}
	for _, d := range req.Digests {
		if !res.allowed[d] {
			return api.Errorf(api.EFORBIDDEN, fmt.Sprintf("blob %s is not part of device %s's desired state", d, p.name))
		}
	}
	var installed map[string]bool
	for _, b := range sortedValues(req.Bases) {
		if res.allowed[b] {
			continue
		}
		if installed == nil {
			if installed, err = s.installedBlobs(ctx, p.name); err != nil {
				return err
			}
		}
		if !installed[b] {
			return api.Errorf(api.EFORBIDDEN, fmt.Sprintf("blob %s is neither desired nor installed on device %s", b, p.name))
		}
	}
	return nil
}

// installedBlobs returns the blobs of the builds a device last reported
// installed.
func (s *Server) installedBlobs(ctx context.Context, device string) (map[string]bool, error) {
	out := map[string]bool{}
	dev, err := s.store.Device(ctx, device)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return out, nil
		}
		return nil, err
	}
	for _, app := range dev.Installed {
		m, err := s.res.manifest(ctx, app.Digest)
		if err != nil {
			continue // a build removed since: its blobs are not readable
		}
		for _, d := range m.Digests() {
			out[d] = true
		}
	}
	return out, nil
}

func sortedValues(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// acceptsZstd reports whether a request's Accept-Encoding names zstd.
func acceptsZstd(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		name, q, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(name), "zstd") && strings.ReplaceAll(q, " ", "") != "q=0" {
			return true
		}
	}
	return false
}
