// Package agent is the daemon on every machine: it reports facts, tags and
// installed state, hears of new desired state at once through a long-poll,
// plans the steps against its own disk, fetches and verifies only the blobs
// it lacks, and installs through the install engine. It keeps working with
// what it has while the server is away, and reconnects with backoff.
//
// The agent links no database driver: its state is the install engine's
// journal and state file, and its blob cache is plain files.
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/blob"
	"github.com/drover-dev/drover/internal/facts"
	"github.com/drover-dev/drover/internal/install"
	"github.com/drover-dev/drover/internal/local"
)

// Version is reported to the server.
const Version = "0.1.0"

// Server is what the agent needs of the server; *client.Client has it.
type Server interface {
	Report(ctx context.Context, id string, r api.Report) (api.ReportResponse, error)
	Desired(ctx context.Context, id, after string, wait bool) (*api.Resolved, error)
	PostEvents(ctx context.Context, id string, evs []api.Event) error
	Blob(ctx context.Context, digest string) (io.ReadCloser, int64, error)
}

// Config holds the agent's settings.
type Config struct {
	// Home is the agent home (DESIGN §5): bin/ config/ logs/ system/.
	Home string
	// Device is this machine's id: the CN of its client certificate.
	Device string
	// SoftwareRoot holds prefix-mode installs; default <home>/software.
	SoftwareRoot string
	// RuntimeRoot holds service runtime directories; default <home>/runtime.
	RuntimeRoot string
	// Root is where root-mode packages install; default "/".
	Root string
	// Tags are added to the detected ones; Labels are key=value pairs the
	// operator gives the machine.
	Tags   []string
	Labels map[string]string
	// Facts, when set, replaces detection (tests, benchmarks).
	Facts facts.Facts
	// ReportInterval is the fallback period of reports and retries;
	// default 30s.
	ReportInterval time.Duration
	// Downloads is how many blobs are fetched at once; default 4.
	Downloads int
	// Mirrors are blob servers tried, in order, before the server: each
	// serves a blob at URL/<digest> (or at URL with {digest} and {prefix}
	// replaced, see MirrorURL). Every blob is verified by digest.
	Mirrors []string
	// MaxDownloadRate bounds the bytes per second received for blobs, from
	// the server and mirrors together; 0 = no bound.
	MaxDownloadRate int64
	// HookTimeout bounds each hook in <home>/config/hooks/<phase>-post.d
	// (hooks.go); default 60s.
	HookTimeout time.Duration
	// Node holds the node-local verbs' and health checks' settings.
	Node   NodeConfig
	Logger *slog.Logger
	Now    func() time.Time
}

// Agent is one machine's agent. Create it with New, then Run it.
type Agent struct {
	ev agentEvents // hooks, progress and metrics (hooks.go)

	cfg    Config
	log    *slog.Logger
	now    func() time.Time
	srv    Server
	cache  *blob.FileStore
	engine *install.Engine
	tags   []string
	facts  facts.Facts
	node   nodeState   // node-local verbs and health (node.go)
	svc    *services   // package services (services.go)
	dl     *downloader // rate limit, mirrors (fetch.go)

	mu        sync.Mutex
	applied   string // digest of the resolved state last converged to
	lastErr   string
	pending   []api.Event
	dropped   int
	spool     *spool        // pending, on disk
	converged chan struct{} // closed and replaced after each convergence run
	fail      struct {
		digest string
		count  int
		delay  time.Duration
		next   time.Time
		err    error
	}
}

// maxPending bounds the events kept while the server is away.
const maxPending = 10000

