package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/blob"
	"github.com/drover-dev/drover/internal/pkgfile"
	"github.com/drover-dev/drover/internal/plan"
)

// planDocuments is the dry run of docs laid over the stored documents:
// for each reported device whose resolution would change, its steps
// (decided by internal/plan from what the device reports installed), the
// bytes it would download, root-mode file conflicts and errors. Nothing
// is stored. The rollout engine takes Plan.Devices with Steps as the
// devices a change concerns.
func (s *Server) planDocuments(ctx context.Context, docs []api.Document) (api.Plan, error) {
	pinned, err := s.pinDocuments(ctx, docs)
	if err != nil {
		return api.Plan{}, err
	}
	next, err := s.res.documents().With(pinned, "")
	if err != nil {
		return api.Plan{}, api.Errorf(api.EINVALID, err.Error())
	}
	changes, err := s.evaluate(ctx, next)
	if err != nil {
		return api.Plan{}, err
	}
	p := api.Plan{Devices: []api.DevicePlan{}}
	pc := &planCache{download: map[string]int64{}, conflicts: map[string][]string{}}
	for _, c := range changes {
		if c.old.r.Digest == c.new.r.Digest || c.new.r.Unset {
			p.Unchanged++
			continue
		}
		dp, err := s.devicePlan(ctx, pc, c.dev, c.new.r)
		if err != nil {
			return api.Plan{}, err
		}
		switch {
		case len(dp.Errors) > 0 || len(dp.Conflicts) > 0:
			p.Errors++
		case len(dp.Steps) == 0:
			p.Unchanged++
			continue
		default:
			p.Changed++
		}
		p.Devices = append(p.Devices, dp)
	}
	return p, nil
}

// planCache shares what devices alike have in common within one plan.
type planCache struct {
	download  map[string]int64
	conflicts map[string][]string
}

// devicePlan is what resolution r would make device d do.
func (s *Server) devicePlan(ctx context.Context, pc *planCache, d api.Device, r *api.Resolved) (api.DevicePlan, error) {
	dp := api.DevicePlan{Device: d.ID, Steps: []api.PlanStep{}}
	if r.Error != "" {
		dp.Errors = []string{r.Error}
		return dp, nil
	}
	steps := plan.Make(r, d.Installed, func(in api.InstalledApp) []string {
		if in.Digest == "" {
			return nil
		}
		m, err := s.res.manifest(ctx, in.Digest)
		if err != nil {
			return nil // a removed build: order by name only
		}
		names := make([]string, len(m.Depends))
		for i, dep := range m.Depends {
			names[i] = dep.Name
		}
		return names
	})
	var fetch []plan.Step // what the device downloads: pending init builds, then the apps'
	for _, e := range plan.PendingInit(r.Init, d.Init) {
		fetch = append(fetch, plan.Step{Action: plan.Install, Name: e.Name, To: &api.ResolvedApp{Name: e.Name, Version: e.Version, Digest: e.Digest}})
		m, err := s.res.manifest(ctx, e.Digest)
		if err != nil {
			return dp, err
		}
		tags := slices.Clone(m.Tags)
		if tags == nil {
			tags = []string{}
		}
		dp.Steps = append(dp.Steps, api.PlanStep{Kind: api.StepInit, Name: e.Name, To: e.Version, Build: e.Digest,
			BuildTags: tags, Group: e.Group, Run: e.Run})
	}
	for _, st := range steps {
		ps := api.PlanStep{Kind: string(st.Action), Name: st.Name, Instance: st.Instance}
		if st.From != nil {
			ps.From = st.From.Version
		}
		if st.To != nil {
			ps.To = st.To.Version
			ps.Build = st.To.Digest
			m, err := s.res.manifest(ctx, st.To.Digest)
			if err != nil {
				return dp, err
			}
			ps.BuildTags = slices.Clone(m.Tags)
			if ps.BuildTags == nil {
				ps.BuildTags = []string{}
			}
		}
		dp.Steps = append(dp.Steps, ps)
	}
	var err error
	if dp.Download, err = s.download(ctx, pc, d, append(fetch, steps...)); err != nil {
		return dp, err
	}
	key := r.Digest + "\x00" + strings.Join(d.Tags, ",")
	c, ok := pc.conflicts[key]
	if !ok {
		if c, err = s.conflicts(ctx, r, d.Tags...); err != nil {
			return dp, err
		}
		pc.conflicts[key] = c
	}
	dp.Conflicts = c
	return dp, nil
}

