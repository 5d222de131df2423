package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/client"
	fleetdocs "github.com/drover-dev/drover/internal/fleet"
)

func stateCmd(e *env) *cobra.Command {
	var conn connFlags
	c := operatorCmd("state", "Get, set, list and remove desired-state documents (devices and groups)", &conn)
	c.AddCommand(stateGetCmd(e, &conn), stateSetCmd(e, &conn), stateLsCmd(e, &conn), stateRmCmd(e, &conn))
	return c
}

// documentView is a document as `state get` prints it: as written, with
// the versions its constraints were pinned to.
type documentView struct {
	ID         string           `json:"id,omitempty" yaml:"id,omitempty"`
	Group      string           `json:"group,omitempty" yaml:"group,omitempty"`
	Selector   *string          `json:"selector,omitempty" yaml:"selector,omitempty"`
	SystemTags []string         `json:"systemtags,omitempty" yaml:"systemtags,omitempty"`
	Apps       []api.DesiredApp `json:"apps" yaml:"apps"`
	Init       []api.InitEntry  `json:"init,omitempty" yaml:"init,omitempty"`
	Pinned     []api.Pin        `json:"pinned,omitempty" yaml:"pinned,omitempty"`
}

func viewOfDocument(d api.Document) documentView {
	v := documentView{ID: d.ID, Group: d.Group, Apps: d.Apps, Init: d.Init, Pinned: d.Pinned}
	if d.Kind == api.DocGroup {
		sel := d.Selector
		v.Selector = &sel
	}
	if v.Apps == nil {
		v.Apps = []api.DesiredApp{}
	}
	return v
}

func stateGetCmd(e *env, conn *connFlags) *cobra.Command {
	var format, group string
	c := &cobra.Command{
		Use:   "get (ID | --group NAME)",
		Short: "Print a device's own document or a group document as YAML, with the versions it pinned",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(format, outYAML, outJSON); err != nil {
				return err
			}
			if (group == "") == (len(args) == 0) {
				return usagef("state get: give a device ID or --group NAME")
			}
			cl, err := conn.client()
			if err != nil {
				return err
			}
			defer cl.Close()
			kind, name := api.DocDevice, ""
			if group != "" {
				kind, name = api.DocGroup, group
			} else {
				name = args[0]
			}
			d, err := cl.Document(cmd.Context(), kind, name)
			if err != nil {
				return err
			}
			v := viewOfDocument(d)
			if kind == api.DocDevice {
				// systemtags come from the device's report, as in device show.
				if dev, err := cl.Device(cmd.Context(), name); err == nil {
					v.SystemTags = dev.Tags
				}
			}
			return printAs(e.stdout, format, v)
		},
	}
	c.Flags().StringVar(&group, "group", "", "print the group document NAME")
	addOutputFlag(c, &format, outYAML)
	return c
}

// readStateFile reads -f FILE ('-' is stdin) and parses its documents.
func readStateFile(e *env, file string) ([]api.Document, error) {
	var data []byte
	var err error
	if file == "-" {
		data, err = io.ReadAll(io.LimitReader(e.stdin, 64<<20))
	} else {
		data, err = os.ReadFile(file)
	}
	if err != nil {
		return nil, err
	}
	docs, err := fleetdocs.ParseDocuments(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return docs, nil
}

func stateSetCmd(e *env, conn *connFlags) *cobra.Command {
	var file, format string
	var dryRun bool
	c := &cobra.Command{
		Use:   "set -f FILE [--dry-run]",
		Short: "Set device and group documents from a YAML file ('-' reads stdin); --dry-run prints the plan and changes nothing",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if file == "" {
				return usagef("state set: -f FILE is required")
			}
			if dryRun {
				return runPlan(cmd, e, conn, file, format)
			}
			if err := checkOutput(format, outText, outYAML, outJSON); err != nil {
				return err
			}
			docs, err := readStateFile(e, file)
			if err != nil {
				return err
			}
			// One call, all or nothing.
			return query(cmd, e, conn, format, func(ctx context.Context, cl *client.Client) ([]api.Resolved, error) {
				return cl.SetDocuments(ctx, docs)
			}, func(res []api.Resolved) error {
				printDocumentsSet(e, docs, res)
				return nil
			})
		},
	}
	c.Flags().StringVarP(&file, "file", "f", "", "device and group documents, YAML separated by ---")
	c.Flags().BoolVar(&dryRun, "dry-run", false, "print what would change on each device (as drover plan) and change nothing")
	addOutputFlag(c, &format, outText)
	return c
}

