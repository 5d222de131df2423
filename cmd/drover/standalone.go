package main

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
	"text/tabwriter"

	"github.com/Masterminds/semver/v3"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/blob"
	"github.com/drover-dev/drover/internal/facts"
	"github.com/drover-dev/drover/internal/install"
	"github.com/drover-dev/drover/internal/param"
	"github.com/drover-dev/drover/internal/pkgfile"
	"github.com/drover-dev/drover/internal/service"
)

// standaloneCmds are install, remove and ls, which work with no server
// (copkg's workstation use): the same install engine as the agent, a
// local blob cache, and the services started detached, as copkg's
// start.py starts them, since no agent supervises a workstation.
func standaloneCmds(e *env) []*cobra.Command {
	return []*cobra.Command{standaloneInstallCmd(e), standaloneRemoveCmd(e), standaloneLsCmd(e)}
}

// standaloneFlags are the folders of a standalone installation.
type standaloneFlags struct {
	home, softwareRoot, runtimeRoot, root string
}

func (f *standaloneFlags) register(c *cobra.Command) {
	c.Flags().StringVar(&f.home, "home", "", "standalone state folder (env DROVER_STANDALONE_HOME, default ~/.drover)")
	c.Flags().StringVar(&f.softwareRoot, "software-root", "", "where prefix-mode packages go (default <home>/software)")
	c.Flags().StringVar(&f.runtimeRoot, "runtime-root", "", "where service runtime folders go (default <home>/runtime)")
	c.Flags().StringVar(&f.root, "root", "", "where root-mode packages go (default <home>/root)")
}

// standalone is an opened standalone installation.
type standalone struct {
	f      standaloneFlags
	cache  *blob.FileStore
	engine *install.Engine
	sup    *service.Supervisor
	device string
	tags   []string
}

func (f *standaloneFlags) open(ctx context.Context) (*standalone, error) {
	home := f.home
	if home == "" {
		home = os.Getenv("DROVER_STANDALONE_HOME")
	}
	if home == "" {
		h, err := os.UserHomeDir()
		if err != nil {
			return nil, usagef("no --home and no home folder: %v", err)
		}
		home = filepath.Join(h, ".drover")
	}
	def := func(p *string, sub string) {
		if *p == "" {
			*p = filepath.Join(home, sub)
		}
	}
	def(&f.softwareRoot, "software")
	def(&f.runtimeRoot, "runtime")
	def(&f.root, "root")
	for _, d := range []string{home, f.softwareRoot, f.runtimeRoot, f.root} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	f.home = home
	cache, err := blob.NewFileStore(blob.FileConfig{Dir: filepath.Join(home, "system", "blobs")})
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	eng, err := install.New(install.Config{
		SoftwareRoot: f.softwareRoot, Root: f.root, StateDir: filepath.Join(home, "system", "install"),
		LogDir: filepath.Join(home, "logs"), Device: host, Blobs: cache,
	})
	if err != nil {
		return nil, err
	}
	if err := eng.Recover(ctx); err != nil {
		return nil, fmt.Errorf("recover interrupted install: %w", err)
	}
	// Detached: no supervisor stays once the command exits.
	sup, err := service.New(service.Config{RuntimeRoot: f.runtimeRoot, Detached: true})
	if err != nil {
		return nil, err
	}
	fs, err := facts.Detect(facts.Config{})
	if err != nil {
		return nil, err
	}
	return &standalone{f: *f, cache: cache, engine: eng, sup: sup, device: host, tags: facts.Tags(fs)}, nil
}

