package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/atomicfile"
	"github.com/drover-dev/drover/internal/blob"
	"github.com/drover-dev/drover/internal/install"
	"github.com/drover-dev/drover/internal/local"
	"github.com/drover-dev/drover/internal/param"
	"github.com/drover-dev/drover/internal/service"
)

// services is the agent's part that runs the packages' services: the
// supervisor, the purge flags of the desired-state entries, and the
// secret parameter values to keep out of events, reports and logs.
type services struct {
	sup *service.Supervisor
	// mu serializes what changes services: a convergence step, the
	// start-up pass, a node-local verb.
	mu      sync.Mutex
	changed chan struct{} // a service changed state: report soon
	purgeMu sync.Mutex
	secrets *secretSet
}

// initServices makes the supervisor. Called by New.
func (a *Agent) initServices(secrets *secretSet) error {
	ch := make(chan struct{}, 1)
	sup, err := service.New(service.Config{
		RuntimeRoot: a.cfg.RuntimeRoot, Logger: a.log, Now: a.cfg.Now,
		// Services' health commands run as often as the machine's
		// health checks (--health-interval), with their timeout.
		HealthInterval: a.cfg.Node.HealthInterval, HealthTimeout: a.cfg.Node.HealthTimeout,
		OnChange: func() {
			select {
			case ch <- struct{}{}:
			default:
			}
		},
		OnEvent: a.serviceEvent,
	})
	if err != nil {
		return fmt.Errorf("services: %w", err)
	}
	a.svc = &services{sup: sup, changed: ch, secrets: secrets}
	return nil
}

// serviceEvent turns what happened to a service on its own (a crash, an
// exit, a restart by policy) into an event.
func (a *Agent) serviceEvent(sev service.Event) {
	ev := api.Event{Package: sev.Package + ":" + sev.Version, Message: sev.Message,
		Payload: mustJSON(map[string]any{"coordinate": sev.Coordinate, "failed": sev.Failed, "restart": sev.Restart})}
	switch sev.Kind {
	case service.EventExited:
		ev.Kind = api.KindServiceExited
		switch {
		case sev.Failed && !sev.Restart:
			ev.Level, ev.Priority = api.LevelError, api.PriorityHigh
		case sev.Restart:
			ev.Level, ev.Priority = api.LevelWarn, api.PriorityMedium
		default:
			ev.Level, ev.Priority = api.LevelInfo, api.PriorityMedium
		}
	case service.EventRestarted:
		ev.Kind, ev.Level, ev.Priority = api.KindServiceRestarted, api.LevelInfo, api.PriorityMedium
		if sev.Failed {
			ev.Level, ev.Priority = api.LevelError, api.PriorityHigh
		}
	default:
		return
	}
	a.event(ev)
}

// ServiceStates returns the state of every supervised service, secret
// values masked out of their errors.
func (a *Agent) ServiceStates() []api.ServiceState {
	sts := a.svc.sup.States()
	for i := range sts {
		st := &sts[i]
		st.Error, st.LastError, st.HealthOutput = a.svc.secrets.mask(st.Error), a.svc.secrets.mask(st.LastError), a.svc.secrets.mask(st.HealthOutput)
	}
	return sts
}

// installed is the engine's installed apps with the digest of the
// parameter values each was configured with, for plan.Make and reports.
func (a *Agent) installed() []api.InstalledApp {
	apps := a.engine.Installed()
	for i := range apps {
		apps[i].ParamsDigest = param.Digest(a.engine.Params(apps[i].Name, apps[i].Instance))
	}
	return apps
}

// runServices starts (or adopts, when they survived an agent restart)
// the services of every installed app, then reports service changes to
// the server as they happen, until ctx is done. Services keep running
// when the agent stops: an agent upgrade does not restart them.
func (a *Agent) runServices(ctx context.Context) {
	a.svc.mu.Lock()
	for _, app := range a.engine.Installed() {
		if err := a.startServices(ctx, app.Name, app.Instance); err != nil {
			a.log.Error("start services", "package", app.Name, "instance", app.Instance, "err", err)
		}
	}
	a.svc.mu.Unlock()
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.svc.changed:
		}
		// Let a burst of changes settle into one report.
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
		if err := a.report(ctx); err != nil {
			a.log.Debug("report after a service change", "err", err)
		}
	}
}

