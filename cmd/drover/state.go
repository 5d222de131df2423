package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/yamlerr"
)

func stateCmd(e *env) *cobra.Command {
	var conn connFlags
	c := operatorCmd("state", "Get and set a device's desired state", &conn)
	c.AddCommand(stateGetCmd(e, &conn), stateSetCmd(e, &conn))
	return c
}

func stateGetCmd(e *env, conn *connFlags) *cobra.Command {
	var format string
	c := &cobra.Command{
		Use:   "get ID",
		Short: "Print a device's desired state as YAML",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(format, outYAML, outJSON); err != nil {
				return err
			}
			cl, err := conn.client()
			if err != nil {
				return err
			}
			defer cl.Close()
			st, err := cl.State(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			// systemtags come from the device's report, as in device show.
			if d, err := cl.Device(cmd.Context(), args[0]); err == nil {
				st.SystemTags = d.Tags
			}
			return printAs(e.stdout, format, st)
		},
	}
	addOutputFlag(c, &format, outYAML)
	return c
}

func stateSetCmd(e *env, conn *connFlags) *cobra.Command {
	var file, format string
	c := &cobra.Command{
		Use:   "set -f FILE",
		Short: "Set desired states from a YAML file, one document per device ('-' reads stdin)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if file == "" {
				return usagef("state set: -f FILE is required")
			}
			if err := checkOutput(format, outText, outYAML, outJSON); err != nil {
				return err
			}
			var data []byte
			var err error
			if file == "-" {
				data, err = io.ReadAll(io.LimitReader(e.stdin, 4<<20))
			} else {
				data, err = os.ReadFile(file)
			}
			if err != nil {
				return err
			}
			sts, err := parseStates(data)
			if err != nil {
				return fmt.Errorf("%s: %w", file, err)
			}
			cl, err := conn.client()
			if err != nil {
				return err
			}
			defer cl.Close()
			if len(sts) > 1 || format != outText {
				// Many devices: one call, all or nothing.
				res, err := cl.SetStates(cmd.Context(), sts)
				if err != nil {
					return err
				}
				if format != outText {
					return printAs(e.stdout, format, res)
				}
				for i, st := range sts {
					fmt.Fprintf(e.stdout, "desired state of %s set (%d apps)\n", st.ID, len(st.Apps))
					printResolved(e, res[i])
				}
				return nil
			}
			st := sts[0]
			res, err := cl.SetState(cmd.Context(), st)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "desired state of %s set (%d apps)\n", st.ID, len(st.Apps))
			printResolved(e, *res)
			return nil
		},
	}
	c.Flags().StringVarP(&file, "file", "f", "", "desired state YAML (the shape of 'state get')")
	addOutputFlag(c, &format, outText)
	return c
}

// printResolved lists what a state resolved to (nothing for a device that
// has not reported yet).
func printResolved(e *env, res api.Resolved) {
	for _, a := range res.Apps {
		note := ""
		if a.Dependency {
			note = " (dependency)"
		}
		fmt.Fprintf(e.stdout, "  %s %s%s\n", a.Name, a.Version, note)
	}
}

// parseState reads one desired state (see parseStates).
func parseState(data []byte) (api.DesiredState, error) {
	sts, err := parseStates(data)
	if err != nil {
		return api.DesiredState{}, err
	}
	if len(sts) != 1 {
		return api.DesiredState{}, errors.New("malformed desired state: more than one YAML document")
	}
	return sts[0], nil
}

// parseStates reads desired-state YAML strictly: unknown fields are
// errors, so a typo never silently changes a fleet. Several documents
// (separated by ---) are several devices' states.
func parseStates(data []byte) ([]api.DesiredState, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var out []api.DesiredState
	seen := map[string]bool{}
	for {
		var st api.DesiredState
		err := dec.Decode(&st)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("malformed desired state: %w", yamlerr.Describe(err, len(out)+1))
		}
		if st.ID == "" {
			return nil, fmt.Errorf("desired state %d has no id", len(out)+1)
		}
		if seen[st.ID] {
			return nil, fmt.Errorf("device %s has two desired states", st.ID)
		}
		seen[st.ID] = true
		for i, a := range st.Apps {
			if a.Name == "" {
				return nil, fmt.Errorf("%s: apps[%d]: no name", st.ID, i)
			}
			if _, _, err := api.ParsePackageName(a.Name); err != nil {
				return nil, fmt.Errorf("%s: apps[%d]: %w", st.ID, i, err)
			}
		}
		out = append(out, st)
	}
	if len(out) == 0 {
		return nil, errors.New("empty desired state")
	}
	return out, nil
}
