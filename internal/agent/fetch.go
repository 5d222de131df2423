package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/time/rate"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/blob"
	"github.com/drover-dev/drover/internal/client"
	xfer "github.com/drover-dev/drover/internal/transfer"
)

// downloader is what the agent's downloads share: the rate limit, the
// mirrors, and whether the server answers packs.
type downloader struct {
	limit   *rate.Limiter // nil: no limit
	mirrors []string
	http    *http.Client // for mirrors
	noPack  atomic.Bool  // the server said it has no pack call
}

// resumeTries bounds how often one download resumes after a dropped
// connection before it fails (and the convergence is retried later).
const resumeTries = 5

// unreachableTries bounds how often one download request is sent while
// the server cannot be reached (a connection refused or timed out, a TLS
// handshake that timed out), with a jittered wait doubling from a second
// between tries (about 25 s in all). A whole fleet told to change at once
// can leave a server too busy to take every new connection for a moment;
// failing the step then would wait for the much slower retry of a failed
// convergence (a heartbeat period, doubling), and report a failure that
// was only a queue.
const unreachableTries = 6

func newDownloader(cfg Config) *downloader {
	d := &downloader{mirrors: cfg.Mirrors,
		http: &http.Client{Timeout: 10 * time.Minute, Transport: &http.Transport{
			Proxy: http.ProxyFromEnvironment, ResponseHeaderTimeout: 30 * time.Second,
			IdleConnTimeout: 90 * time.Second, MaxIdleConnsPerHost: 8,
		}}}
	if cfg.MaxDownloadRate > 0 {
		// A burst of a quarter second, at least one read buffer.
		burst := int(max(cfg.MaxDownloadRate/4, 32<<10))
		d.limit = rate.NewLimiter(rate.Limit(cfg.MaxDownloadRate), burst)
	}
	return d
}

// netReader counts r's bytes as received from the network (the
// drover_agent_download_bytes_total metric) and holds reads to the
// agent's download rate.
func (a *Agent) netReader(ctx context.Context, r io.Reader) io.Reader {
	return &netReader{ctx: ctx, r: r, limit: a.dl.limit, count: func(n int) { a.events().m.downloadBytes.Add(float64(n)) }}
}

type netReader struct {
	ctx   context.Context
	r     io.Reader
	limit *rate.Limiter
	count func(int)
}

func (n *netReader) Read(p []byte) (int, error) {
	if n.limit != nil && len(p) > n.limit.Burst() {
		p = p[:n.limit.Burst()]
	}
	k, err := n.r.Read(p)
	if k > 0 {
		n.count(k)
		if n.limit != nil {
			if werr := n.limit.WaitN(n.ctx, k); werr != nil && err == nil {
				err = werr
			}
		}
	}
	return k, err
}

// fetch downloads the blobs the cache lacks; each is verified against its
// digest by the cache before it is kept.
func (a *Agent) fetch(ctx context.Context, digests []string) error {
	return a.fetchBases(ctx, digests, nil)
}

