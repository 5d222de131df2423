package main

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/output"
)

func deviceCmd(e *env) *cobra.Command {
	var conn connFlags
	c := operatorCmd("device", "List and show devices", &conn)
	c.AddCommand(deviceLsCmd(e, &conn), deviceShowCmd(e, &conn), deviceRmCmd(e, &conn))
	return c
}

func deviceLsCmd(e *env, conn *connFlags) *cobra.Command {
	var format string
	c := &cobra.Command{
		Use:   "ls",
		Short: "List devices: id, tags, last seen, converged or not, health",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(format, outText, outYAML, outJSON); err != nil {
				return err
			}
			cl, err := conn.client()
			if err != nil {
				return err
			}
			defer cl.Close()
			devs, err := cl.Devices(cmd.Context())
			if err != nil {
				return err
			}
			if format != outText {
				out := make([]deviceView, len(devs))
				for i, d := range devs {
					out[i] = viewOf(d)
				}
				return printAs(e.stdout, format, out)
			}
			tb := output.NewTable(e.stdout, "ID", "TAGS", "LABELS", "LAST SEEN", "CONVERGED", "HEALTH")
			now := time.Now()
			for _, d := range devs {
				conv := "yes"
				if !d.Converged {
					conv = "no"
					if d.Error != "" {
						conv = "no (error)"
					}
				}
				health := d.Health
				if health == "" {
					health = "-"
				}
				if d.Termination != nil {
					health += " (" + d.Termination.State + ")"
				}
				tb.Row(d.ID, strings.Join(d.Tags, ","), labelList(d.Labels),
					now.Sub(d.LastSeen).Round(time.Second).String()+" ago", conv, health)
			}
			return tb.Flush()
		},
	}
	addOutputFlag(c, &format, outText)
	return c
}

// deviceView is the YAML of `device show`: jamesd's shape (id, systemtags,
// apps) first, then what drover adds.
type deviceView struct {
	ID         string            `json:"id" yaml:"id"`
	SystemTags []string          `json:"systemtags" yaml:"systemtags"`
	Labels     map[string]string `json:"labels,omitempty" yaml:"labels,omitempty"`
	Apps       []appView         `json:"apps" yaml:"apps"`
	// Effective is the effective desired state, each app with the
	// document that gave it (device show only).
	Effective []effectiveView `json:"effective,omitempty" yaml:"effective,omitempty"`
	// Init are the init entries of its groups the device ran (fleet.md).
	Init   []api.InitRecord `json:"init,omitempty" yaml:"init,omitempty"`
	Status statusView       `json:"status" yaml:"status"`
}

type effectiveView struct {
	Name     string `json:"name" yaml:"name"`
	Version  string `json:"version,omitempty" yaml:"version,omitempty"`
	Instance string `json:"instance,omitempty" yaml:"instance,omitempty"`
	Source   string `json:"source" yaml:"source"`
}

type appView struct {
	Name     string   `json:"name" yaml:"name"`
	Version  string   `json:"version" yaml:"version"`
	Tags     []string `json:"tags" yaml:"tags"`
	Instance string   `json:"instance,omitempty" yaml:"instance,omitempty"`
	Previous string   `json:"previous,omitempty" yaml:"previous,omitempty"`
}

type statusView struct {
	LastSeen  time.Time         `json:"last_seen" yaml:"last_seen"`
	Converged bool              `json:"converged" yaml:"converged"`
	Health    string            `json:"health,omitempty" yaml:"health,omitempty"`
	Error     string            `json:"error,omitempty" yaml:"error,omitempty"`
	Facts     map[string]string `json:"facts,omitempty" yaml:"facts,omitempty"`
	// Services: each supervised service's state (issue 3).
	Services []api.ServiceState `json:"services,omitempty" yaml:"services,omitempty"`
	// Health checks, keepalive and termination (issue 4).
	HealthChecks []api.HealthCheck `json:"health_checks,omitempty" yaml:"health_checks,omitempty"`
	Keepalive    *api.Keepalive    `json:"keepalive,omitempty" yaml:"keepalive,omitempty"`
	Termination  *api.Termination  `json:"termination,omitempty" yaml:"termination,omitempty"`
}

func viewOf(d api.Device) deviceView {
	v := deviceView{ID: d.ID, SystemTags: d.Tags, Labels: d.Labels, Apps: []appView{}, Init: d.Init,
		Status: statusView{LastSeen: d.LastSeen, Converged: d.Converged, Health: d.Health, Error: d.Error, Facts: d.Facts, Services: d.Services}}
	v.Status.HealthChecks, v.Status.Keepalive, v.Status.Termination = d.HealthChecks, d.Keepalive, d.Termination
	for _, a := range d.Installed {
		tags := a.Tags
		if tags == nil {
			tags = []string{}
		}
		v.Apps = append(v.Apps, appView{Name: a.Name, Version: a.Version, Tags: tags, Instance: a.Instance, Previous: a.Previous})
	}
	if v.SystemTags == nil {
		v.SystemTags = []string{}
	}
	for _, a := range d.Effective {
		v.Effective = append(v.Effective, effectiveView{Name: a.Name, Version: a.Version, Instance: a.Instance, Source: a.Source})
	}
	return v
}

func deviceRmCmd(e *env, conn *connFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "rm ID",
		Short: "Forget a device: its reports and own document go, its events stay",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := conn.client()
			if err != nil {
				return err
			}
			defer cl.Close()
			if err := cl.RemoveDevice(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "device %s removed\n", args[0])
			return nil
		},
	}
}

func deviceShowCmd(e *env, conn *connFlags) *cobra.Command {
	var format string
	c := &cobra.Command{
		Use:   "show ID",
		Short: "Show a device's reported state as YAML",
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
			d, err := cl.Device(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printAs(e.stdout, format, viewOf(d))
		},
	}
	addOutputFlag(c, &format, outYAML)
	return c
}

// labelList is labels as k=v,k2=v2, by key.
func labelList(labels map[string]string) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + labels[k]
	}
	return strings.Join(keys, ",")
}