// specs are the services of an installed app.
func (s *standalone) specs(name, instance string) []service.Spec {
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

func (s *standalone) stopServices(ctx context.Context, name, instance string) {
	for _, sp := range s.specs(name, instance) {
		if ok, _ := s.sup.Adopt(sp); ok {
			_ = s.sup.Stop(ctx, sp.Coordinate)
		}
	}
}

func (s *standalone) startServices(ctx context.Context, name, instance string) error {
	for _, sp := range s.specs(name, instance) {
		if err := s.sup.Start(ctx, sp); err != nil {
			return err
		}
	}
	return nil
}

// load puts a package file's blobs in the cache and returns its manifest
// and digest.
func (s *standalone) load(ctx context.Context, path string) (*api.Manifest, string, error) {
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

// findInRepo picks the package file in dir for a coordinate
// (group:name:version) or a name (group:name: the newest version).
func findInRepo(dir, want string) (string, error) {
	if dir == "" {
		return "", usagef("%s is not a file; give a package file, or --repo DIR to find a coordinate in", want)
	}
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

// stdinIsTerminal reports whether r is a terminal, so a prompt makes sense.
func stdinIsTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// ask prompts for each missing required parameter (JPackages' @ASK),
// showing its description, type, default and bounds, and asks again
// after a bad answer.
func ask(e *env, decls map[string]api.Param, missing []string, values map[string]any) error {
	in := bufio.NewReader(e.stdin)
	for _, name := range missing {
		p := decls[name]
		for {
			fmt.Fprintf(e.stderr, "%s (%s): ", name, param.Describe(p))
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
				fmt.Fprintf(e.stderr, "  %v; try again\n", cerr)
				continue
			}
			values[name] = v
			break
		}
	}
	return nil
}

func standaloneInstallCmd(e *env) *cobra.Command {
	var f standaloneFlags
	var repo, instance string
	var params []string
	c := &cobra.Command{
		Use:   "install FILE|COORDINATE",
		Short: "Install a package file on this machine with no server, and start its services",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			given, err := parseAssignments(params)
			if err != nil {
				return err
			}
			path := args[0]
			if st, err := os.Stat(path); err != nil || st.IsDir() {
				if path, err = findInRepo(repo, args[0]); err != nil {
					return err
				}
			}
			s, err := f.open(ctx)
			if err != nil {
				return err
			}
			m, digest, err := s.load(ctx, path)
			if err != nil {
				return err
			}
			if missing := param.Missing(m.Params, param.Layer{Values: given}); len(missing) > 0 && stdinIsTerminal(e.stdin) {
				if err := ask(e, m.Params, missing, given); err != nil {
					return err
				}
			}
			// Every value is checked before anything is touched.
			vals, err := param.Resolve(m.Params, param.Layer{Name: "command line", Values: given})
			if err != nil {
				return err
			}
			name := m.Group + ":" + m.Name
			data := param.Data{Params: vals, Device: param.Device{ID: s.device}, Package: param.Package{Name: name, Version: m.Version}, Instance: instance}
			configure := func(ctx context.Context, loc string) error {
				if err := param.WriteTemplates(ctx, loc, m, data, func(ctx context.Context, d string) (io.ReadCloser, error) {
					return s.cache.Open(ctx, d)
				}); err != nil {
					return err
				}
				return param.PrivateTemplates(loc, m)
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
				err = s.engine.Reconfigure(ctx, name, instance, strs, configure)
			} else {
				_, err = s.engine.Apply(ctx, install.Target{Manifest: m, Digest: digest, Have: s.tags, Tags: []string{},
					Instance: instance, Params: strs, Configure: configure})
			}
			if err != nil {
				if prev != nil {
					_ = s.startServices(ctx, name, instance)
				}
				return err
			}
			if err := s.startServices(ctx, name, instance); err != nil {
				return err
			}
			loc, _ := s.engine.Location(name, instance)
			fmt.Fprintf(e.stdout, "installed %s in %s\n", m.Coordinate(), loc)
			for _, sp := range s.specs(name, instance) {
				fmt.Fprintf(e.stdout, "service %s started: %s\n", sp.Coordinate, s.sup.Dir(sp.Coordinate))
			}
			return nil
		},
	}
	f.register(c)
	c.Flags().StringVar(&repo, "repo", "", "folder of package files to find a COORDINATE (or group:name, newest) in")
	c.Flags().StringVar(&instance, "instance", "", "instance name: the same package may be installed several times")
	c.Flags().StringArrayVar(&params, "param", nil, "parameter value NAME=VALUE (repeatable)")
	return c
}

func standaloneRemoveCmd(e *env) *cobra.Command {
	var f standaloneFlags
	var instance string
	var purge bool
	c := &cobra.Command{
		Use:   "remove NAME",
		Short: "Stop a standalone package's services and remove it (group:name)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if err := checkPackageArg(args[0]); err != nil {
				return err
			}
			s, err := f.open(ctx)
			if err != nil {
				return err
			}
			specs := s.specs(args[0], instance)
			s.stopServices(ctx, args[0], instance)
			if err := s.engine.Remove(ctx, args[0], instance); err != nil {
				return err
			}
			for _, sp := range specs {
				if _, err := s.sup.Adopt(sp); err == nil {
					if err := s.sup.Remove(ctx, sp.Coordinate, purge); err != nil {
						return err
					}
				}
			}
			fmt.Fprintf(e.stdout, "removed %s\n", args[0])
			return nil
		},
	}
	f.register(c)
	c.Flags().StringVar(&instance, "instance", "", "the instance to remove")
	c.Flags().BoolVar(&purge, "purge", false, "also remove the services' data/ folders")
	return c
}

func standaloneLsCmd(e *env) *cobra.Command {
	var f standaloneFlags
	var format string
	c := &cobra.Command{
		Use:   "ls",
		Short: "List the packages installed standalone on this machine",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(format, outText, outYAML, outJSON); err != nil {
				return err
			}
			s, err := f.open(cmd.Context())
			if err != nil {
				return err
			}
			apps := s.engine.Installed()
			sort.Slice(apps, func(i, j int) bool { return apps[i].Name+apps[i].Instance < apps[j].Name+apps[j].Instance })
			if format != outText {
				return printAs(e.stdout, format, apps)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tINSTANCE\tVERSION\tLOCATION")
			for _, a := range apps {
				loc, _ := s.engine.Location(a.Name, a.Instance)
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", a.Name, a.Instance, a.Version, loc)
			}
			return tw.Flush()
		},
	}
	f.register(c)
	addOutputFlag(c, &format, outText)
	return c
}
