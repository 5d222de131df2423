package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/fleet"
	"github.com/drover-dev/drover/internal/param"
	"github.com/drover-dev/drover/internal/resolve"
	"github.com/drover-dev/drover/internal/store"
)

// resolution is a device's resolved desired state, the effective state it
// was resolved from, and the blobs the device may fetch because of it.
type resolution struct {
	r       *api.Resolved
	eff     fleet.Result
	allowed map[string]bool
}

// resolver computes and caches resolutions: the one place where a
// device's documents, labels, tags, the pushed builds and the parameter
// values become its resolved desired state. A document change, a new
// report's tags or labels, or a parameter change drops the resolutions
// it concerns; a push drops none (documents are pinned: builds pushed
// after a document was set are not considered for it). Generations make
// sure a resolution computed while an invalidation happened is never
// cached.
type resolver struct {
	st     store.Store
	staged func(id string) ([]api.Document, string) // a running rollout's documents for a device

	mu        sync.Mutex
	cands     []resolve.Candidate
	pushed    map[string]time.Time // build digest → pushed
	manifests map[string]*manifest // by digest, decoded once
	byCutoff  map[int64][]resolve.Candidate
	docs      *fleet.Set
	params    *paramCache
	memo      map[string]*api.Resolved   // resolutions shared by devices with the same inputs
	allowed   map[string]map[string]bool // by resolution digest: the blobs it lets a device fetch
	cache     map[string]*cached
	gen       uint64            // bumped by invalidateResolutions
	devGen    map[string]uint64 // bumped by invalidate(device)
}

// manifest is a decoded manifest and the size of its JSON.
type manifest struct {
	*api.Manifest
	size int64
}

type cached struct {
	res    *resolution
	gen    uint64
	devGen uint64
}

func newResolver(st store.Store, staged func(string) ([]api.Document, string)) *resolver {
	empty, _ := fleet.Compile(nil)
	return &resolver{st: st, staged: staged, manifests: map[string]*manifest{}, cache: map[string]*cached{},
		devGen: map[string]uint64{}, docs: empty, memo: map[string]*api.Resolved{}, allowed: map[string]map[string]bool{}, params: newParamCache(st)}
}

// loadDocuments reads every document from the store.
func (rv *resolver) loadDocuments(ctx context.Context) error {
	docs, err := rv.st.Documents(ctx)
	if err != nil {
		return fmt.Errorf("load documents: %w", err)
	}
	set, err := fleet.Compile(docs)
	if err != nil {
		return fmt.Errorf("load documents: %w", err)
	}
	rv.mu.Lock()
	rv.docs = set
	rv.mu.Unlock()
	return nil
}

// documents returns the compiled stored documents.
func (rv *resolver) documents() *fleet.Set {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	return rv.docs
}

// setDocuments replaces the compiled documents after a store write.
func (rv *resolver) setDocuments(set *fleet.Set) {
	rv.mu.Lock()
	rv.docs = set
	rv.mu.Unlock()
}

// loadCandidates reads every build from the store. Cached resolutions
// stay: a build pushed now is newer than every stored document, and a
// removal calls invalidateResolutions itself.
func (rv *resolver) loadCandidates(ctx context.Context) error {
	builds, err := rv.st.Builds(ctx, "")
	if err != nil {
		return fmt.Errorf("load builds: %w", err)
	}
	cands := make([]resolve.Candidate, 0, len(builds))
	pushed := make(map[string]time.Time, len(builds))
	for _, b := range builds {
		m, err := rv.manifest(ctx, b.Digest)
		if err != nil {
			return err
		}
		cands = append(cands, resolve.Candidate{
			Name: m.Group + ":" + m.Name, Version: m.Version, Tags: m.Tags, Digest: b.Digest, Depends: m.Depends,
		})
		pushed[b.Digest] = b.Pushed
	}
	rv.mu.Lock()
	rv.cands = cands
	rv.pushed = pushed
	rv.byCutoff = map[int64][]resolve.Candidate{}
	rv.mu.Unlock()
	return nil
}

// manifest returns a stored build's manifest, decoded once.
func (rv *resolver) manifest(ctx context.Context, digest string) (*manifest, error) {
	rv.mu.Lock()
	m, ok := rv.manifests[digest]
	rv.mu.Unlock()
	if ok {
		return m, nil
	}
	data, err := rv.st.Manifest(ctx, digest)
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", digest, err)
	}
	m = &manifest{Manifest: new(api.Manifest), size: int64(len(data))}
	if err := json.Unmarshal(data, m.Manifest); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", digest, err)
	}
	rv.mu.Lock()
	rv.manifests[digest] = m
	rv.mu.Unlock()
	return m, nil
}