// serviceSpecs are the services of an installed app, with the values it
// was configured with.
func (a *Agent) serviceSpecs(name, instance string) ([]service.Spec, error) {
	var app *api.InstalledApp
	for _, x := range a.engine.Installed() {
		if x.Name == name && x.Instance == instance {
			app = &x
			break
		}
	}
	if app == nil {
		return nil, nil
	}
	m, err := a.engine.Manifest(app.Digest)
	if err != nil {
		return nil, err
	}
	if len(m.Services) == 0 {
		return nil, nil
	}
	loc, _ := a.engine.Location(name, instance)
	params := a.engine.Params(name, instance)
	a.svc.secrets.note(m.Params, params)
	return service.Specs(m, service.App{Name: name, Version: app.Version, Instance: instance, Location: loc,
		Params: params, Labels: a.cfg.Labels}), nil
}

// startServices starts an installed app's services; a service already
// running as asked is left alone. The first that fails to start is the
// error, with the tail of its console.
func (a *Agent) startServices(ctx context.Context, name, instance string) error {
	specs, err := a.serviceSpecs(name, instance)
	if err != nil {
		return err
	}
	for _, sp := range specs {
		ev := api.Event{Kind: api.KindLog, Level: api.LevelInfo, Priority: api.PriorityLow, Package: name,
			Message: "service-start " + sp.Coordinate}
		a.event(ev)
		if err := a.svc.sup.Start(ctx, sp); err != nil {
			return err
		}
		a.runHooks(PhaseServiceStart, ev)
	}
	return nil
}

// stopServices stops the supervised services of an app, whatever build
// they run, and returns their coordinates.
func (a *Agent) stopServices(ctx context.Context, name, instance string) []string {
	var stopped []string
	for _, st := range a.svc.sup.States() {
		if st.Package != name || st.Instance != instance {
			continue
		}
		ev := api.Event{Kind: api.KindLog, Level: api.LevelInfo, Priority: api.PriorityLow, Package: name,
			Message: "service-stop " + st.Coordinate}
		a.event(ev)
		if err := a.svc.sup.Stop(ctx, st.Coordinate); err != nil {
			a.log.Warn("stop service", "service", st.Coordinate, "err", err)
		}
		a.runHooks(PhaseServiceStop, ev)
		stopped = append(stopped, st.Coordinate)
	}
	return stopped
}

// removeServices stops an app's services and removes their runtime
// directories, data/ too if the app's last entry said purge: true.
func (a *Agent) removeServices(ctx context.Context, name, instance string) error {
	purge := a.takePurge(name, instance)
	var errs []error
	for _, st := range a.svc.sup.States() {
		if st.Package == name && st.Instance == instance {
			errs = append(errs, a.svc.sup.Remove(ctx, st.Coordinate, purge))
		}
	}
	return errors.Join(errs...)
}

// purgeFile records the purge flags of the desired-state entries: an
// entry says purge: true while it is there, and the removal happens once
// it is gone.
func (a *Agent) purgeFile() string { return filepath.Join(a.cfg.Home, "system", "purge.json") }

func (a *Agent) loadPurge() map[string]bool {
	m := map[string]bool{}
	if b, err := os.ReadFile(a.purgeFile()); err == nil {
		_ = json.Unmarshal(b, &m)
	}
	return m
}

func (a *Agent) savePurge(m map[string]bool) {
	b, _ := json.Marshal(m)
	if err := atomicfile.WriteFile(a.purgeFile(), b, 0o600); err != nil {
		a.log.Warn("purge flags", "err", err)
	}
}

// notePurge records the purge flag of every app of a resolved state.
func (a *Agent) notePurge(res *api.Resolved) {
	a.svc.purgeMu.Lock()
	defer a.svc.purgeMu.Unlock()
	m := a.loadPurge()
	changed := false
	for _, app := range res.Apps {
		if m, err := a.engine.Manifest(app.Digest); err == nil {
			a.svc.secrets.noteAny(m.Params, app.Params)
		}
		k := app.Name + "\x00" + app.Instance
		if m[k] != app.Purge {
			changed = true
			if app.Purge {
				m[k] = true
			} else {
				delete(m, k)
			}
		}
	}
	if changed {
		a.savePurge(m)
	}
}

