// Package standalone installs, removes and lists packages on one machine
// with no server (copkg's workstation use): the same install engine as the
// agent, a local blob cache, and the services started detached, as copkg's
// start.py starts them, since no agent supervises a workstation.
package standalone

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/Masterminds/semver/v3"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/blob"
	"github.com/drover-dev/drover/internal/facts"
	"github.com/drover-dev/drover/internal/install"
	"github.com/drover-dev/drover/internal/param"
	"github.com/drover-dev/drover/internal/pkgfile"
	"github.com/drover-dev/drover/internal/service"
)

// Config is the folders of a standalone installation. Home is required;
// the others default to folders under it.
type Config struct {
	Home, SoftwareRoot, RuntimeRoot, Root string
}

// Standalone is an opened standalone installation.
type Standalone struct {
	f      Config
	cache  *blob.FileStore
	engine *install.Engine
	sup    *service.Supervisor
	device string
	tags   []string
}

// Open opens (creating its folders) the standalone installation of cfg and
// finishes an install that was interrupted.
func Open(ctx context.Context, cfg Config) (*Standalone, error) {
	f := &cfg
	home := f.Home
	if home == "" {
		return nil, errors.New("standalone: no home folder")
	}
	def := func(p *string, sub string) {
		if *p == "" {
			*p = filepath.Join(home, sub)
		}
	}
	def(&f.SoftwareRoot, "software")
	def(&f.RuntimeRoot, "runtime")
	def(&f.Root, "root")
	for _, d := range []string{home, f.SoftwareRoot, f.RuntimeRoot, f.Root} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	f.Home = home
	cache, err := blob.NewFileStore(blob.FileConfig{Dir: filepath.Join(home, "system", "blobs")})
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	eng, err := install.New(install.Config{
		SoftwareRoot: f.SoftwareRoot, Root: f.Root, StateDir: filepath.Join(home, "system", "install"),
		LogDir: filepath.Join(home, "logs"), Device: host, Blobs: cache,
	})
	if err != nil {
		return nil, err
	}
	if err := eng.Recover(ctx); err != nil {
		return nil, fmt.Errorf("recover interrupted install: %w", err)
	}
	// Detached: no supervisor stays once the command exits.
	sup, err := service.New(service.Config{RuntimeRoot: f.RuntimeRoot, Detached: true})
	if err != nil {
		return nil, err
	}
	fs, err := facts.Detect(facts.Config{})
	if err != nil {
		return nil, err
	}
	return &Standalone{f: *f, cache: cache, engine: eng, sup: sup, device: host, tags: facts.Tags(fs)}, nil
}

// specs are the services of an installed app.
func (s *Standalone) specs(name, instance string) []service.Spec {
	for _, app := range s.engine.Installed() {
		if app.Name != name || app.Instance != instance {
			continue
		}
		m, err := s.engine.Manifest(app.Digest)
		if err != nil {
			return nil
		}
		loc, _ := s.engine.Location(name, instance)
		return service.Specs(m, service.App{Name: name, Version: app.Version, Instance: instance, Location: loc,
			Params: s.engine.Params(name, instance)})
	}
	return nil
}

func (s *Standalone) stopServices(ctx context.Context, name, instance string) {
	for _, sp := range s.specs(name, instance) {
		if ok, _ := s.sup.Adopt(sp); ok {
			_ = s.sup.Stop(ctx, sp.Coordinate)
		}
	}
}

func (s *Standalone) startServices(ctx context.Context, name, instance string) error {
	for _, sp := range s.specs(name, instance) {
		if err := s.sup.Start(ctx, sp); err != nil {
			return err
		}
	}
	return nil
}

// Load puts a package file's blobs in the cache and returns its manifest
// and digest.
func (s *Standalone) Load(ctx context.Context, path string) (*api.Manifest, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, "", err
	}
	defer f.Close()
	r, err := pkgfile.NewReader(bufio.NewReader(f), pkgfile.Limits{})
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", path, err)
	}
	defer r.Close()
	for {
		d, _, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, "", fmt.Errorf("%s: %w", path, err)
		}
		if err := s.cache.Put(ctx, d, r); err != nil {
			return nil, "", fmt.Errorf("%s: blob %s: %w", path, d, err)
		}
	}
	return r.Manifest(), r.Digest(), nil
}

// FindInRepo picks the package file in dir for a coordinate
// (group:name:version) or a name (group:name: the newest version).
func FindInRepo(dir, want string) (string, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.drover"))
	if err != nil {
		return "", err
	}
	best, bestV := "", (*semver.Version)(nil)
	for _, p := range files {
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		r, err := pkgfile.NewReader(bufio.NewReader(f), pkgfile.Limits{})
		if err != nil {
			f.Close()
			continue
		}
		m := r.Manifest()
		r.Close()
		f.Close()
		c := m.Coordinate()
		if c.String() != want && c.PackageName() != want {
			continue
		}
		v, err := semver.NewVersion(m.Version)
		if err == nil && (bestV == nil || v.GreaterThan(bestV)) {
			best, bestV = p, v
		}
	}
	if best == "" {
		return "", fmt.Errorf("%s: no package file for it in %s", want, dir)
	}
	return best, nil
}

