package server

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/param"
	"github.com/drover-dev/drover/internal/store"
)

// ParamUpdate is the body of PUT /v1/params/{package}: values to set and
// names to unset, applied together.
type ParamUpdate struct {
	Set   map[string]any `json:"set,omitempty"`
	Unset []string       `json:"unset,omitempty"`
}

// ParamValues answers GET /v1/params[/{package}]: the values of one scope
// (fleet when Device is empty) by package name.
type ParamValues struct {
	Device   string                    `json:"device,omitempty" yaml:"device,omitempty"`
	Packages map[string]map[string]any `json:"packages" yaml:"packages"`
}

// paramRoutes registers fleet and device parameter calls: admin only.
// ?device=ID selects a device's values; without it, the fleet's.
func (s *Server) paramRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/params", s.admin(s.handleGetParams))
	mux.HandleFunc("GET /v1/params/{package}", s.admin(s.handleGetParams))
	mux.HandleFunc("PUT /v1/params/{package}", s.admin(s.handleSetParams))
}

const maxParamBody = 1 << 20

func (s *Server) handleGetParams(w http.ResponseWriter, r *http.Request, _ peer) error {
	ctx := r.Context()
	device := r.URL.Query().Get("device")
	out := ParamValues{Device: device, Packages: map[string]map[string]any{}}
	if pkg := r.PathValue("package"); pkg != "" {
		if _, _, err := api.ParsePackageName(pkg); err != nil {
			return api.Errorf(api.EINVALID, err.Error())
		}
		v, err := s.store.ParamValues(ctx, device, pkg)
		if err != nil {
			return err
		}
		if len(v) > 0 {
			out.Packages[pkg] = v
		}
	} else {
		all, err := s.store.AllParamValues(ctx, device)
		if err != nil {
			return err
		}
		out.Packages = all
	}
	for pkg, v := range out.Packages {
		s.maskSecrets(ctx, pkg, v)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// maskSecrets replaces, in vals, the value of each parameter a pushed
// build of pkg declares secret with "***": secret values are set, never
// read back.
func (s *Server) maskSecrets(ctx context.Context, pkg string, vals map[string]any) {
	for _, c := range s.res.candidates() {
		if c.Name != pkg {
			continue
		}
		m, err := s.res.manifest(ctx, c.Digest)
		if err != nil {
			continue
		}
		for name, p := range m.Params {
			if _, ok := vals[name]; ok && p.Secret {
				vals[name] = "***"
			}
		}
	}
}

func (s *Server) handleSetParams(w http.ResponseWriter, r *http.Request, p peer) error {
	ctx := r.Context()
	pkg := r.PathValue("package")
	if _, _, err := api.ParsePackageName(pkg); err != nil {
		return api.Errorf(api.EINVALID, err.Error())
	}
	device := r.URL.Query().Get("device")
	var up ParamUpdate
	if err := readJSON(r, maxParamBody, &up); err != nil {
		return err
	}
	if err := s.checkParamValues(ctx, pkg, up.Set); err != nil {
		return err
	}
	unlock, err := s.sharedLock(ctx, "params/"+device+"/"+pkg)
	if err != nil {
		return err
	}
	defer unlock()
	cur, err := s.store.ParamValues(ctx, device, pkg)
	if err != nil {
		return err
	}
	for k, v := range up.Set {
		cur[k] = v
	}
	for _, k := range up.Unset {
		delete(cur, k)
	}
	if err := s.store.SetParamValues(ctx, device, pkg, cur); err != nil {
		return err
	}
	// Wake whoever the values concern: they resolve again and the
	// agents reconfigure.
	s.res.params.forget(device)
	s.rep.tell(store.ChangeParams, device)
	if device == "" {
		s.res.invalidateResolutions()
		s.hub.notifyAll()
	} else {
		s.invalidateDevices([]string{device})
	}
	scope := "fleet"
	if device != "" {
		scope = "device " + device
	}
	var names []string
	for k := range up.Set {
		names = append(names, k)
	}
	sort.Strings(names)
	msg := fmt.Sprintf("parameters of %s for %s changed by %s: set %s", pkg, scope, p.name, strings.Join(names, ","))
	if len(up.Unset) > 0 {
		msg += "; unset " + strings.Join(up.Unset, ",")
	}
	if err := s.emit(ctx, api.Event{Device: device, Kind: api.KindState, Level: api.LevelInfo, Priority: api.PriorityLow, Message: msg}); err != nil {
		return err
	}
	s.maskSecrets(ctx, pkg, cur)
	writeJSON(w, http.StatusOK, ParamValues{Device: device, Packages: map[string]map[string]any{pkg: cur}})
	return nil
}

// checkParamValues refuses a value no pushed build of pkg could take: a
// name that none declares, or a value that fits no declaration of it.
// Values that fit some builds but not others are caught when a device's
// state is resolved.
func (s *Server) checkParamValues(ctx context.Context, pkg string, values map[string]any) error {
	if len(values) == 0 {
		return nil
	}
	var decls []map[string]api.Param
	for _, c := range s.res.candidates() {
		if c.Name != pkg {
			continue
		}
		m, err := s.res.manifest(ctx, c.Digest)
		if err != nil {
			return err
		}
		decls = append(decls, m.Params)
	}
	if len(decls) == 0 {
		return api.Errorf(api.EINVALID, fmt.Sprintf("%s: unknown package", pkg))
	}
	names := make([]string, 0, len(values))
	for k := range values {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, name := range names {
		var lastErr error
		declared, fits := false, false
		for _, d := range decls {
			p, ok := d[name]
			if !ok {
				continue
			}
			declared = true
			if _, err := param.Convert(p, values[name]); err != nil {
				lastErr = err
				continue
			}
			fits = true
			break
		}
		switch {
		case !declared:
			return api.Errorf(api.EINVALID, fmt.Sprintf("%s: parameter %s: %v: no build declares it", pkg, name, param.ErrUndeclared))
		case !fits:
			return api.Errorf(api.EINVALID, fmt.Sprintf("%s: parameter %s: %v", pkg, name, lastErr))
		}
	}
	return nil
}