func (rv *resolver) candidates() []resolve.Candidate {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	return rv.cands
}

// candidatesAt returns the builds pushed at or before cutoff (all of them
// for a zero cutoff).
func (rv *resolver) candidatesAt(cutoff time.Time) []resolve.Candidate {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	if cutoff.IsZero() {
		return rv.cands
	}
	k := cutoff.UnixNano()
	if c, ok := rv.byCutoff[k]; ok {
		return c
	}
	out := make([]resolve.Candidate, 0, len(rv.cands))
	for _, c := range rv.cands {
		if !rv.pushed[c.Digest].After(cutoff) {
			out = append(out, c)
		}
	}
	if len(rv.byCutoff) > 1000 {
		rv.byCutoff = map[int64][]resolve.Candidate{}
	}
	rv.byCutoff[k] = out
	return out
}

// invalidate drops one device's cached resolution.
func (rv *resolver) invalidate(device string) {
	rv.mu.Lock()
	rv.devGen[device]++
	delete(rv.cache, device)
	rv.mu.Unlock()
}

// invalidateResolutions drops every cached resolution: fleet-wide values
// changed, or builds were removed.
func (rv *resolver) invalidateResolutions() {
	rv.mu.Lock()
	rv.gen++
	rv.cache = map[string]*cached{}
	rv.memo = map[string]*api.Resolved{}
	rv.mu.Unlock()
}

// ticket records the generations a resolution is computed under, so it
// is kept only if nothing was invalidated meanwhile.
type ticket struct {
	device      string
	gen, devGen uint64
}

func (rv *resolver) ticket(device string) ticket {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	return ticket{device: device, gen: rv.gen, devGen: rv.devGen[device]}
}

// keep caches res for the ticket's device unless an invalidation happened
// since the ticket was taken.
func (rv *resolver) keep(t ticket, res *resolution) {
	rv.mu.Lock()
	if rv.gen == t.gen && rv.devGen[t.device] == t.devGen {
		rv.cache[t.device] = &cached{res: res, gen: t.gen, devGen: t.devGen}
	}
	rv.mu.Unlock()
}

// get returns the device's current resolution.
func (rv *resolver) get(ctx context.Context, device string) (*resolution, error) {
	t := rv.ticket(device)
	rv.mu.Lock()
	c, ok := rv.cache[device]
	rv.mu.Unlock()
	if ok && c.gen == t.gen && c.devGen == t.devGen {
		return c.res, nil
	}
	in, err := rv.input(ctx, device)
	if err != nil {
		return nil, err
	}
	res, err := rv.compute(ctx, in, rv.documents())
	if err != nil {
		return nil, err
	}
	rv.keep(t, res)
	return res, nil
}

// getFor is get for a device whose record the caller has just read.
func (rv *resolver) getFor(ctx context.Context, d api.Device) (*resolution, error) {
	t := rv.ticket(d.ID)
	rv.mu.Lock()
	c, ok := rv.cache[d.ID]
	rv.mu.Unlock()
	if ok && c.gen == t.gen && c.devGen == t.devGen {
		return c.res, nil
	}
	res, err := rv.compute(ctx, inputOf(d), rv.documents())
	if err != nil {
		return nil, err
	}
	rv.keep(t, res)
	return res, nil
}

// input is what a resolution depends on besides documents and builds.
type input struct {
	id       string
	tags     []string
	labels   map[string]string
	reported bool
}

// input reads the device's stored tags and labels; a device that has not
// reported resolves with none (its first report brings them).
func (rv *resolver) input(ctx context.Context, device string) (input, error) {
	dev, err := rv.st.Device(ctx, device)
	switch {
	case err == nil:
		return inputOf(dev), nil
	case errors.Is(err, store.ErrNotFound):
		return input{id: device}, nil
	default:
		return input{}, err
	}
}

func inputOf(d api.Device) input {
	return input{id: d.ID, tags: d.Tags, labels: d.Labels, reported: true}
}

