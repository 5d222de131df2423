package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/install"
	"github.com/drover-dev/drover/internal/param"
	"github.com/drover-dev/drover/internal/pkgfile"
	"github.com/drover-dev/drover/internal/plan"
)

// Converge runs one convergence now against the server's current desired
// state and returns its error, if any.
func (a *Agent) Converge(ctx context.Context) error {
	a.converge(ctx, nil)
	_, lastErr := a.Status()
	if lastErr != "" {
		return errors.New(lastErr)
	}
	return nil
}

// converge takes the device to res (fetched now when nil), reports the
// outcome and wakes WaitConverged callers.
func (a *Agent) converge(ctx context.Context, res *api.Resolved) {
	a.node.convergeMu.Lock()
	defer a.node.convergeMu.Unlock()
	a.convergeLocked(ctx, res)
}

// convergeLocked is converge for a caller holding node.convergeMu.
func (a *Agent) convergeLocked(ctx context.Context, res *api.Resolved) {
	applied, err := a.convergeTo(ctx, res)
	a.mu.Lock()
	if errors.Is(err, errSuperseded) {
		// Neither success nor failure: the newer state comes next.
		a.log.Info("converge superseded by a newer desired state")
	} else if err != nil {
		a.lastErr = err.Error()
	} else {
		a.lastErr = ""
		if applied != "" {
			a.applied = applied
		}
	}
	close(a.converged)
	a.converged = make(chan struct{})
	a.mu.Unlock()
	if err != nil && ctx.Err() == nil && !errors.Is(err, errSuperseded) {
		a.log.Error("converge", "err", err)
	}
	if ctx.Err() == nil {
		if err := a.report(ctx); err != nil {
			a.log.Warn("report", "err", err)
		}
	}
}

// convergeTo returns the digest it converged to.
func (a *Agent) convergeTo(ctx context.Context, res *api.Resolved) (string, error) {
	if res == nil {
		var err error
		res, err = a.srv.Desired(ctx, a.cfg.Device, "", 0)
		if err != nil {
			return "", fmt.Errorf("get desired state: %w", err)
		}
	}
	if res.Unset {
		return res.Digest, nil
	}
	if res.Error != "" {
		return "", fmt.Errorf("desired state cannot be resolved: %s", res.Error)
	}
	if err := a.retryLater(res.Digest); err != nil {
		return "", err
	}
	if err := a.checkTrust(ctx, res); err != nil { // trust.go: before any download
		return "", err
	}
	// Init entries run before any app step (init.go).
	if err := a.runInit(ctx, res); err != nil {
		a.failed(res.Digest, err)
		return "", err
	}
	manifests := map[string]*api.Manifest{}
	for _, app := range res.Apps {
		m, err := a.manifest(ctx, app)
		if err != nil {
			return "", err
		}
		manifests[app.Digest] = m
	}
	a.notePurge(res)
	steps := plan.Make(res, a.installed(), func(in api.InstalledApp) []string {
		m, err := a.engine.Manifest(in.Digest)
		if err != nil {
			return nil
		}
		var names []string
		for _, d := range m.Depends {
			names = append(names, d.Name)
		}
		return names
	})
	if len(steps) == 0 {
		return res.Digest, nil
	}
	lines := make([]string, len(steps))
	for i, s := range steps {
		lines[i] = s.String()
	}
	a.event(api.Event{Kind: api.KindPlan, Level: api.LevelInfo, Priority: api.PriorityLow,
		Message: fmt.Sprintf("plan of %d steps: %s", len(steps), strings.Join(lines, "; "))})
	a.flushEvents(ctx)
	a.sup.start(res.Digest)
	defer a.sup.done()
	for i, s := range steps {
		if a.sup.stale() {
			a.event(api.Event{Kind: api.KindPlan, Level: api.LevelInfo, Priority: api.PriorityLow,
				Message: fmt.Sprintf("plan superseded by a newer desired state; %d of %d steps not run", len(steps)-i, len(steps))})
			a.flushEvents(ctx)
			return "", errSuperseded
		}
		if err := a.runStep(ctx, s, manifests); err != nil {
			a.flushEvents(ctx)
			if errors.Is(err, errSuperseded) {
				return "", err
			}
			a.failed(res.Digest, err)
			return "", err
		}
		a.flushEvents(ctx)
	}
	a.gcCache(ctx, manifests)
	return res.Digest, nil
}

