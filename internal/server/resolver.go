package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/resolve"
	"github.com/drover-dev/drover/internal/store"
)

// resolution is a device's resolved desired state and the blobs it may
// fetch because of it.
type resolution struct {
	r       *api.Resolved
	allowed map[string]bool
}

// resolver caches resolutions. A push or removal of a package invalidates
// every device's; a state set or a change of a device's tags only that
// device's. Generations make sure a resolution computed while an
// invalidation happened is never cached.
type resolver struct {
	st store.Store

	mu        sync.Mutex
	cands     []resolve.Candidate
	manifests map[string]*api.Manifest // by digest, decoded once
	cache     map[string]*cached
	gen       uint64            // bumped by invalidateAll
	devGen    map[string]uint64 // bumped by invalidate(device)
}

type cached struct {
	res    *resolution
	gen    uint64
	devGen uint64
}

func newResolver(st store.Store) *resolver {
	return &resolver{st: st, manifests: map[string]*api.Manifest{}, cache: map[string]*cached{}, devGen: map[string]uint64{}}
}

// loadCandidates reads every build from the store and drops every cached
// resolution.
func (rv *resolver) loadCandidates(ctx context.Context) error {
	builds, err := rv.st.Builds(ctx, "")
	if err != nil {
		return fmt.Errorf("load builds: %w", err)
	}
	cands := make([]resolve.Candidate, 0, len(builds))
	for _, b := range builds {
		m, err := rv.manifest(ctx, b.Digest)
		if err != nil {
			return err
		}
		cands = append(cands, resolve.Candidate{
			Name: m.Group + ":" + m.Name, Version: m.Version, Tags: m.Tags, Digest: b.Digest, Depends: m.Depends,
		})
	}
	rv.mu.Lock()
	rv.cands = cands
	rv.gen++
	rv.cache = map[string]*cached{}
	rv.mu.Unlock()
	return nil
}

// manifest returns a stored build's manifest, decoded once.
func (rv *resolver) manifest(ctx context.Context, digest string) (*api.Manifest, error) {
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
	m = new(api.Manifest)
	if err := json.Unmarshal(data, m); err != nil {
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

// invalidate drops one device's cached resolution.
func (rv *resolver) invalidate(device string) {
	rv.mu.Lock()
	rv.devGen[device]++
	delete(rv.cache, device)
	rv.mu.Unlock()
}

// get returns the device's current resolution.
func (rv *resolver) get(ctx context.Context, device string) (*resolution, error) {
	rv.mu.Lock()
	gen, devGen := rv.gen, rv.devGen[device]
	c, ok := rv.cache[device]
	cands := rv.cands
	rv.mu.Unlock()
	if ok && c.gen == gen && c.devGen == devGen {
		return c.res, nil
	}
	res, err := rv.compute(ctx, device, cands, nil)
	if err != nil {
		return nil, err
	}
	rv.mu.Lock()
	if rv.gen == gen && rv.devGen[device] == devGen {
		rv.cache[device] = &cached{res: res, gen: gen, devGen: devGen}
	}
	rv.mu.Unlock()
	return res, nil
}

// with returns the device's resolution as it will be once its tags are
// tags, before they are stored; nothing is cached.
func (rv *resolver) with(ctx context.Context, device string, tags []string) (*resolution, error) {
	return rv.compute(ctx, device, rv.candidates(), &tags)
}

// compute resolves the device's desired state against cands, with the
// device's stored tags, or with *tags when tags is not nil.
func (rv *resolver) compute(ctx context.Context, device string, cands []resolve.Candidate, tags *[]string) (*resolution, error) {
	desired, err := rv.st.Desired(ctx, device)
	if errors.Is(err, store.ErrNotFound) {
		return &resolution{r: &api.Resolved{Device: device, Unset: true, Apps: []api.ResolvedApp{}, Digest: textDigest("unset")}}, nil
	}
	if err != nil {
		return nil, err
	}
	var have []string
	if tags != nil {
		have = *tags
	} else {
		dev, err := rv.st.Device(ctx, device)
		switch {
		case err == nil:
			have = dev.Tags
		case errors.Is(err, store.ErrNotFound):
			// Not reported yet: resolve with no device tags; the agent's
			// first report brings them and invalidates this.
		default:
			return nil, err
		}
	}
	r, err := resolve.Resolve(device, have, desired.Apps, cands)
	if err == nil {
		// Parameter values by precedence, checked against the chosen
		// builds (issue 3): a bad one is this device's resolution error.
		if perr := rv.applyParams(ctx, device, r); perr != nil {
			if errors.Is(paramError(perr), perr) {
				return nil, perr
			}
			err = perr
		}
	}
	if err != nil {
		msg := err.Error()
		return &resolution{r: &api.Resolved{Device: device, Apps: []api.ResolvedApp{}, Error: msg, Digest: textDigest("error\x00" + msg)}}, nil
	}
	allowed := map[string]bool{}
	for _, app := range r.Apps {
		m, err := rv.manifest(ctx, app.Digest)
		if err != nil {
			return nil, err
		}
		allowed[app.Digest] = true
		for _, d := range m.Digests() {
			allowed[d] = true
		}
	}
	return &resolution{r: r, allowed: allowed}, nil
}

func textDigest(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}
