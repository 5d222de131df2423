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
	"sync"
	"sync/atomic"
	"time"

	"github.com/drover-dev/drover/internal/privdir"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/blob"
	"github.com/drover-dev/drover/internal/client"
	"github.com/drover-dev/drover/internal/facts"
	"github.com/drover-dev/drover/internal/install"
	"github.com/drover-dev/drover/internal/local"
)

// Version is reported to the server.
const Version = "0.1.0"

// Server is what the agent needs of the server; *client.Client has it.
type Server interface {
	Report(ctx context.Context, id string, r api.Report) (api.ReportResponse, error)
	Desired(ctx context.Context, id, after string, wait time.Duration) (*api.Resolved, error)
	PostEvents(ctx context.Context, id string, evs []api.Event) error
	// BlobRange and Pack move blobs in fewer bytes (fetch.go): a blob
	// compressed and from an offset on, many blobs and deltas in one
	// stream. An older server answers neither as asked (the encoding says
	// what came; Pack is an ENOTFOUND *api.Error) and the agent falls back.
	BlobRange(ctx context.Context, digest string, offset int64, compressed bool) (body io.ReadCloser, encoding string, partial bool, err error)
	Pack(ctx context.Context, req api.PackRequest, offset int64, etag string) (body io.ReadCloser, gotETag string, partial bool, err error)
	// Keepalive is `drover keepalive` (node.go).
	Keepalive(ctx context.Context, id string, req api.KeepaliveRequest) (api.KeepaliveResponse, error)
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
	// MetadataURL is the cloud metadata service whose instance id, type,
	// region and zone become facts and tags (cloud.go); "" asks none.
	MetadataURL string
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
	// InitTimeout bounds each init program of the device's groups
	// (init.go); default 10m.
	InitTimeout time.Duration
	// Node holds the node-local verbs' and health checks' settings.
	Node NodeConfig
	// Trust, when set (agent --trust-root), admits only builds listed in
	// valid signed metadata (trust.go); nil admits every build.
	Trust  Trust
	Logger *slog.Logger
	Now    func() time.Time
}

// Agent is one machine's agent. Create it with New, then Run it. Its
// parts each have their own type and lock: the event queue and spool
// (spool.go), the node-local API (local.go, node.go), the health loop
// (node.go), the services (services.go), hooks, progress and metrics
// (hooks.go); mu guards only the convergence outcome below.
type Agent struct {
	ev agentEvents // hooks, progress and metrics (hooks.go)
	q  *eventQueue // events to send, and their spool (spool.go)

	cfg    Config
	log    *slog.Logger
	now    func() time.Time
	srv    Server
	cache  *blob.FileStore
	engine *install.Engine
	tags   []string
	facts  facts.Facts
	node   nodeState   // node-local verbs (node.go)
	checks healthLoop  // the machine's health checks (node.go)
	svc    *services   // package services (services.go)
	sup    supersede   // newer desired states (supersede.go)
	net    netProbes   // network checks of other devices (netprobe.go)
	dl     *downloader // rate limit, mirrors (fetch.go)

	// reportTurn holds one token while a report is built and sent:
	// reports go one at a time (report).
	reportTurn chan struct{}
	// heard is when (UnixNano, of now) a long-poll last answered;
	// reported when a report was last accepted.
	heard, reported atomic.Int64

	mu        sync.Mutex
	applied   string // digest of the resolved state last converged to
	lastErr   string
	converged chan struct{} // closed and replaced after each convergence run
	fail      struct {
		digest string
		count  int
		delay  time.Duration
		next   time.Time
		err    error
	}
}

