package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/client"
)

func planCmd(e *env) *cobra.Command {
	var conn connFlags
	var file, format string
	c := &cobra.Command{
		Use:   "plan -f FILE",
		Short: "Print what setting these documents would do to each device (the same as state set --dry-run); exit 1 on any error",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if file == "" {
				return usagef("plan: -f FILE is required")
			}
			return runPlan(cmd, e, &conn, file, format)
		},
	}
	conn.register(c)
	c.Flags().StringVarP(&file, "file", "f", "", "device and group documents, YAML separated by ---")
	addOutputFlag(c, &format, outText)
	return c
}

// runPlan asks the server for the dry run of FILE's documents and prints
// it; any device with an error makes it fail.
func runPlan(cmd *cobra.Command, e *env, conn *connFlags, file, format string) error {
	if err := checkOutput(format, outText, outYAML, outJSON); err != nil {
		return err
	}
	docs, err := readStateFile(e, file)
	if err != nil {
		return err
	}
	var p api.Plan
	err = query(cmd, e, conn, format, func(ctx context.Context, cl *client.Client) (api.Plan, error) {
		var err error
		p, err = cl.Plan(ctx, docs)
		return p, err
	}, func(p api.Plan) error {
		printPlan(e, p)
		return nil
	})
	if err != nil {
		return err
	}
	if p.Errors > 0 {
		return fmt.Errorf("plan: %d devices have errors; nothing was changed", p.Errors)
	}
	return nil
}

func printPlan(e *env, p api.Plan) {
	for _, d := range p.Devices {
		if len(d.Errors) > 0 {
			fmt.Fprintf(e.stdout, "%s:\n", d.Device)
		} else {
			fmt.Fprintf(e.stdout, "%s: download %s\n", d.Device, humanBytes(d.Download))
		}
		for _, st := range d.Steps {
			who := st.Name
			if st.Instance != "" {
				who += "[" + st.Instance + "]"
			}
			var line string
			switch st.Kind {
			case api.StepRemove:
				line = fmt.Sprintf("  %-11s %s %s", st.Kind, who, st.From)
			case api.StepInstall:
				line = fmt.Sprintf("  %-11s %s %s", st.Kind, who, st.To)
			case api.StepInit:
				line = fmt.Sprintf("  %-11s %s %s run %s (group %s, not yet run here)", st.Kind, who, st.To, st.Run, st.Group)
			default:
				line = fmt.Sprintf("  %-11s %s %s -> %s", st.Kind, who, st.From, st.To)
			}
			if st.Build != "" {
				line += fmt.Sprintf("  build %.12s [%s]", st.Build, strings.Join(st.BuildTags, ","))
			}
			fmt.Fprintln(e.stdout, line)
		}
		for _, c := range d.Conflicts {
			fmt.Fprintf(e.stdout, "  conflict    %s\n", c)
		}
		for _, er := range d.Errors {
			fmt.Fprintf(e.stdout, "  error       %s\n", er)
		}
	}
	fmt.Fprintln(e.stdout, p.Summary())
}

// humanBytes prints n in binary units ("0 B", "12.3 KiB").
func humanBytes(n int64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	v, unit := float64(n), "B"
	for _, u := range []string{"KiB", "MiB", "GiB", "TiB"} {
		if v < 1024 {
			break
		}
		v, unit = v/1024, u
	}
	return fmt.Sprintf("%.1f %s", v, unit)
}
