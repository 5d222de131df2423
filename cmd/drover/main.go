// Command drover is the server, the node agent and the command-line tool of
// drover, one binary. This package only wires flags to the packages under
// internal/; it holds no logic of its own.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/drover-dev/drover/internal/agent"
	"github.com/spf13/cobra"
)

// Exit codes (DESIGN §4).
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// usageError marks an error in how drover was called; it exits 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// usagef returns a usage error.
func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// exitError carries an exit code without a message, for verbs whose output
// already said what went wrong.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes drover with args and returns the exit code. Every error ends
// here and becomes one line on stderr.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRootCmd(stdin, stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	var ee exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	// One line, whatever the error: YAML and other parsers report several.
	msg := strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", "; ")), " ")
	// One prefix: a message that names the program already is not
	// prefixed again.
	msg = strings.TrimPrefix(msg, "drover: ")
	fmt.Fprintf(stderr, "drover: %s\n", msg)
	var ue usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	return exitFailure
}

// env bundles the standard streams for subcommands.
type env struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

func newRootCmd(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:           "drover",
		Short:         "Deliver software to fleets of unlike machines and keep each in its declared state",
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.ArbitraryArgs,
		// A bare `drover` prints help and counts as bad usage.
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("unknown command %q", args[0])
			}
			cmd.SetOut(stderr)
			_ = cmd.Help()
			return exitError{exitUsage}
		},
	}
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.CompletionOptions.DisableDefaultCmd = true
	root.Version = agent.Version
	root.SetVersionTemplate("drover {{.Version}}\n")
	for _, add := range []func(*env) *cobra.Command{
		// One constructor per noun; each lives in its own file.
		pkiCmd,
		pkgCmd,
		serverCmd,
		agentCmd,
		devCmd,
		deviceCmd,
		stateCmd,
		planCmd,
		eventsCmd,
		versionCmd,
		completionCmd,
		trustCmd,
		uiCmd,
		rolloutCmd,
	} {
		root.AddCommand(add(e))
	}
	// Verbs that are not nouns: node-local (issue 4), standalone installs
	// (issue 3).
	root.AddCommand(nodeCmds(e)...)
	root.AddCommand(standaloneCmds(e)...)
	root.AddCommand(serviceCmds(e)...)
	root.AddCommand(paramCmds(e)...)
	wrapArgs(root)
	return root
}

// wrapArgs makes every positional-argument check a usage error (exit 2).
func wrapArgs(c *cobra.Command) {
	if c.Args != nil {
		check := c.Args
		c.Args = func(cmd *cobra.Command, args []string) error {
			if err := check(cmd, args); err != nil {
				return usageError{err}
			}
			return nil
		}
	}
	for _, sub := range c.Commands() {
		wrapArgs(sub)
	}
}

// groupCmd is a noun with verbs: run alone it is a usage error.
func groupCmd(use, short string) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			noun := strings.TrimPrefix(cmd.CommandPath(), cmd.Root().Name()+" ")
			if len(args) > 0 {
				return usagef("%s: unknown verb %q; see '%s --help'", noun, args[0], cmd.CommandPath())
			}
			return usagef("%s: a verb is needed; see '%s --help'", noun, cmd.CommandPath())
		},
	}
}