// New prepares the agent's home and its install engine. It does not
// touch the network.
func New(cfg Config, srv Server) (*Agent, error) {
	if cfg.Home == "" {
		return nil, errors.New("agent: no home folder")
	}
	if cfg.Device == "" {
		return nil, errors.New("agent: no device id")
	}
	if cfg.SoftwareRoot == "" {
		cfg.SoftwareRoot = filepath.Join(cfg.Home, "software")
	}
	if cfg.RuntimeRoot == "" {
		cfg.RuntimeRoot = filepath.Join(cfg.Home, "runtime")
	}
	if cfg.Root == "" {
		cfg.Root = "/"
	}
	if cfg.ReportInterval == 0 {
		cfg.ReportInterval = 30 * time.Second
	}
	if cfg.Downloads == 0 {
		cfg.Downloads = 4
	}
	for _, m := range cfg.Mirrors {
		if u, err := url.Parse(m); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("blob mirror %q: want http://HOST/PATH or https://HOST/PATH", m)
		}
	}
	if cfg.MaxDownloadRate < 0 {
		return nil, fmt.Errorf("max download rate %d: want bytes per second, 0 for no bound", cfg.MaxDownloadRate)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	for _, d := range []string{"bin", "config", "logs", "system", cfg.SoftwareRoot, cfg.RuntimeRoot} {
		p := d
		if !filepath.IsAbs(p) {
			p = filepath.Join(cfg.Home, d)
		}
		if err := os.MkdirAll(p, 0o755); err != nil {
			return nil, fmt.Errorf("agent home: %w", err)
		}
	}
	cache, err := blob.NewFileStore(blob.FileConfig{Dir: filepath.Join(cfg.Home, "system", "blobs")})
	if err != nil {
		return nil, fmt.Errorf("blob cache: %w", err)
	}
	eng, err := install.New(install.Config{
		SoftwareRoot: cfg.SoftwareRoot,
		Root:         cfg.Root,
		StateDir:     filepath.Join(cfg.Home, "system", "install"),
		LogDir:       filepath.Join(cfg.Home, "logs"),
		Device:       cfg.Device,
		Blobs:        cache,
		Logger:       cfg.Logger,
		Now:          cfg.Now,
	})
	if err != nil {
		return nil, fmt.Errorf("install engine: %w", err)
	}
	f := cfg.Facts
	if f == nil {
		f, err = facts.Detect(facts.Config{})
		if err != nil {
			return nil, fmt.Errorf("detect facts: %w", err)
		}
	}
	tags := append(facts.Tags(f), cfg.Tags...)
	sort.Strings(tags)
	tags = slices.Compact(tags)
	for _, t := range tags {
		if !api.ValidTag(t) {
			return nil, fmt.Errorf("tag %q: want letters, digits, '.', '_', '+' and '-'", t)
		}
	}
	a := &Agent{
		cfg: cfg, log: cfg.Logger.With("device", cfg.Device), now: cfg.Now, srv: srv,
		cache: cache, engine: eng, tags: tags, facts: f, converged: make(chan struct{}),
		dl: newDownloader(cfg),
	}
	sp, unsent, err := openSpool(filepath.Join(cfg.Home, "system"))
	if err != nil {
		return nil, err
	}
	a.spool, a.pending = sp, unsent
	a.nodeDefaults()
	if err := a.initServices(); err != nil {
		return nil, err
	}
	return a, nil
}

// Tags returns the device's system tags: detected facts plus --tags.
func (a *Agent) Tags() []string { return slices.Clone(a.tags) }

// Installed returns what the install engine has installed.
func (a *Agent) Installed() []api.InstalledApp { return a.engine.Installed() }

// Recover finishes or undoes an install that a crash interrupted, from the
// journal, without contacting the server.
func (a *Agent) Recover(ctx context.Context) error {
	if err := a.engine.Recover(ctx); err != nil {
		return fmt.Errorf("recover interrupted install: %w", err)
	}
	return nil
}

// Run recovers any interrupted install, then reports and converges until
// ctx is done. It returns nil on a clean stop.
func (a *Agent) Run(ctx context.Context) error {
	if err := a.engine.Recover(ctx); err != nil {
		return fmt.Errorf("recover interrupted install: %w", err)
	}
	ln, err := local.Listen(local.SocketPath(a.cfg.Home))
	if err != nil {
		return err
	}
	a.log.Info("agent started", "tags", a.tags, "socket", ln.Addr().String())
	wake := make(chan *api.Resolved, 1)
	var wg sync.WaitGroup
	for _, run := range []func(context.Context){
		func(ctx context.Context) { _ = local.Serve(ctx, ln, a.localHandler()) },
		func(ctx context.Context) { a.watch(ctx, wake) },
		a.runHealth,
		a.runServices,
	} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			run(ctx)
		}()
	}
	defer wg.Wait()

	ticker := time.NewTicker(a.cfg.ReportInterval)
	defer ticker.Stop()
	var latest *api.Resolved
	for {
		select {
		case <-ctx.Done():
			return nil
		case latest = <-wake:
		case <-ticker.C:
			latest = nil // fetch afresh: the fallback when the long-poll is stuck
		}
		a.converge(ctx, latest)
	}
}