// failed records that converging to digest failed, so the periodic tick
// retries it only after a growing delay instead of rerunning failing
// scripts every interval. A new desired state is tried at once.
func (a *Agent) failed(digest string, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.fail.digest != digest {
		a.fail.digest, a.fail.count = digest, 0
	}
	a.fail.count++
	delay := a.cfg.ReportInterval << min(a.fail.count-1, 6)
	a.fail.delay = min(delay, 30*time.Minute)
	a.fail.next = a.now().Add(a.fail.delay)
	a.fail.err = err
}

// retryLater returns the last error while a failed digest waits for its
// retry.
func (a *Agent) retryLater(digest string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.fail.digest == digest && a.now().Before(a.fail.next) {
		return fmt.Errorf("%w (next try in %v)", a.fail.err, a.fail.next.Sub(a.now()).Round(time.Second))
	}
	return nil
}

func (a *Agent) runStep(ctx context.Context, s plan.Step, manifests map[string]*api.Manifest) error {
	pkg := s.Name
	if s.To != nil {
		pkg = s.To.Name + ":" + s.To.Version
	} else if s.From != nil {
		pkg = s.From.Name + ":" + s.From.Version
	}
	a.event(api.Event{Kind: api.KindStepStart, Level: api.LevelInfo, Priority: api.PriorityLow, Package: pkg, Message: s.String()})
	var err error
	// Services stop before and start after the step (services.go).
	a.svc.mu.Lock()
	switch s.Action {
	case plan.Remove:
		a.stopServices(ctx, s.Name, s.Instance)
		if err = a.engine.Remove(ctx, s.Name, s.Instance); err != nil {
			if serr := a.startServices(ctx, s.Name, s.Instance); serr != nil {
				a.log.Error("restart services after a failed removal", "package", s.Name, "err", serr)
			}
		} else {
			err = a.removeServices(ctx, s.Name, s.Instance)
		}
	case plan.Reconfigure:
		err = a.reconfigure(ctx, manifests[s.To.Digest], s.To)
	default:
		m := manifests[s.To.Digest]
		have := union(a.tags, s.To.Tags)
		ctx := withTransfer(ctx, pkg, m) // step-progress events (progress.go)
		// Values are checked before anything on the device is touched.
		var vals map[string]any
		if vals, err = appValues(m, s.To); err == nil {
			err = a.fetchBases(ctx, neededDigests(m, have), a.deltaBases(m, s.From)) // fetch.go
		}
		t := install.Target{
			Manifest: m, Digest: s.To.Digest, Have: have, Tags: s.To.Tags,
			Action:   string(s.Action), // the plan's kind; the engine takes it
			Instance: s.To.Instance, Params: param.Strings(vals),
			Configure: a.configureHook(m, s.To.Instance, vals),
			Progress:  a.installProgress(pkg),
		}
		if err == nil {
			t.Templates, err = a.renderedTemplates(ctx, m, s.To.Instance, vals)
		}
		if err == nil {
			err = a.applyWithServices(ctx, t, s.From)
		}
		// A blob corrupted in the cache: drop it, fetch it once more,
		// and try once more. A second mismatch is the error.
		var ce *install.CorruptBlobError
		if errors.As(err, &ce) {
			a.log.Warn("corrupt blob in the cache: fetching it again", "digest", ce.Digest, "package", pkg)
			if err = a.cache.Delete(ctx, ce.Digest); err == nil {
				err = a.fetch(ctx, []string{ce.Digest})
			}
			if err == nil {
				t.Templates, err = a.renderedTemplates(ctx, m, s.To.Instance, vals)
			}
			if err == nil {
				err = a.applyWithServices(ctx, t, s.From)
			}
		}
	}
	a.svc.mu.Unlock()
	a.events().prog.drain() // the step's last progress before its outcome
	if err != nil {
		payload := map[string]any{"step": s.String(), "error": err.Error()}
		var se *install.ScriptError
		if errors.As(err, &se) {
			payload["script"] = se.Script
			payload["exit_code"] = se.Code
			payload["output"] = se.Output
		}
		if a.sup.stale() {
			// The device did not fail: what it was asked for changed
			// while it worked (the build it fetched may be gone).
			payload["superseded"] = true
			a.event(api.Event{Kind: api.KindStepFailed, Level: api.LevelInfo, Priority: api.PriorityLow, Package: pkg,
				Message: fmt.Sprintf("%s: superseded by a newer desired state (%v)", s, err), Payload: mustJSON(payload)})
			return fmt.Errorf("%s: %w", s, errSuperseded)
		}
		a.event(api.Event{Kind: api.KindStepFailed, Level: api.LevelError, Priority: api.PriorityHigh, Package: pkg,
			Message: fmt.Sprintf("%s: %v", s, err), Payload: mustJSON(payload)})
		return fmt.Errorf("%s: %w", s, err)
	}
	done := api.Event{Kind: api.KindStepDone, Level: api.LevelInfo, Priority: api.PriorityLow, Package: pkg, Message: s.String()}
	a.event(done)
	a.stepHooks(s, done) // hooks.go
	return nil
}

