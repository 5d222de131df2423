package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/drover-dev/drover/internal/param"
	"github.com/drover-dev/drover/internal/standalone"
)

// standaloneCmds are install, remove and ls, which work with no server
// (internal/standalone).
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

func (f *standaloneFlags) open(cmd *cobra.Command) (*standalone.Standalone, error) {
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
	return standalone.Open(cmd.Context(), standalone.Config{Home: home, SoftwareRoot: f.softwareRoot, RuntimeRoot: f.runtimeRoot, Root: f.root})
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

func standaloneInstallCmd(e *env) *cobra.Command {
	var f standaloneFlags
	var repo, instance, format string
	var params []string
	c := &cobra.Command{
		Use:   "install FILE|COORDINATE",
		Short: "Install a package file on this machine with no server, and start its services",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if err := checkOutput(format, outText, outYAML, outJSON); err != nil {
				return err
			}
			given, err := parseAssignments(params)
			if err != nil {
				return err
			}
			path := args[0]
			if st, err := os.Stat(path); err != nil || st.IsDir() {
				if repo == "" {
					return usagef("%s is not a file; give a package file, or --repo DIR to find a coordinate in", args[0])
				}
				if path, err = standalone.FindInRepo(repo, args[0]); err != nil {
					return err
				}
			}
			s, err := f.open(cmd)
			if err != nil {
				return err
			}
			m, digest, err := s.Load(ctx, path)
			if err != nil {
				return err
			}
			if missing := param.Missing(m.Params, param.Layer{Values: given}); len(missing) > 0 && stdinIsTerminal(e.stdin) {
				if err := standalone.Ask(e.stdin, e.stderr, m.Params, missing, given); err != nil {
					return err
				}
			}
			res, err := s.Install(ctx, standalone.Request{Manifest: m, Digest: digest, Instance: instance, Values: given})
			if err != nil {
				return err
			}
			if format != outText {
				return printAs(e.stdout, format, res)
			}
			fmt.Fprintf(e.stdout, "installed %s in %s\n", m.Coordinate(), res.Location)
			for _, sv := range res.Services {
				fmt.Fprintf(e.stdout, "service %s started: %s\n", sv.Coordinate, sv.Dir)
			}
			return nil
		},
	}
	f.register(c)
	c.Flags().StringVar(&repo, "repo", "", "folder of package files to find a COORDINATE (or group:name, newest) in")
	c.Flags().StringVar(&instance, "instance", "", "instance name: the same package may be installed several times")
	c.Flags().StringArrayVar(&params, "param", nil, "parameter value NAME=VALUE (repeatable)")
	addOutputFlag(c, &format, outText)
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
			if err := checkPackageArg(args[0]); err != nil {
				return err
			}
			s, err := f.open(cmd)
			if err != nil {
				return err
			}
			if err := s.Remove(cmd.Context(), args[0], instance, purge); err != nil {
				return err
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
			s, err := f.open(cmd)
			if err != nil {
				return err
			}
			apps := s.List()
			if format != outText {
				return printAs(e.stdout, format, apps)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tINSTANCE\tVERSION\tLOCATION")
			for _, a := range apps {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", a.Name, a.Instance, a.Version, s.Location(a.Name, a.Instance))
			}
			return tw.Flush()
		},
	}
	f.register(c)
	addOutputFlag(c, &format, outText)
	return c
}
