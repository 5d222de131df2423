package server

import (
	"context"
	"fmt"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/fleet"
	"github.com/drover-dev/drover/internal/pkgfile"
	"github.com/drover-dev/drover/internal/resolve"
)

// resolveInit resolves the effective init entries into r, against the
// same builds as its apps, and makes them part of r's digest.
func (rv *resolver) resolveInit(in input, eff fleet.Result, r *api.Resolved) error {
	if len(eff.Init) == 0 {
		return nil
	}
	entries := make([]resolve.InitEntry, len(eff.Init))
	for i, e := range eff.Init {
		entries[i] = resolve.InitEntry{Group: e.Group, InitEntry: e.InitEntry}
	}
	ri, err := resolve.Init(in.id, in.tags, entries, rv.candidatesAt(eff.Cutoff))
	if err != nil {
		return err
	}
	r.Init = ri
	r.Digest = resolve.StateDigest(r.Apps, r.Init)
	return nil
}

// pinInit validates a document's init entries against the builds that
// exist and pins their constraints into d.Pinned: the package and a
// version must exist, and run must be an executable file of every build
// of the pinned version (whichever a device's tags choose). Errors are
// one line naming the document and the entry.
func (s *Server) pinInit(ctx context.Context, d *api.Document, cands []resolve.Candidate) error {
	if len(d.Init) == 0 {
		return nil
	}
	if d.Kind != api.DocGroup {
		return api.Errorf(api.EINVALID, docName(*d)+": "+fleet.ErrDeviceInit.Error())
	}
	if err := fleet.CheckInit(d.Init); err != nil {
		return api.Errorf(api.EINVALID, docName(*d)+": "+err.Error())
	}
	for _, e := range d.Init {
		if err := resolve.Validate([]api.DesiredApp{{Name: e.Name, Version: e.Version}}, cands); err != nil {
			return api.Errorf(api.EINVALID, fmt.Sprintf("%s: init %s", docName(*d), err))
		}
		v, exact, err := resolve.Pin(e.Name, e.Version, cands)
		if err != nil {
			return api.Errorf(api.EINVALID, fmt.Sprintf("%s: init %s", docName(*d), err))
		}
		if !exact {
			d.Pinned = append(d.Pinned, api.Pin{Name: e.Name, Constraint: e.Version, Version: v, Init: true})
		}
		n := 0
		for _, c := range cands {
			if c.Name != e.Name || c.Version != v {
				continue
			}
			n++
			m, err := s.res.manifest(ctx, c.Digest)
			if err != nil {
				return err
			}
			if err := pkgfile.CheckProgram(m.Files, e.Run); err != nil {
				return api.Errorf(api.EINVALID, fmt.Sprintf("%s: init %s:%s: run: %v", docName(*d), e.Name, v, err))
			}
		}
		if n == 0 {
			return api.Errorf(api.EINVALID, fmt.Sprintf("%s: init %s: no build of version %s", docName(*d), e.Name, v))
		}
	}
	return nil
}

// maxInitRecords bounds the init records one report may carry.
const maxInitRecords = 4096