// New prepares the agent's home and its install engine, and starts its
// hook runner (stopped when Run returns). It does not touch the server;
// it asks the cloud metadata service (Config.MetadataURL) once, within a
// short timeout, unless its cached answer is fresh.
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
	dirs := [][2]string{{"--home", cfg.Home}, {"--software-root", cfg.SoftwareRoot}, {"--runtime-root", cfg.RuntimeRoot}}
	if cfg.Root != "" {
		// The default root, /, is checked by the installs that use it:
		// an agent of prefix packages only need not run as root.
		dirs = append(dirs, [2]string{"--root", cfg.Root})
	}
	for _, d := range dirs {
		if err := checkDir(d[0], d[1]); err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
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
	// Secret parameter values never reach the log (services.go).
	secrets := &secretSet{}
	cfg.Logger = slog.New(maskHandler{h: cfg.Logger.Handler(), s: secrets})
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
	// system/ holds the agent's state, journal, cache and event spool:
	// private whatever the umask or its mode before.
	if err := privdir.Make(filepath.Join(cfg.Home, "system")); err != nil {
		return nil, fmt.Errorf("agent home: %w", err)
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
	f = withCloud(cfg, f) // cloud.go
	tags := api.NormalizeTags(append(facts.Tags(f), cfg.Tags...))
	for _, t := range tags {
		if !api.ValidTag(t) {
			return nil, fmt.Errorf("tag %q: want letters, digits, '.', '_', '+' and '-'", t)
		}
	}
	a := &Agent{
		cfg: cfg, log: cfg.Logger.With("device", cfg.Device), now: cfg.Now, srv: srv,
		cache: cache, engine: eng, tags: tags, facts: f, converged: make(chan struct{}),
		dl: newDownloader(cfg), reportTurn: make(chan struct{}, 1),
	}
	if a.q, err = openQueue(filepath.Join(cfg.Home, "system"), a.log, cfg.Now); err != nil {
		return nil, err
	}
	a.nodeDefaults()
	if err := a.initServices(secrets); err != nil {
		return nil, err
	}
	a.initEvents()
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
	// The hook runner stops with Run; the services keep running, for
	// the next agent to adopt.
	defer a.ev.stopHooks()
	defer a.svc.sup.Close()
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
			if a.idle() {
				continue // the long-poll's loop sends the heartbeat
			}
			latest = nil // fetch afresh: the fallback when the long-poll is stuck, a retry
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
		var wait time.Duration
		if after != "" {
			wait = PollWait(a.cfg.ReportInterval)
		}
		res, err := a.srv.Desired(ctx, a.cfg.Device, after, wait)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			delay = a.backoff(ctx, delay, err)
			after = "" // report again after an outage: the server may have lost us
			continue
		}
		delay = 0
		a.heard.Store(a.now().UnixNano())
		if res.Digest == after {
			// The poll ended with no change: the heartbeat is due, and
			// goes over the poll's connection, idle now.
			if a.reportDue() {
				if err := a.report(ctx); err != nil && ctx.Err() == nil {
					a.log.Warn("report", "err", err)
				}
			}
			continue
		}
		after = res.Digest
		a.sup.announced(res.Digest)
		// Keep only the newest: a converge run picks up what is latest.
		select {
		case <-wake:
		default:
		}
		wake <- res
	}
}

// PollWait is how long an agent whose heartbeat period is interval lets
// a long-poll wait: the period, less up to a tenth at random so that a
// fleet started at once does not report in step.
func PollWait(interval time.Duration) time.Duration {
	return interval - rand.N(interval/10+1)
}

// reportDue says the heartbeat report is due: none was sent for half a
// heartbeat period (a server with a shorter poll timeout than the
// agent's period is not sent more reports for it).
func (a *Agent) reportDue() bool {
	last := a.reported.Load()
	return last == 0 || a.now().Sub(time.Unix(0, last)) >= a.cfg.ReportInterval/2
}