// fetchBases is fetch where bases maps a wanted blob to the one the
// cache holds of the same file in the installed version: the server may
// send a delta against it. Blobs come from the mirrors first, then from
// the server in one pack stream, then one by one: each way falls back to
// the next for what it did not bring.
func (a *Agent) fetchBases(ctx context.Context, digests []string, bases map[string]string) error {
	var need []string
	seen := map[string]bool{}
	for _, d := range digests {
		if seen[d] {
			continue
		}
		seen[d] = true
		if _, err := a.cache.Stat(ctx, d); errors.Is(err, blob.ErrNotFound) {
			need = append(need, d)
		} else if err != nil {
			return err
		}
	}
	if len(need) == 0 {
		return nil
	}
	a.progressStart(ctx, need)
	if len(a.dl.mirrors) > 0 {
		need = a.fromMirrors(ctx, need)
	}
	if len(need) > 0 && !a.dl.noPack.Load() && (len(need) > 1 || bases[need[0]] != "") {
		need = a.fromPack(ctx, need, bases)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return a.parallel(ctx, need, a.download)
}

// parallel runs fn over digests, a.cfg.Downloads at once, and returns the
// first error (which stops the rest).
func (a *Agent) parallel(ctx context.Context, digests []string, fn func(context.Context, string) error) error {
	if len(digests) == 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	work := make(chan string)
	var (
		wg       sync.WaitGroup
		once     sync.Once
		firstErr error
	)
	for range min(a.cfg.Downloads, len(digests)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range work {
				if err := fn(ctx, d); err != nil {
					once.Do(func() { firstErr = err; cancel() })
				}
			}
		}()
	}
feed:
	for _, d := range digests {
		select {
		case work <- d:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}

// fromMirrors fetches what it can from the mirrors, in their order, and
// returns the digests none of them served correctly.
func (a *Agent) fromMirrors(ctx context.Context, need []string) []string {
	var mu sync.Mutex
	var left []string
	_ = a.parallel(ctx, need, func(ctx context.Context, d string) error {
		for _, m := range a.dl.mirrors {
			err := a.fromMirror(ctx, m, d)
			if err == nil {
				return nil
			}
			a.log.Warn("blob mirror", "mirror", m, "blob", d, "err", err)
		}
		mu.Lock()
		left = append(left, d)
		mu.Unlock()
		return nil
	})
	if ctx.Err() != nil {
		return need
	}
	// Keep the caller's order: packs compress better in it.
	keep := map[string]bool{}
	for _, d := range left {
		keep[d] = true
	}
	var out []string
	for _, d := range need {
		if keep[d] {
			out = append(out, d)
		}
	}
	return out
}

// MirrorURL returns where a mirror serves a blob: base with {digest} and
// {prefix} (its first two hex digits) replaced, or base/<digest> when
// base has neither.
func MirrorURL(base, digest string) string {
	if strings.Contains(base, "{digest}") || strings.Contains(base, "{prefix}") {
		return strings.NewReplacer("{digest}", digest, "{prefix}", digest[:2]).Replace(base)
	}
	return strings.TrimSuffix(base, "/") + "/" + digest
}

func (a *Agent) fromMirror(ctx context.Context, mirror, digest string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, MirrorURL(mirror, digest), nil)
	if err != nil {
		return err
	}
	resp, err := a.dl.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s", resp.Status)
	}
	limited := io.LimitReader(a.netReader(ctx, resp.Body), maxDownload(ctx, digest)+1)
	// The cache checks the digest: a mirror cannot change what is
	// installed.
	return a.cache.Put(ctx, digest, a.progressReader(ctx, digest, limited))
}

// packTries bounds how often a pack is asked again for what a dropped
// connection left out.
const packTries = 3

// fromPack fetches need in pack streams and returns what they did not
// bring whole and verified.
func (a *Agent) fromPack(ctx context.Context, need []string, bases map[string]string) []string {
	left := map[string]bool{}
	for _, d := range need {
		left[d] = true
	}
	whole := map[string]bool{} // a delta failed: ask for the blob
	remaining := func() []string {
		var out []string
		for _, d := range need {
			if left[d] {
				out = append(out, d)
			}
		}
		return out
	}
	for range packTries {
		rest := remaining()
		if len(rest) == 0 || ctx.Err() != nil {
			break
		}
		req := api.PackRequest{Digests: rest, Format: xfer.PackFormat2}
		for _, d := range rest {
			if b := bases[d]; b != "" && !whole[d] {
				if _, err := a.cache.Stat(ctx, b); err == nil {
					if req.Bases == nil {
						req.Bases = map[string]string{}
					}
					req.Bases[d] = b
				}
			}
		}
		if len(rest) == 1 && req.Bases == nil {
			break // one whole blob: a plain, resumable download
		}
		err := a.readPack(ctx, req, left, whole)
		var ae *api.Error
		switch {
		case err == nil:
		case errors.As(err, &ae) && ae.Code == api.ENOTFOUND:
			// An older server: fetch blob by blob from now on.
			a.dl.noPack.Store(true)
			return remaining()
		case errors.Is(err, xfer.ErrTruncated), errors.Is(err, errDeltaFailed):
			a.log.Info("pack", "err", err, "left", len(remaining()))
			continue
		default:
			a.log.Warn("pack", "err", err)
			return remaining()
		}
	}
	return remaining()
}

var errDeltaFailed = errors.New("delta failed")