// download is the bytes of the blobs the steps' new builds need on this
// device (its platform's files, scripts, templates, the manifest) that
// the builds it reports installed do not already hold.
func (s *Server) download(ctx context.Context, pc *planCache, d api.Device, steps []plan.Step) (int64, error) {
	var keyParts []string
	for _, st := range steps {
		if st.To != nil && st.Action != plan.Reconfigure {
			keyParts = append(keyParts, st.To.Digest+"+"+strings.Join(st.To.Tags, ","))
		}
	}
	if len(keyParts) == 0 {
		return 0, nil
	}
	for _, in := range d.Installed {
		keyParts = append(keyParts, "have:"+in.Digest+"+"+strings.Join(in.Tags, ","))
	}
	key := strings.Join(d.Tags, ",") + "|" + strings.Join(keyParts, "|")
	if n, ok := pc.download[key]; ok {
		return n, nil
	}
	have := map[string]bool{}
	for _, in := range d.Installed {
		if in.Digest == "" {
			continue
		}
		have[in.Digest] = true
		m, err := s.res.manifest(ctx, in.Digest)
		if err != nil {
			continue // removed since: nothing known of its blobs
		}
		for _, b := range s.neededBlobs(m, append(slices.Clone(d.Tags), in.Tags...)) {
			have[b.digest] = true
		}
	}
	var total int64
	for _, st := range steps {
		if st.To == nil || st.Action == plan.Reconfigure {
			continue
		}
		m, err := s.res.manifest(ctx, st.To.Digest)
		if err != nil {
			return 0, err
		}
		if !have[st.To.Digest] {
			have[st.To.Digest] = true
			total += m.size
		}
		for _, b := range s.neededBlobs(m, append(slices.Clone(d.Tags), st.To.Tags...)) {
			if have[b.digest] {
				continue
			}
			have[b.digest] = true
			size := b.size
			if size < 0 {
				if size, err = s.blobSize(ctx, b.digest); err != nil {
					return 0, err
				}
			}
			total += size
		}
	}
	pc.download[key] = total
	return total, nil
}

type blobRef struct {
	digest string
	size   int64 // -1: not in the manifest (scripts, templates)
}

// neededBlobs lists the blobs a build needs where tags hold: the files of
// its tree for that platform (the overlay choice of pkgfile.Tree, the one
// the agent makes), its scripts and templates.
func (s *Server) neededBlobs(m *manifest, tags []string) []blobRef {
	var out []blobRef
	for _, f := range pkgfile.Tree(m.Manifest, tags) {
		if f.Type == api.TypeFile && f.Digest != "" {
			out = append(out, blobRef{f.Digest, f.Size})
		}
	}
	for _, name := range api.ScriptNames {
		if d := m.Scripts[name]; d != "" {
			out = append(out, blobRef{d, -1})
		}
	}
	for _, t := range m.Templates {
		if t.Digest != "" {
			out = append(out, blobRef{t.Digest, -1})
		}
	}
	return out
}

// blobSizes caches blob sizes (a blob never changes).
type blobSizes struct {
	mu sync.Mutex
	m  map[string]int64
}

// blobSize returns a stored blob's size, 0 for one that is missing.
func (s *Server) blobSize(ctx context.Context, digest string) (int64, error) {
	s.sizes.mu.Lock()
	n, ok := s.sizes.m[digest]
	s.sizes.mu.Unlock()
	if ok {
		return n, nil
	}
	n, err := s.blobs.Stat(ctx, digest)
	if errors.Is(err, blob.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	s.sizes.mu.Lock()
	if s.sizes.m == nil || len(s.sizes.m) > 1<<20 {
		s.sizes.m = map[string]int64{}
	}
	s.sizes.m[digest] = n
	s.sizes.mu.Unlock()
	return n, nil
}

// conflicts lists the root-mode paths two apps of r would both own on a
// device with these tags ("etc/app.conf: com.example:a and com.example:b").
// Such a state can only fail on the device, so state set refuses it.
func (s *Server) conflicts(ctx context.Context, r *api.Resolved, devTags ...string) ([]string, error) {
	owner := map[string]string{}
	var out []string
	for _, app := range r.Apps {
		m, err := s.res.manifest(ctx, app.Digest)
		if err != nil {
			return nil, err
		}
		if m.Install != api.InstallRoot {
			continue
		}
		who := app.Name
		if app.Instance != "" {
			who += "[" + app.Instance + "]"
		}
		for _, f := range pkgfile.Tree(m.Manifest, append(slices.Clone(devTags), app.Tags...)) {
			if f.Type == api.TypeDir {
				continue
			}
			if o, ok := owner[f.Path]; ok && o != who {
				out = append(out, fmt.Sprintf("%s: %s and %s", f.Path, o, who))
				continue
			}
			owner[f.Path] = who
		}
	}
	sort.Strings(out)
	return out, nil
}
