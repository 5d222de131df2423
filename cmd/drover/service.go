package main

import (
	"fmt"
	"net/http"
	"net/url"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/drover-dev/drover/internal/api"
)

// serviceCmds is the service noun: process actions (JPackages) answered
// by the agent on this machine through its socket.
func serviceCmds(e *env) []*cobra.Command {
	c := groupCmd("service", "List, start, stop, restart and kill this machine's package services (answered by the local agent)")
	c.AddCommand(serviceLsCmd(e))
	for _, action := range []struct{ name, short string }{
		{"start", "Start a stopped service (all without COORD)"},
		{"stop", "Stop a service and keep it stopped until start or the next install (all without COORD)"},
		{"restart", "Stop and start a service (all without COORD)"},
		{"kill", "Send SIGKILL to a service's processes; it is restarted per its policy (all without COORD)"},
	} {
		c.AddCommand(serviceActionCmd(e, action.name, action.short))
	}
	return []*cobra.Command{c}
}

func serviceLsCmd(e *env) *cobra.Command {
	var home homeFlag
	var format string
	c := &cobra.Command{
		Use:   "ls",
		Short: "List the services, their state (running, stopped or failed) and health (healthy, unhealthy or unknown)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(format, outText, outYAML, outJSON); err != nil {
				return err
			}
			var sts []api.ServiceState
			if err := home.client().Do(cmd.Context(), http.MethodGet, "/v1/services", nil, &sts); err != nil {
				return err
			}
			if format != outText {
				if sts == nil {
					sts = []api.ServiceState{}
				}
				return printAs(e.stdout, format, sts)
			}
			printServices(e, sts)
			return nil
		},
	}
	home.register(c)
	addOutputFlag(c, &format, outText)
	return c
}

func printServices(e *env, sts []api.ServiceState) {
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "COORDINATE\tPACKAGE\tVERSION\tSTATE\tHEALTH\tPID\tRESTARTS\tLAST ERROR")
	for _, s := range sts {
		pid, health, lastErr := "-", "-", "-"
		if s.PID > 0 {
			pid = fmt.Sprint(s.PID)
		}
		if s.Health != "" {
			health = s.Health
		}
		if s.LastError != "" {
			// The whole of it is in -o yaml and -o json.
			lastErr = s.LastError
			if r := []rune(lastErr); len(r) > 60 {
				lastErr = string(r[:60]) + "..."
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", s.Coordinate, s.Package, s.Version, s.State, health, pid, s.Restarts, lastErr)
	}
	tw.Flush()
}

func serviceActionCmd(e *env, action, short string) *cobra.Command {
	var home homeFlag
	var format string
	c := &cobra.Command{
		Use:   action + " [COORD]",
		Short: short,
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(format, outText, outYAML, outJSON); err != nil {
				return err
			}
			path := "/v1/services/" + action
			if len(args) == 1 {
				path += "?" + url.Values{"coordinate": {args[0]}}.Encode()
			}
			var sts []api.ServiceState
			if err := home.client().Do(cmd.Context(), http.MethodPost, path, nil, &sts); err != nil {
				return err
			}
			if format != outText {
				if sts == nil {
					sts = []api.ServiceState{}
				}
				return printAs(e.stdout, format, sts)
			}
			printServices(e, sts)
			return nil
		},
	}
	home.register(c)
	addOutputFlag(c, &format, outText)
	return c
}