// Ask prompts on out for each missing required parameter (JPackages' @ASK),
// showing its description, type, default and bounds, reads the answer
// from in, and asks again after a bad answer.
func Ask(in0 io.Reader, out io.Writer, decls map[string]api.Param, missing []string, values map[string]any) error {
	in := bufio.NewReader(in0)
	for _, name := range missing {
		p := decls[name]
		for {
			fmt.Fprintf(out, "%s (%s): ", name, param.Describe(p))
			line, err := in.ReadString('\n')
			if err != nil && line == "" {
				return fmt.Errorf("parameter %s: no answer: %w", name, err)
			}
			line = strings.TrimRight(line, "\r\n")
			if line == "" && p.Default != nil {
				break
			}
			v, cerr := param.Convert(p, line)
			if cerr == nil && line == "" {
				cerr = errors.New("a value is required")
			}
			if cerr != nil {
				fmt.Fprintf(out, "  %v; try again\n", cerr)
				continue
			}
			values[name] = v
			break
		}
	}
	return nil
}

// Request is one package to install.
type Request struct {
	Manifest *api.Manifest
	Digest   string
	Instance string
	// Values are the parameter values given; they are checked against
	// the manifest's declarations before anything is touched.
	Values map[string]any
}

// Started is a service started by Install.
type Started struct {
	Coordinate string `json:"coordinate" yaml:"coordinate"`
	Dir        string `json:"dir" yaml:"dir"`
}

// Result is what Install did.
type Result struct {
	Coordinate string    `json:"coordinate" yaml:"coordinate"`
	Location   string    `json:"location" yaml:"location"`
	Services   []Started `json:"services" yaml:"services"`
}

// Install stops the package's running services, installs (or, for the
// same build, reconfigures) it and starts its services. If the install
// fails, the previous build's services are started again.
func (s *Standalone) Install(ctx context.Context, req Request) (Result, error) {
	m, digest, instance := req.Manifest, req.Digest, req.Instance
	// Every value is checked before anything is touched.
	vals, err := param.Resolve(m.Params, param.Layer{Name: "command line", Values: req.Values})
	if err != nil {
		return Result{}, err
	}
	name := m.Group + ":" + m.Name
	data := param.Data{Params: vals, Device: param.Device{ID: s.device}, Package: param.Package{Name: name, Version: m.Version}, Instance: instance}
	open := func(ctx context.Context, d string) (io.ReadCloser, error) { return s.cache.Open(ctx, d) }
	configure := func(ctx context.Context, loc string) error {
		if err := param.WriteTemplates(ctx, loc, m, data, open); err != nil {
			return err
		}
		return param.PrivateTemplates(loc, m)
	}
	// Root mode: rendered templates are files the package owns,
	// installed under the engine's ownership and journal rules.
	var templates []param.Rendered
	if m.Install == api.InstallRoot && len(m.Templates) > 0 {
		if templates, err = param.RenderTemplates(ctx, m, data, open); err != nil {
			return Result{}, err
		}
		configure = nil
	}
	strs := param.Strings(vals)
	var prev *api.InstalledApp
	for _, a := range s.engine.Installed() {
		if a.Name == name && a.Instance == instance {
			prev = &a
		}
	}
	s.stopServices(ctx, name, instance)
	if prev != nil && prev.Digest == digest {
		if templates != nil {
			_, err = s.engine.Apply(ctx, install.Target{Manifest: m, Digest: digest, Have: s.tags, Tags: []string{},
				Instance: instance, Params: strs, Templates: templates})
		}
		if err == nil {
			err = s.engine.Reconfigure(ctx, name, instance, strs, configure)
		}
	} else {
		_, err = s.engine.Apply(ctx, install.Target{Manifest: m, Digest: digest, Have: s.tags, Tags: []string{},
			Instance: instance, Params: strs, Configure: configure, Templates: templates})
	}
	if err != nil {
		if prev != nil {
			_ = s.startServices(ctx, name, instance)
		}
		return Result{}, err
	}
	if err := s.startServices(ctx, name, instance); err != nil {
		return Result{}, err
	}
	res := Result{Coordinate: m.Coordinate().String(), Services: []Started{}}
	res.Location, _ = s.engine.Location(name, instance)
	for _, sp := range s.specs(name, instance) {
		res.Services = append(res.Services, Started{Coordinate: sp.Coordinate, Dir: s.sup.Dir(sp.Coordinate)})
	}
	return res, nil
}

// Remove stops a package's services and removes it; purge also removes
// the services' data/ folders.
func (s *Standalone) Remove(ctx context.Context, name, instance string, purge bool) error {
	specs := s.specs(name, instance)
	s.stopServices(ctx, name, instance)
	if err := s.engine.Remove(ctx, name, instance); err != nil {
		return err
	}
	for _, sp := range specs {
		if _, err := s.sup.Adopt(sp); err == nil {
			if err := s.sup.Remove(ctx, sp.Coordinate, purge); err != nil {
				return err
			}
		}
	}
	return nil
}

// List returns the installed packages, by name then instance.
func (s *Standalone) List() []api.InstalledApp {
	apps := s.engine.Installed()
	sort.Slice(apps, func(i, j int) bool { return apps[i].Name+apps[i].Instance < apps[j].Name+apps[j].Instance })
	return apps
}

// Location is where an installed package is.
func (s *Standalone) Location(name, instance string) string {
	loc, _ := s.engine.Location(name, instance)
	return loc
}