// readPack reads one pack answer into the cache, crossing off left what
// arrived whole and verified.
func (a *Agent) readPack(ctx context.Context, req api.PackRequest, left, whole map[string]bool) error {
	// The answer resumes only as the same answer: the ETag names it.
	var etag string
	rr := &resumeReader{ctx: ctx, strict: true, open: func(off int64) (io.ReadCloser, string, bool, error) {
		body, tag, partial, err := a.srv.Pack(ctx, req, off, etag)
		if err == nil && off == 0 {
			etag = tag
		}
		return body, tag, partial, err
	}}
	if err := rr.start(); err != nil {
		return err
	}
	defer rr.Close()
	if etag == "" {
		rr.tries = resumeTries
	}
	pr, err := xfer.NewPackReader(a.netReader(ctx, rr), req, func(e xfer.Entry) int64 {
		if !left[e.Digest] || (e.Kind == xfer.KindDelta && req.Bases[e.Digest] != e.Base) {
			return -1 // not asked for: refused
		}
		if e.Kind == xfer.KindDelta {
			// A delta may exceed a tiny file by its frame's overhead.
			return maxDownload(ctx, e.Digest) + 1024
		}
		return maxDownload(ctx, e.Digest)
	})
	if err != nil {
		return err
	}
	defer pr.Close()
	var deltaErr error
	for {
		e, err := pr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		switch e.Kind {
		case xfer.KindBlob:
			if err := a.cache.Put(ctx, e.Digest, a.progressReader(ctx, e.Digest, e.Body)); err != nil {
				return fmt.Errorf("blob %s from pack: %w", e.Digest, err)
			}
		case xfer.KindDelta:
			if err := a.applyDelta(ctx, e); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				a.log.Warn("delta failed, fetching the whole blob", "blob", e.Digest, "base", e.Base, "err", err)
				whole[e.Digest] = true
				deltaErr = fmt.Errorf("%w: %v", errDeltaFailed, err)
				continue
			}
		}
		delete(left, e.Digest)
	}
	return deltaErr
}

// applyDelta rebuilds a blob from the cached base and a delta, and keeps
// it only if it hashes to its digest.
func (a *Agent) applyDelta(ctx context.Context, e xfer.Entry) error {
	delta, err := io.ReadAll(e.Body)
	if err != nil {
		return err
	}
	f, err := a.cache.Open(ctx, e.Base)
	if err != nil {
		return err
	}
	base, err := io.ReadAll(io.LimitReader(f, xfer.MaxDeltaFile+1))
	f.Close()
	if err != nil {
		return err
	}
	out, err := xfer.ApplyDelta(base, delta, maxDownload(ctx, e.Digest))
	if err != nil {
		return err
	}
	return a.cache.Put(ctx, e.Digest, a.progressReader(ctx, e.Digest, bytes.NewReader(out)))
}

// download fetches one blob from the server: compressed when the server
// offers it, resumed with Range after a dropped connection.
func (a *Agent) download(ctx context.Context, digest string) error {
	limit := maxDownload(ctx, digest)
	rr := &resumeReader{ctx: ctx, open: func(off int64) (io.ReadCloser, string, bool, error) {
		return a.srv.BlobRange(ctx, digest, off, true)
	}}
	if err := rr.start(); err != nil {
		return fmt.Errorf("download blob %s: %w", digest, err)
	}
	defer rr.Close()
	var body io.Reader = a.netReader(ctx, rr)
	if rr.enc == "zstd" {
		// The window bound bounds the decoder's memory; the limit below
		// bounds the output.
		zr, err := zstd.NewReader(body, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxWindow(xfer.PackWindow))
		if err != nil {
			return err
		}
		defer zr.Close()
		body = zr
	}
	return a.keep(ctx, digest, io.LimitReader(body, limit+1))
}

// keep puts a downloaded blob into the cache. Never more than the blob
// can be is read (the caller limits r to one byte past it, which makes
// the digest check fail): a server sending without end would fill the
// disk.
func (a *Agent) keep(ctx context.Context, digest string, r io.Reader) error {
	if err := a.cache.Put(ctx, digest, a.progressReader(ctx, digest, r)); err != nil {
		// A mismatch is an error, never a retry loop: the server or the
		// path to it is not to be trusted with this blob.
		return fmt.Errorf("download blob %s: %w", digest, err)
	}
	return nil
}