func (a *Agent) takePurge(name, instance string) bool {
	a.svc.purgeMu.Lock()
	defer a.svc.purgeMu.Unlock()
	m := a.loadPurge()
	k := name + "\x00" + instance
	p := m[k]
	if p {
		delete(m, k)
		a.savePurge(m)
	}
	return p
}

// appValues checks a resolved app's values against its build's
// declarations (defence in depth: the server did already) and returns
// them typed, with defaults.
func appValues(m *api.Manifest, app *api.ResolvedApp) (map[string]any, error) {
	vals, err := param.Resolve(m.Params, param.Layer{Name: "resolved", Values: app.Params})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", app.Name, err)
	}
	return vals, nil
}

// templateData is what the build's templates see.
func (a *Agent) templateData(m *api.Manifest, instance string, vals map[string]any) param.Data {
	return param.Data{
		Params:   vals,
		Device:   param.Device{ID: a.cfg.Device, Labels: a.cfg.Labels},
		Package:  param.Package{Name: m.Group + ":" + m.Name, Version: m.Version},
		Instance: instance,
	}
}

// renderedTemplates renders a root-mode build's templates for
// install.Target.Templates: in root mode a template is a file the package
// owns, installed under the engine's ownership, conflict and journal
// rules (0600 when the build has a secret parameter). Prefix-mode builds
// render at configure (configureHook) into their own version folder.
func (a *Agent) renderedTemplates(ctx context.Context, m *api.Manifest, instance string, vals map[string]any) ([]param.Rendered, error) {
	if m.Install != api.InstallRoot || len(m.Templates) == 0 {
		return nil, nil
	}
	return param.RenderTemplates(ctx, m, a.templateData(m, instance, vals), a.openTemplate)
}

// configureHook renders a prefix-mode build's templates into the install
// location at configure (install.Target.Configure), with the app's values,
// readable by their owner only when the build has a secret parameter.
func (a *Agent) configureHook(m *api.Manifest, instance string, vals map[string]any) func(ctx context.Context, loc string) error {
	// Known before the step's scripts run, so their output is masked.
	a.svc.secrets.noteAny(m.Params, vals)
	if len(m.Templates) == 0 || m.Install == api.InstallRoot {
		return nil
	}
	data := a.templateData(m, instance, vals)
	return func(ctx context.Context, loc string) error {
		if err := param.WriteTemplates(ctx, loc, m, data, a.openTemplate); err != nil {
			return err
		}
		return param.PrivateTemplates(loc, m)
	}
}

// openTemplate opens a template's source from the cache.
func (a *Agent) openTemplate(ctx context.Context, d string) (io.ReadCloser, error) {
	// The cache is not trusted: a template's source is checked against
	// its digest before it is rendered.
	if err := blob.Verify(ctx, a.cache, d); errors.Is(err, blob.ErrDigestMismatch) {
		return nil, &install.CorruptBlobError{Digest: d, Path: "template source"}
	} else if err != nil {
		return nil, err
	}
	return a.cache.Open(ctx, d)
}

// secretSet holds the values of the secret parameters the agent knows
// of. They are masked (as ***) out of events, reports and the agent's
// log. Values shorter than minSecret are not masked: they cannot be
// told from ordinary text.
type secretSet struct {
	mu   sync.RWMutex
	vals map[string]bool
}

const minSecret = 4

// note records the secret values among vals, by their declarations.
func (s *secretSet) note(decls map[string]api.Param, vals map[string]string) {
	for name, p := range decls {
		if v, ok := vals[name]; ok && p.Secret && len(v) >= minSecret {
			s.mu.Lock()
			if s.vals == nil {
				s.vals = map[string]bool{}
			}
			s.vals[v] = true
			s.mu.Unlock()
		}
	}
}

// noteAny is note for typed values.
func (s *secretSet) noteAny(decls map[string]api.Param, vals map[string]any) {
	strs := map[string]string{}
	for name, v := range vals {
		if v != nil {
			strs[name] = param.String(v)
		}
	}
	s.note(decls, strs)
}