// compute resolves the device's effective desired state under set (the
// stored documents, or those of a dry run), with what a running rollout
// stages for it laid over them.
func (rv *resolver) compute(ctx context.Context, in input, set *fleet.Set) (*resolution, error) {
	if staged, name := rv.staged(in.id); len(staged) > 0 {
		var err error
		if set, err = set.With(staged, "rollout/"+name); err != nil {
			return nil, fmt.Errorf("staged documents of rollout %s: %w", name, err)
		}
	}
	eff := set.Effective(in.id, in.labels)
	if !eff.Applies {
		return &resolution{r: &api.Resolved{Device: in.id, Unset: true, Apps: []api.ResolvedApp{}, Digest: textDigest("unset")}, eff: eff}, nil
	}
	if len(eff.Errors) > 0 {
		return errorResolution(in.id, eff, strings.Join(eff.Errors, "; ")), nil
	}
	r, err := rv.resolve(ctx, in, eff)
	if err != nil {
		var re *resolve.Error
		var pe paramErr
		if errors.As(err, &re) || errors.As(err, &pe) {
			return errorResolution(in.id, eff, err.Error()), nil
		}
		return nil, err
	}
	allowed, err := rv.allowedBlobs(ctx, r)
	if err != nil {
		return nil, err
	}
	return &resolution{r: r, eff: eff, allowed: allowed}, nil
}

// allowedBlobs returns the blobs a device with resolution r may fetch:
// its builds' manifests and every blob they name, its init entries'
// builds' included. Devices with the same
// resolved apps share one set.
func (rv *resolver) allowedBlobs(ctx context.Context, r *api.Resolved) (map[string]bool, error) {
	rv.mu.Lock()
	a, ok := rv.allowed[r.Digest]
	rv.mu.Unlock()
	if ok {
		return a, nil
	}
	a = map[string]bool{}
	builds := make([]string, 0, len(r.Apps)+len(r.Init))
	for _, app := range r.Apps {
		builds = append(builds, app.Digest)
	}
	for _, e := range r.Init {
		builds = append(builds, e.Digest)
	}
	for _, digest := range builds {
		m, err := rv.manifest(ctx, digest)
		if err != nil {
			return nil, err
		}
		a[digest] = true
		for _, d := range m.Digests() {
			a[d] = true
		}
	}
	rv.mu.Lock()
	if len(rv.allowed) > 10000 {
		rv.allowed = map[string]map[string]bool{}
	}
	rv.allowed[r.Digest] = a
	rv.mu.Unlock()
	return a, nil
}

func errorResolution(id string, eff fleet.Result, msg string) *resolution {
	return &resolution{r: &api.Resolved{Device: id, Apps: []api.ResolvedApp{}, Error: msg, Digest: textDigest("error\x00" + msg)}, eff: eff}
}

// resolve turns effective apps into exact builds with their parameter
// values. Devices with the same tags, apps, cutoff and device parameter
// values share one resolution (a group change over thousands of alike
// devices resolves a few times, not thousands).
func (rv *resolver) resolve(ctx context.Context, in input, eff fleet.Result) (*api.Resolved, error) {
	devParams, err := rv.params.device(ctx, in.id)
	if err != nil {
		return nil, err
	}
	apps := eff.DesiredApps()
	key, kerr := json.Marshal(struct {
		Tags   []string
		Cutoff int64
		Apps   []api.DesiredApp
		Params map[string]map[string]any
		Init   []fleet.Init `json:",omitempty"`
	}{in.tags, eff.Cutoff.UnixNano(), apps, devParams, eff.Init})
	if kerr == nil {
		rv.mu.Lock()
		r, ok := rv.memo[string(key)]
		rv.mu.Unlock()
		if ok {
			out := *r
			out.Device = in.id
			return &out, nil
		}
	}
	gen := rv.ticket("").gen
	r, err := resolve.Resolve(in.id, in.tags, apps, rv.candidatesAt(eff.Cutoff))
	if err != nil {
		return nil, err
	}
	if err := rv.applyParams(ctx, in.id, r, devParams); err != nil {
		return nil, err
	}
	if err := rv.resolveInit(in, eff, r); err != nil {
		return nil, err
	}
	if kerr == nil {
		rv.mu.Lock()
		if rv.gen == gen {
			if len(rv.memo) > 10000 {
				rv.memo = map[string]*api.Resolved{}
			}
			rv.memo[string(key)] = r
		}
		rv.mu.Unlock()
	}
	return r, nil
}