// watch long-polls the server for the resolved desired state and hands
// every new one to the converge loop. While the server is away it retries
// with exponential backoff and jitter, so a restarted server is not hit by
// the whole fleet at once.
func (a *Agent) watch(ctx context.Context, wake chan *api.Resolved) {
	after := ""
	delay := time.Duration(0)
	for ctx.Err() == nil {
		if after == "" {
			// Report first, so the server knows this device's tags before
			// it resolves anything for it.
			if err := a.report(ctx); err != nil {
				delay = a.backoff(ctx, delay, err)
				continue
			}
		}
		res, err := a.srv.Desired(ctx, a.cfg.Device, after, after != "")
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			delay = a.backoff(ctx, delay, err)
			after = "" // report again after an outage: the server may have lost us
			continue
		}
		delay = 0
		if res.Digest == after {
			continue
		}
		after = res.Digest
		// Keep only the newest: a converge run picks up what is latest.
		select {
		case <-wake:
		default:
		}
		wake <- res
	}
}

func (a *Agent) backoff(ctx context.Context, delay time.Duration, err error) time.Duration {
	switch {
	case delay == 0:
		delay = 500 * time.Millisecond
	case delay < 30*time.Second:
		delay *= 2
	}
	d := delay/2 + rand.N(delay/2+1)
	a.log.Warn("server unreachable, retrying", "err", err, "in", d.Round(time.Millisecond))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
	return delay
}

// report sends facts, tags and installed state, with any pending events.
func (a *Agent) report(ctx context.Context) error {
	a.flushEvents(ctx)
	a.mu.Lock()
	rep := api.Report{
		Facts: a.facts, Tags: a.tags, Labels: a.cfg.Labels, Installed: a.installed(), Services: a.svc.sup.States(),
		Applied: a.applied, Error: a.lastErr, AgentVersion: Version, Health: a.healthReport(),
	}
	a.mu.Unlock()
	if rep.Installed == nil {
		rep.Installed = []api.InstalledApp{}
	}
	_, err := a.srv.Report(ctx, a.cfg.Device, rep)
	return err
}

// event queues an event for the server; it is sent at the next flush.
func (a *Agent) event(ev api.Event) {
	ev.Time = a.now().UTC()
	ev.Device = a.cfg.Device
	a.tapEvent(ev)
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.pending) >= maxPending {
		a.pending = a.pending[1:]
		a.dropped++
		a.spoolRewrite()
	}
	a.pending = append(a.pending, ev)
	if a.spool != nil {
		if err := a.spool.add(ev); err != nil {
			a.log.Warn("event spool", "err", err)
		}
	}
}

// spoolRewrite makes the spool hold exactly a.pending; a.mu is held.
func (a *Agent) spoolRewrite() {
	if a.spool == nil {
		return
	}
	if err := a.spool.rewrite(a.pending); err != nil {
		a.log.Warn("event spool", "err", err)
	}
}

// flushEvents sends the queued events; on failure they stay queued.
func (a *Agent) flushEvents(ctx context.Context) {
	a.node.flushMu.Lock()
	defer a.node.flushMu.Unlock()
	a.mu.Lock()
	evs := a.pending
	dropped := a.dropped
	a.mu.Unlock()
	if dropped > 0 {
		evs = append(slices.Clone(evs), api.Event{Time: a.now().UTC(), Device: a.cfg.Device, Kind: api.KindLog, Level: api.LevelWarn,
			Message: fmt.Sprintf("%d events were dropped while the server was away", dropped)})
	}
	for len(evs) > 0 {
		n := eventBatch(evs)
		if err := a.srv.PostEvents(ctx, a.cfg.Device, evs[:n]); err != nil {
			a.log.Debug("events not sent", "err", err)
			return
		}
		a.mu.Lock()
		a.pending = a.pending[min(n, len(a.pending)):]
		a.spoolRewrite()
		if dropped > 0 {
			a.dropped = 0
			dropped = 0
		}
		a.mu.Unlock()
		evs = evs[n:]
	}
}

// WaitConverged returns a channel closed after the next convergence run.
func (a *Agent) WaitConverged() <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.converged
}

// Status returns the digest last converged to and the last error.
func (a *Agent) Status() (applied, lastErr string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.applied, a.lastErr
}

func mustJSON(v any) []byte {
	data, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	return data
}