// mask replaces every known secret value in text.
func (s *secretSet) mask(text string) string {
	if s == nil || text == "" {
		return text
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	for v := range s.vals {
		text = strings.ReplaceAll(text, v, "***")
		// As it reads inside a JSON string.
		if q, err := json.Marshal(v); err == nil && len(q) > 2 {
			text = strings.ReplaceAll(text, string(q[1:len(q)-1]), "***")
		}
	}
	return text
}

// maskEvent masks secrets out of an event's message and payload.
func (s *secretSet) maskEvent(ev *api.Event) {
	ev.Message = s.mask(ev.Message)
	if len(ev.Payload) > 0 {
		if p := s.mask(string(ev.Payload)); json.Valid([]byte(p)) {
			ev.Payload = json.RawMessage(p)
		}
	}
}

// maskHandler masks secret values out of the agent's log.
type maskHandler struct {
	h slog.Handler
	s *secretSet
}

func (m maskHandler) Enabled(ctx context.Context, l slog.Level) bool { return m.h.Enabled(ctx, l) }

func (m maskHandler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, m.s.mask(r.Message), r.PC)
	r.Attrs(func(at slog.Attr) bool {
		out.AddAttrs(m.maskAttr(at))
		return true
	})
	return m.h.Handle(ctx, out)
}

func (m maskHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	masked := make([]slog.Attr, len(attrs))
	for i, at := range attrs {
		masked[i] = m.maskAttr(at)
	}
	return maskHandler{h: m.h.WithAttrs(masked), s: m.s}
}

func (m maskHandler) WithGroup(name string) slog.Handler {
	return maskHandler{h: m.h.WithGroup(name), s: m.s}
}

func (m maskHandler) maskAttr(at slog.Attr) slog.Attr {
	v := at.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(at.Key, m.s.mask(v.String()))
	case slog.KindAny:
		switch x := v.Any().(type) {
		case error:
			return slog.String(at.Key, m.s.mask(x.Error()))
		case fmt.Stringer:
			return slog.String(at.Key, m.s.mask(x.String()))
		case []string:
			out := make([]string, len(x))
			for i, e := range x {
				out[i] = m.s.mask(e)
			}
			return slog.Any(at.Key, out)
		}
	case slog.KindGroup:
		g := v.Group()
		out := make([]any, len(g))
		for i, e := range g {
			out[i] = m.maskAttr(e)
		}
		return slog.Group(at.Key, out...)
	}
	return at
}

// applyWithServices applies a build and handles the app's services: the
// old build's are stopped before the switch and the new build's started
// after it. If the new build's services do not start, the device goes
// back to the old build and its services are started again, so the
// previous version is left running.
func (a *Agent) applyWithServices(ctx context.Context, t install.Target, from *api.InstalledApp) error {
	name := t.Manifest.Group + ":" + t.Manifest.Name
	var oldParams map[string]string
	if from != nil {
		oldParams = a.engine.Params(name, t.Instance)
		a.stopServices(ctx, name, t.Instance)
	}
	if _, err := a.engine.Apply(ctx, t); err != nil {
		if from != nil {
			if serr := a.startServices(ctx, name, t.Instance); serr != nil {
				a.log.Error("restart the old build's services", "package", name, "err", serr)
			}
		}
		return err
	}
	err := a.startServices(ctx, name, t.Instance)
	if err == nil || from == nil {
		return err
	}
	a.stopServices(ctx, name, t.Instance)
	oldM, merr := a.engine.Manifest(from.Digest)
	if merr != nil {
		return fmt.Errorf("%w (and the old build is gone: %v)", err, merr)
	}
	anyParams := make(map[string]any, len(oldParams))
	for k, v := range oldParams {
		anyParams[k] = v
	}
	vals, _ := param.Resolve(oldM.Params, param.Layer{Name: "previous", Values: anyParams})
	back := install.Target{
		Manifest: oldM, Digest: from.Digest, Have: union(a.tags, from.Tags), Tags: from.Tags,
		Instance: t.Instance, Params: oldParams, Configure: a.configureHook(oldM, t.Instance, vals),
	}
	if back.Templates, merr = a.renderedTemplates(ctx, oldM, t.Instance, vals); merr != nil {
		return fmt.Errorf("%w (and rendering the old build's templates: %v)", err, merr)
	}
	if _, rerr := a.engine.Apply(ctx, back); rerr != nil {
		return fmt.Errorf("%w (and going back to %s: %v)", err, from.Version, rerr)
	}
	if serr := a.startServices(ctx, name, t.Instance); serr != nil {
		return fmt.Errorf("%w (and starting %s again: %v)", err, from.Version, serr)
	}
	return fmt.Errorf("%w; back on %s", err, from.Version)
}