// printDocumentsSet is `state set` for people: a line per document, with
// what each device's state resolved to.
func printDocumentsSet(e *env, docs []api.Document, res []api.Resolved) {
	for i, d := range docs {
		if d.Kind == api.DocGroup {
			extra := ""
			if len(d.Init) > 0 {
				extra = fmt.Sprintf(", %d init", len(d.Init))
			}
			fmt.Fprintf(e.stdout, "group %s set (%d apps%s, selector %q)\n", d.Group, len(d.Apps), extra, d.Selector)
			continue
		}
		fmt.Fprintf(e.stdout, "desired state of %s set (%d apps)\n", d.ID, len(d.Apps))
		if i < len(res) {
			printResolved(e, res[i])
		}
	}
}

func stateLsCmd(e *env, conn *connFlags) *cobra.Command {
	var format string
	c := &cobra.Command{
		Use:   "ls",
		Short: "List every document: kind, name, selector, apps, devices matched, newer fitting versions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return query(cmd, e, conn, format, func(ctx context.Context, cl *client.Client) ([]api.DocumentSummary, error) {
				return cl.Documents(ctx)
			}, func(docs []api.DocumentSummary) error { return printDocuments(e.stdout, docs) })
		},
	}
	addOutputFlag(c, &format, outText)
	return c
}

// printDocuments is `state ls` for people: one row per document.
func printDocuments(w io.Writer, docs []api.DocumentSummary) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tNAME\tSELECTOR\tAPPS\tINIT\tDEVICES\tNEWER")
	for _, d := range docs {
		name, sel := d.ID, "-"
		if d.Kind == api.DocGroup {
			name, sel = d.Group, strconv.Quote(d.Selector)
		}
		apps := make([]string, len(d.Apps))
		pins := map[string]string{}
		inits := make([]string, len(d.Init))
		for _, p := range d.Pinned {
			if !p.Init {
				pins[p.Name+"\x00"+p.Instance] = p.Version
			}
		}
		for i, in := range d.Init {
			inits[i] = in.Name
			if in.Version != "" {
				inits[i] += " " + in.Version
			}
			for _, p := range d.Pinned {
				if p.Init && p.Name == in.Name {
					inits[i] += "=" + p.Version
				}
			}
			inits[i] += " " + in.Run
		}
		if len(inits) == 0 {
			inits = []string{"-"}
		}
		for i, a := range d.Apps {
			apps[i] = a.Name
			if a.Instance != "" {
				apps[i] += "[" + a.Instance + "]"
			}
			if a.Version != "" {
				apps[i] += " " + a.Version
			}
			if v, ok := pins[a.Name+"\x00"+a.Instance]; ok {
				apps[i] += "=" + v
			}
		}
		newer := strings.Join(d.Newer, ", ")
		if newer == "" {
			newer = "-"
		}
		if len(apps) == 0 {
			apps = []string{"-"}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", d.Kind, name, sel, strings.Join(apps, ", "), strings.Join(inits, ", "), d.Devices, newer)
	}
	return tw.Flush()
}

func stateRmCmd(e *env, conn *connFlags) *cobra.Command {
	var group string
	c := &cobra.Command{
		Use:   "rm (ID | --group NAME)",
		Short: "Remove a device's own document or a group document",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if (group == "") == (len(args) == 0) {
				return usagef("state rm: give a device ID or --group NAME")
			}
			cl, err := conn.client()
			if err != nil {
				return err
			}
			defer cl.Close()
			kind, name, what := api.DocDevice, "", ""
			if group != "" {
				kind, name, what = api.DocGroup, group, "group "+group
			} else {
				name = args[0]
				what = "desired state of " + name
			}
			if err := cl.RemoveDocument(cmd.Context(), kind, name); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "%s removed\n", what)
			return nil
		},
	}
	c.Flags().StringVar(&group, "group", "", "remove the group document NAME")
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