func textDigest(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// paramCache holds parameter values read from the store, so resolving
// many devices reads the fleet's values once and each device's once.
type paramCache struct {
	st store.Store

	mu    sync.Mutex
	fleet map[string]map[string]any            // nil: not loaded
	devs  map[string]map[string]map[string]any // device → package → values
	have  map[string]bool                      // devices with values of their own; nil: not loaded
}

func newParamCache(st store.Store) *paramCache {
	return &paramCache{st: st, devs: map[string]map[string]map[string]any{}}
}

// fleetValues returns the fleet-wide values by package.
func (pc *paramCache) fleetValues(ctx context.Context) (map[string]map[string]any, error) {
	pc.mu.Lock()
	v := pc.fleet
	pc.mu.Unlock()
	if v != nil {
		return v, nil
	}
	v, err := pc.st.AllParamValues(ctx, "")
	if err != nil {
		return nil, err
	}
	pc.mu.Lock()
	pc.fleet = v
	pc.mu.Unlock()
	return v, nil
}

// device returns a device's values by package (none: an empty map).
func (pc *paramCache) device(ctx context.Context, id string) (map[string]map[string]any, error) {
	if id == "" {
		return map[string]map[string]any{}, nil
	}
	pc.mu.Lock()
	v, ok := pc.devs[id]
	have := pc.have
	pc.mu.Unlock()
	if ok {
		return v, nil
	}
	if have == nil {
		ids, err := pc.st.ParamDevices(ctx)
		if err != nil {
			return nil, err
		}
		have = make(map[string]bool, len(ids))
		for _, id := range ids {
			have[id] = true
		}
		pc.mu.Lock()
		pc.have = have
		pc.mu.Unlock()
	}
	if !have[id] {
		return map[string]map[string]any{}, nil
	}
	v, err := pc.st.AllParamValues(ctx, id)
	if err != nil {
		return nil, err
	}
	pc.mu.Lock()
	if len(pc.devs) > 100000 {
		pc.devs = map[string]map[string]map[string]any{}
	}
	pc.devs[id] = v
	pc.mu.Unlock()
	return v, nil
}

// forget drops cached values: the fleet's and every device's when device
// is "", else that device's.
func (pc *paramCache) forget(device string) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	pc.have = nil
	if device == "" {
		pc.fleet = nil
		pc.devs = map[string]map[string]map[string]any{}
		return
	}
	delete(pc.devs, device)
}

// swap replaces the device's cached resolution by res, computed after
// ticket t was taken: kept only if nothing invalidated the device since,
// and any other cached resolution of it is dropped either way.
func (rv *resolver) swap(t ticket, res *resolution) {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	ok := rv.gen == t.gen && rv.devGen[t.device] == t.devGen
	rv.devGen[t.device]++
	delete(rv.cache, t.device)
	if ok {
		rv.cache[t.device] = &cached{res: res, gen: rv.gen, devGen: rv.devGen[t.device]}
	}
}

// paramErr is a parameter value that does not fit a chosen build: the
// device's resolution error, or an invalid state at state set.
type paramErr struct{ err error }

func (e paramErr) Error() string { return e.err.Error() }
func (e paramErr) Unwrap() error { return e.err }

// applyParams fills each resolved app's Params with its values, resolved
// by precedence (package default < fleet < device < entry) and checked
// against the chosen build's declarations, then recomputes the digest.
// A bad or missing value is a paramErr naming the app and the parameter.
// This is the one place the precedence is applied.
func (rv *resolver) applyParams(ctx context.Context, device string, r *api.Resolved, dev map[string]map[string]any) error {
	fleet, err := rv.params.fleetValues(ctx)
	if err != nil {
		return err
	}
	for i := range r.Apps {
		app := &r.Apps[i]
		m, err := rv.manifest(ctx, app.Digest)
		if err != nil {
			return err
		}
		layers := []param.Layer{{Name: "fleet", Values: onlyDeclared(fleet[app.Name], m.Params)}, {Name: "device", Values: onlyDeclared(dev[app.Name], m.Params)}, {Name: "state entry", Values: app.Params}}
		vals, err := param.Resolve(m.Params, layers...)
		if err != nil {
			who := app.Name
			if app.Instance != "" {
				who += "[" + app.Instance + "]"
			}
			return paramErr{fmt.Errorf("%s %s: %w", who, app.Version, err)}
		}
		app.Params = vals
	}
	r.Digest = resolve.Digest(r.Apps)
	return nil
}

// onlyDeclared drops fleet and device values the chosen build does not
// declare: they may be meant for another version of the package. Entry
// values are the operator's word for this device and are checked whole.
func onlyDeclared(v map[string]any, decls map[string]api.Param) map[string]any {
	if len(v) == 0 {
		return nil
	}
	out := make(map[string]any, len(v))
	for k, x := range v {
		if _, ok := decls[k]; ok {
			out[k] = x
		}
	}
	return out
}