// idle says the periodic convergence has nothing to do: the long-poll
// answered lately (its loop sends the heartbeats), the newest state it
// announced was converged to, and no failure waits to be retried. Then an
// idle agent's only traffic is its poll and its heartbeat, over one
// connection.
func (a *Agent) idle() bool {
	heard := a.heard.Load()
	if heard == 0 || a.now().Sub(time.Unix(0, heard)) > 3*a.cfg.ReportInterval {
		return false
	}
	newest := a.sup.latest()
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.lastErr == "" && newest != "" && a.applied == newest
}

func (a *Agent) backoff(ctx context.Context, delay time.Duration, err error) time.Duration {
	switch {
	case delay == 0:
		delay = 500 * time.Millisecond
	case delay < 30*time.Second:
		delay *= 2
	}
	d := delay/2 + rand.N(delay/2+1)
	var ae *api.Error
	switch {
	case errors.Is(err, client.ErrTLS):
		a.log.Error("TLS failure, retrying: check the certificates", "err", err, "in", d.Round(time.Millisecond))
	case errors.As(err, &ae) && (ae.Code == api.EFORBIDDEN || ae.Code == api.EUNAUTHORIZED):
		a.log.Error("the server refused this agent, retrying", "err", err, "in", d.Round(time.Millisecond))
	default:
		a.log.Warn("server unreachable, retrying", "err", err, "in", d.Round(time.Millisecond))
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
	return delay
}

// report sends facts, tags and installed state, with any pending events.
//
// Reports go one at a time, each built only when its turn comes. The
// converge loop, the service watcher and the health loop all report, and
// the server keeps the last report it stores: two reports in flight at
// once may be stored in either order, so one built just before a
// convergence finished (the new service running, Applied still the old
// state) could be stored after the one saying the device applied the new
// state, and the server would see the device unconverged until its next
// periodic report, holding up a rollout's wave all that time.
func (a *Agent) report(ctx context.Context) error {
	a.flushEvents(ctx)
	select {
	case a.reportTurn <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	resp, err := a.sendReport(ctx)
	<-a.reportTurn
	if err != nil {
		return err
	}
	a.reported.Store(a.now().UnixNano())
	a.runProbes(ctx, resp.Probes)
	return nil
}

// sendReport builds the report from the agent's state now and sends it;
// the caller holds the report turn.
func (a *Agent) sendReport(ctx context.Context) (api.ReportResponse, error) {
	a.mu.Lock()
	rep := api.Report{
		Facts: a.facts, Tags: a.tags, Labels: a.cfg.Labels, Installed: a.installed(), Services: a.ServiceStates(),
		Applied: a.applied, Error: a.svc.secrets.mask(a.lastErr), AgentVersion: Version, Health: a.healthReport(),
		Init: a.reportedInit(),
	}
	if a.lastErr != "" {
		rep.ErrorDigest = a.fail.digest // the state whose steps failed, if they did
	}
	a.mu.Unlock()
	if rep.Installed == nil {
		rep.Installed = []api.InstalledApp{}
	}
	rep.Services = a.withNetChecks(rep.Services) // netprobe.go
	rep.ProbeResults = a.net.take()
	return a.srv.Report(ctx, a.cfg.Device, rep)
}

// event queues an event for the server; it is sent at the next flush.
// Secret parameter values are masked out of its message and payload
// first (services.go).
func (a *Agent) event(ev api.Event) {
	ev.Time = a.now().UTC()
	ev.Device = a.cfg.Device
	a.svc.secrets.maskEvent(&ev)
	a.tapEvent(ev)
	a.q.add(ev)
}

// flushEvents sends the queued events; on failure they stay queued.
func (a *Agent) flushEvents(ctx context.Context) {
	a.q.flush(ctx, func(ctx context.Context, evs []api.Event) error {
		return a.srv.PostEvents(ctx, a.cfg.Device, evs)
	}, func(n int) api.Event {
		return api.Event{Time: a.now().UTC(), Device: a.cfg.Device, Kind: api.KindLog, Level: api.LevelWarn,
			Message: fmt.Sprintf("%d events were dropped while the server was away", n)}
	})
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
