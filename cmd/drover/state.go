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
	var file string
	c := &cobra.Command{
		Use:   "set -f FILE",
		Short: "Set a device's desired state from a YAML file ('-' reads stdin)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if file == "" {
				return usagef("state set: -f FILE is required")
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
			st, err := parseState(data)
			if err != nil {
				return fmt.Errorf("%s: %w", file, err)
			}
			cl, err := conn.client()
			if err != nil {
				return err
			}
			defer cl.Close()
			res, err := cl.SetState(cmd.Context(), st)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "desired state of %s set (%d apps)\n", st.ID, len(st.Apps))
			for _, a := range res.Apps {
				note := ""
				if a.Dependency {
					note = " (dependency)"
				}
				fmt.Fprintf(e.stdout, "  %s %s%s\n", a.Name, a.Version, note)
			}
			return nil
		},
	}
	c.Flags().StringVarP(&file, "file", "f", "", "desired state YAML (the shape of 'state get')")
	return c
}

// parseState reads the desired-state YAML strictly: unknown fields and
// trailing documents are errors, so a typo never silently changes a fleet.
func parseState(data []byte) (api.DesiredState, error) {
	var st api.DesiredState
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&st); err != nil {
		if errors.Is(err, io.EOF) {
			return st, errors.New("empty desired state")
		}
		return st, fmt.Errorf("malformed desired state: %w", err)
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return st, errors.New("malformed desired state: more than one YAML document")
	}
	if st.ID == "" {
		return st, errors.New("desired state has no id")
	}
	for i, a := range st.Apps {
		if a.Name == "" {
			return st, fmt.Errorf("apps[%d]: no name", i)
		}
		if _, _, err := api.ParsePackageName(a.Name); err != nil {
			return st, fmt.Errorf("apps[%d]: %w", i, err)
		}
	}
	return st, nil
}