// resumeReader reads one representation of a blob (or one pack answer)
// and, when the connection drops, asks again from the byte it got to.
// open returns the body, the representation's name (its encoding, or a
// pack's ETag), which must not change, and whether the answer starts at
// off. strict refuses an answer from the start instead of skipping.
type resumeReader struct {
	ctx    context.Context
	strict bool
	open   func(off int64) (io.ReadCloser, string, bool, error)
	body   io.ReadCloser
	enc    string
	off    int64
	tries  int
	broken error // the read that failed; the next Read resumes
	// pause is the first wait before a request that did not reach the
	// server is sent again; 0 = a second.
	pause time.Duration
}

// openAt opens the representation at off, sending the request again
// while the server cannot be reached (unreachableTries).
func (r *resumeReader) openAt(off int64) (io.ReadCloser, string, bool, error) {
	delay := r.pause
	if delay <= 0 {
		delay = time.Second
	}
	for try := 1; ; try++ {
		body, enc, partial, err := r.open(off)
		if err == nil || !errors.Is(err, client.ErrUnreachable) || try == unreachableTries || r.ctx.Err() != nil {
			return body, enc, partial, err
		}
		t := time.NewTimer(delay/2 + rand.N(delay/2+1))
		select {
		case <-r.ctx.Done():
			t.Stop()
			return nil, "", false, err
		case <-t.C:
		}
		delay = min(2*delay, 16*time.Second)
	}
}

func (r *resumeReader) start() error {
	body, enc, _, err := r.openAt(0)
	if err != nil {
		return err
	}
	r.body, r.enc = body, enc
	return nil
}

func (r *resumeReader) Read(p []byte) (int, error) {
	for {
		if r.broken != nil {
			if err := r.resume(); err != nil {
				return 0, err
			}
		}
		n, err := r.body.Read(p)
		r.off += int64(n)
		if err == nil || err == io.EOF {
			return n, err
		}
		if r.ctx.Err() != nil || r.tries >= resumeTries {
			return n, err
		}
		r.broken = err
		if n > 0 {
			return n, nil
		}
	}
}

// resume asks for the rest of the representation from r.off on.
func (r *resumeReader) resume() error {
	r.tries++
	r.body.Close()
	body, enc, partial, err := r.openAt(r.off)
	if err != nil {
		return fmt.Errorf("resume at byte %d: %w (after %v)", r.off, err, r.broken)
	}
	r.body, r.broken = body, nil
	if enc != r.enc {
		return fmt.Errorf("resume at byte %d: the server changed the representation from %q to %q", r.off, r.enc, enc)
	}
	if !partial && r.strict {
		return fmt.Errorf("resume at byte %d: the server sent a new answer", r.off)
	}
	if !partial {
		// Sent from the start: skip what we have.
		if _, err := io.CopyN(io.Discard, body, r.off); err != nil {
			return fmt.Errorf("resume at byte %d: %w", r.off, err)
		}
	}
	return nil
}

// Close closes the current body.
func (r *resumeReader) Close() error { return r.body.Close() }

// minDeltaFile is the smallest file worth a delta: below it, the whole
// file compressed in the pack costs about as much.
const minDeltaFile = 1024

// deltaBases maps each file of the target manifest m to the blob of the
// same path in the installed build from, when they differ: the bases of
// an upgrade's deltas.
func (a *Agent) deltaBases(m *api.Manifest, from *api.InstalledApp) map[string]string {
	if m == nil || from == nil {
		return nil
	}
	old, err := a.engine.Manifest(from.Digest)
	if err != nil || old.Group != m.Group || old.Name != m.Name {
		return nil
	}
	byPath := map[string]string{}
	for _, f := range old.Files {
		if f.Digest != "" {
			byPath[f.Path+"\x00"+strings.Join(f.Overlay, ",")] = f.Digest
		}
	}
	out := map[string]string{}
	for _, f := range m.Files {
		if b := byPath[f.Path+"\x00"+strings.Join(f.Overlay, ",")]; b != "" && b != f.Digest && f.Size >= minDeltaFile && f.Size <= xfer.MaxDeltaFile {
			out[f.Digest] = b
		}
	}
	return out
}