// reconfigure applies new values to an installed build: templates and
// the configure script run again, then the app's services restart.
func (a *Agent) reconfigure(ctx context.Context, m *api.Manifest, app *api.ResolvedApp) error {
	vals, err := appValues(m, app)
	if err != nil {
		return err
	}
	if err := a.fetch(ctx, neededDigests(m, union(a.tags, app.Tags))); err != nil {
		return err
	}
	// Root mode: rendered templates are files the app owns, so new ones
	// are applied by the engine under its journal (a no-op when they
	// render the same).
	if ts, err := a.renderedTemplates(ctx, m, app.Instance, vals); err != nil {
		return err
	} else if ts != nil {
		have := union(a.tags, app.Tags)
		if _, err := a.engine.Apply(ctx, install.Target{Manifest: m, Digest: app.Digest, Have: have, Tags: app.Tags,
			Instance: app.Instance, Params: param.Strings(vals), Templates: ts}); err != nil {
			return err
		}
	}
	if err := a.engine.Reconfigure(ctx, app.Name, app.Instance, param.Strings(vals), a.configureHook(m, app.Instance, vals)); err != nil {
		return err
	}
	a.stopServices(ctx, app.Name, app.Instance)
	return a.startServices(ctx, app.Name, app.Instance)
}

// localServiceRoutes registers the service process actions (JPackages):
// GET /v1/services lists them; POST /v1/services/{action}?coordinate=C
// with action start, stop, restart or kill acts on one, or on all when
// no coordinate is given.
func (a *Agent) localServiceRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/services", func(w http.ResponseWriter, r *http.Request) {
		local.WriteJSON(w, http.StatusOK, a.ServiceStates())
	})
	mux.HandleFunc("POST /v1/services/{action}", func(w http.ResponseWriter, r *http.Request) {
		action := r.PathValue("action")
		if !slices.Contains([]string{"start", "stop", "restart", "kill"}, action) {
			local.WriteError(w, api.Errorf(api.EINVALID, fmt.Sprintf("service action %q: want start, stop, restart or kill", action)))
			return
		}
		coord := r.URL.Query().Get("coordinate")
		var coords []string
		for _, st := range a.svc.sup.States() {
			if coord == "" || st.Coordinate == coord {
				coords = append(coords, st.Coordinate)
			}
		}
		if coord != "" && len(coords) == 0 {
			local.WriteError(w, api.Errorf(api.ENOTFOUND, fmt.Sprintf("no service %s on this node", coord)))
			return
		}
		a.svc.mu.Lock()
		defer a.svc.mu.Unlock()
		ctx := r.Context()
		var errs []error
		for _, c := range coords {
			var err error
			switch action {
			case "start":
				sp, _ := a.svc.sup.Spec(c)
				err = a.svc.sup.Start(ctx, sp)
			case "stop":
				err = a.svc.sup.Stop(ctx, c)
			case "restart":
				err = a.svc.sup.Restart(ctx, c)
			case "kill":
				err = a.svc.sup.Kill(c)
			}
			if err != nil {
				errs = append(errs, err)
			}
			a.event(api.Event{Kind: api.KindLog, Level: api.LevelInfo, Priority: api.PriorityLow,
				Message: fmt.Sprintf("service-%s %s (node-local verb)", action, c)})
		}
		if err := errors.Join(errs...); err != nil {
			local.WriteError(w, api.Errorf(api.EINVALID, a.svc.secrets.mask(err.Error())))
			return
		}
		local.WriteJSON(w, http.StatusOK, a.ServiceStates())
	})
}