// manifest returns the manifest of a resolved app: from the install engine
// when it has it, else fetched by digest (it is a blob), verified, decoded,
// validated and checked to be the package the server said it is.
func (a *Agent) manifest(ctx context.Context, app api.ResolvedApp) (*api.Manifest, error) {
	if m, err := a.engine.Manifest(app.Digest); err == nil {
		return m, nil
	}
	if err := a.fetch(ctx, []string{app.Digest}); err != nil {
		return nil, err
	}
	f, err := a.cache.Open(ctx, app.Digest)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("read manifest %s: %w", app.Digest, err)
	}
	m, err := pkgfile.DecodeManifest(data)
	if err != nil {
		return nil, fmt.Errorf("manifest of %s %s: %w", app.Name, app.Version, err)
	}
	if m.Group+":"+m.Name != app.Name || m.Version != app.Version {
		return nil, fmt.Errorf("manifest %s is %s, not %s:%s as the server said", app.Digest, m.Coordinate(), app.Name, app.Version)
	}
	return m, nil
}

// maxUnsizedBlob bounds blobs whose size no manifest gives: manifests,
// scripts and templates.
const maxUnsizedBlob = 64 << 20

// maxDownload is the most bytes the blob digest may have: its size in the
// step's manifest, else maxUnsizedBlob.
func maxDownload(ctx context.Context, digest string) int64 {
	if t, _ := ctx.Value(transferKey{}).(*transfer); t != nil {
		if n, ok := t.sizes[digest]; ok {
			return n
		}
	}
	return maxUnsizedBlob
}

// gcCache removes cached blobs that neither the installed builds (current
// and previous, for rollback) nor the desired ones refer to.
func (a *Agent) gcCache(ctx context.Context, desired map[string]*api.Manifest) {
	keep := map[string]bool{}
	for _, d := range a.engine.Referenced() {
		keep[d] = true
	}
	for digest, m := range desired {
		keep[digest] = true
		for _, d := range m.Digests() {
			keep[d] = true
		}
	}
	var drop []string
	_ = a.cache.List(ctx, func(d string, _ int64) error {
		if !keep[d] {
			drop = append(drop, d)
		}
		return nil
	})
	for _, d := range drop {
		_ = a.cache.Delete(ctx, d)
	}
}

// neededDigests returns the blobs one device needs of a build: the files
// of its platform's tree (the generic tree and the overlays that fit), the
// scripts and the templates; not the overlays of other platforms.
func neededDigests(m *api.Manifest, have []string) []string {
	mine := *m
	mine.Files = pkgfile.Tree(m, have)
	return mine.Digests()
}

// union is the tag set of a and b, normalised.
func union(a, b []string) []string {
	return api.NormalizeTags(append(slices.Clone(a), b...))
}
