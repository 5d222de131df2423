package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/drover-dev/drover/internal/api"
)

// paramCmds is the param noun: fleet and device parameter values, the
// layers between a package's defaults and a desired-state entry. Shaped
// like Nomad's variables: one package per call, k=v pairs, -o yaml|json.
func paramCmds(e *env) []*cobra.Command {
	var conn connFlags
	c := operatorCmd("param", "Set, get and unset fleet-wide and per-device parameter values", &conn)
	c.AddCommand(paramSetCmd(e, &conn), paramGetCmd(e, &conn), paramUnsetCmd(e, &conn))
	return []*cobra.Command{c}
}

// parseAssignments reads k=v arguments. Values stay text; the server
// converts them to each parameter's declared type.
func parseAssignments(args []string) (map[string]any, error) {
	out := map[string]any{}
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" {
			return nil, usagef("%q: want NAME=VALUE", a)
		}
		if _, dup := out[k]; dup {
			return nil, usagef("%s given twice", k)
		}
		out[k] = v
	}
	return out, nil
}

func checkPackageArg(name string) error {
	if _, _, err := api.ParsePackageName(name); err != nil {
		return usageError{err}
	}
	return nil
}

func paramSetCmd(e *env, conn *connFlags) *cobra.Command {
	var device, format string
	c := &cobra.Command{
		Use:   "set [--device ID] PACKAGE NAME=VALUE...",
		Short: "Set parameter values of a package for the fleet, or for one device with --device",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(format, outText, outYAML, outJSON); err != nil {
				return err
			}
			if err := checkPackageArg(args[0]); err != nil {
				return err
			}
			set, err := parseAssignments(args[1:])
			if err != nil {
				return err
			}
			cl, err := conn.client()
			if err != nil {
				return err
			}
			defer cl.Close()
			out, err := cl.SetParams(cmd.Context(), device, args[0], set, nil)
			if err != nil {
				return err
			}
			if format != outText {
				return printAs(e.stdout, format, out)
			}
			fmt.Fprintf(e.stdout, "parameters of %s set for %s\n", args[0], scopeName(device))
			return nil
		},
	}
	c.Flags().StringVar(&device, "device", "", "set the values of this device only (default: fleet-wide)")
	addOutputFlag(c, &format, outText)
	return c
}

func paramUnsetCmd(e *env, conn *connFlags) *cobra.Command {
	var device, format string
	c := &cobra.Command{
		Use:   "unset [--device ID] PACKAGE NAME...",
		Short: "Remove parameter values of a package for the fleet or one device",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkPackageArg(args[0]); err != nil {
				return err
			}
			if err := checkOutput(format, outText, outYAML, outJSON); err != nil {
				return err
			}
			cl, err := conn.client()
			if err != nil {
				return err
			}
			defer cl.Close()
			out, err := cl.SetParams(cmd.Context(), device, args[0], nil, args[1:])
			if err != nil {
				return err
			}
			if format != outText {
				return printAs(e.stdout, format, out)
			}
			fmt.Fprintf(e.stdout, "parameters of %s unset for %s: %s\n", args[0], scopeName(device), strings.Join(args[1:], ", "))
			return nil
		},
	}
	c.Flags().StringVar(&device, "device", "", "unset the values of this device only (default: fleet-wide)")
	addOutputFlag(c, &format, outText)
	return c
}

func paramGetCmd(e *env, conn *connFlags) *cobra.Command {
	var device, format string
	c := &cobra.Command{
		Use:   "get [--device ID] [PACKAGE]",
		Short: "Print the fleet's (or a device's) parameter values, of one package or all",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(format, outYAML, outJSON); err != nil {
				return err
			}
			pkg := ""
			if len(args) == 1 {
				pkg = args[0]
				if err := checkPackageArg(pkg); err != nil {
					return err
				}
			}
			cl, err := conn.client()
			if err != nil {
				return err
			}
			defer cl.Close()
			out, err := cl.Params(cmd.Context(), device, pkg)
			if err != nil {
				return err
			}
			return printAs(e.stdout, format, out)
		},
	}
	c.Flags().StringVar(&device, "device", "", "the values of this device (default: fleet-wide)")
	addOutputFlag(c, &format, outYAML)
	return c
}

func scopeName(device string) string {
	if device == "" {
		return "the fleet"
	}
	return "device " + device
}
