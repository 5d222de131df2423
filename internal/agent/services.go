package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
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

// services is the agent's part of issue 3: the supervisor of the
// packages' services, and the purge flags of the desired-state entries.
type services struct {
	sup *service.Supervisor
	// mu serializes what changes services: a convergence step, the
	// start-up pass, a node-local verb.
	mu      sync.Mutex
	changed chan struct{} // a service changed state: report soon
	purgeMu sync.Mutex
}

// initServices makes the supervisor. Called by New.
func (a *Agent) initServices() error {
	ch := make(chan struct{}, 1)
	sup, err := service.New(service.Config{
		RuntimeRoot: a.cfg.RuntimeRoot, Logger: a.cfg.Logger, Now: a.cfg.Now,
		// Services' health commands run as often as the machine's
		// health checks (--health-interval), with their timeout.
		HealthInterval: a.cfg.Node.HealthInterval, HealthTimeout: a.cfg.Node.HealthTimeout,
		OnChange: func() {
			select {
			case ch <- struct{}{}:
			default:
			}
		},
	})
	if err != nil {
		return fmt.Errorf("services: %w", err)
	}
	a.svc = &services{sup: sup, changed: ch}
	return nil
}

// ServiceStates returns the state of every supervised service.
func (a *Agent) ServiceStates() []api.ServiceState { return a.svc.sup.States() }

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
	var out []service.Spec
	for _, s := range m.Services {
		out = append(out, service.Spec{
			Coordinate: service.Coordinate(name, instance, s.Name, a.cfg.Labels),
			Package:    name, Version: app.Version, Instance: instance, Service: s.Name,
			Location: loc, Start: s.Start, Stop: s.Stop, Health: s.Health, Restart: s.Restart, Params: params,
		})
	}
	return out, nil
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
// rules. Prefix-mode builds render at configure (configureHook) into
// their own version folder.
func (a *Agent) renderedTemplates(ctx context.Context, m *api.Manifest, instance string, vals map[string]any) ([]param.Rendered, error) {
	if m.Install != api.InstallRoot || len(m.Templates) == 0 {
		return nil, nil
	}
	return param.RenderTemplates(ctx, m, a.templateData(m, instance, vals), a.openTemplate)
}

// configureHook renders a prefix-mode build's templates into the install
// location at configure (install.Target.Configure), with the app's values.
func (a *Agent) configureHook(m *api.Manifest, instance string, vals map[string]any) func(ctx context.Context, loc string) error {
	if len(m.Templates) == 0 || m.Install == api.InstallRoot {
		return nil
	}
	data := a.templateData(m, instance, vals)
	return func(ctx context.Context, loc string) error {
		return param.WriteTemplates(ctx, loc, m, data, a.openTemplate)
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
		local.WriteJSON(w, http.StatusOK, a.svc.sup.States())
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
			local.WriteError(w, api.Errorf(api.EINVALID, err.Error()))
			return
		}
		local.WriteJSON(w, http.StatusOK, a.svc.sup.States())
	})
}
