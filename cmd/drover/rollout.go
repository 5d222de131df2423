package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/client"
	"github.com/drover-dev/drover/internal/rollout"
)

func rolloutCmd(e *env) *cobra.Command {
	var conn connFlags
	c := operatorCmd("rollout", "Apply state documents to a fleet in health-gated waves", &conn)
	c.AddCommand(rolloutStartCmd(e, &conn), rolloutLsCmd(e, &conn), rolloutStatusCmd(e, &conn),
		rolloutPauseCmd(e, &conn), rolloutResumeCmd(e, &conn), rolloutAbortCmd(e, &conn))
	return c
}

func rolloutStartCmd(e *env, conn *connFlags) *cobra.Command {
	var (
		file, name, waves, maxFailures, onFailure, format string
		soak, waveTimeout                                 time.Duration
		dryRun, wait                                      bool
	)
	c := &cobra.Command{
		Use:   "start -f FILE",
		Short: "Start a rollout of the documents in FILE; prints its name",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if file == "" {
				return usagef("rollout start: -f FILE is required")
			}
			if err := checkOutput(format, outText, outYAML, outJSON); err != nil {
				return err
			}
			ws, err := rollout.ParseWaves(waves)
			if err != nil {
				return usagef("--waves: %v", err)
			}
			spec := api.RolloutSpec{Name: name, Waves: ws, Soak: api.Duration(soak), WaveTimeout: api.Duration(waveTimeout),
				MaxFailures: maxFailures, OnFailure: onFailure}
			if soak <= 0 || waveTimeout <= 0 {
				return usagef("--soak and --wave-timeout must be above 0")
			}
			if err := rollout.Normalize(&spec); err != nil {
				return usageError{err}
			}
			if spec.Documents, err = readStateFile(e, file); err != nil {
				return err
			}
			cl, err := conn.client()
			if err != nil {
				return err
			}
			defer cl.Close()
			ctx := cmd.Context()
			if dryRun {
				dr, err := cl.PlanRollout(ctx, spec)
				if err != nil {
					return err
				}
				if format != outText {
					return printAs(e.stdout, format, dr)
				}
				printRolloutPlan(e.stdout, dr)
				if dr.Plan.Errors > 0 {
					return exitError{exitFailure}
				}
				return nil
			}
			r, err := cl.StartRollout(ctx, spec)
			if err != nil {
				return err
			}
			if format != outText {
				if err := printAs(e.stdout, format, r); err != nil {
					return err
				}
			} else {
				fmt.Fprintln(e.stdout, r.Name)
			}
			if !wait {
				return nil
			}
			return waitRollout(cmd, e, cl, r.Name)
		},
	}
	fl := c.Flags()
	fl.StringVarP(&file, "file", "f", "", "state documents YAML, device and group documents ('-' reads stdin)")
	fl.StringVar(&name, "name", "", "rollout name (default rollout-DATE-TIME)")
	fl.StringVar(&waves, "waves", rollout.DefaultWaves, "cumulative wave sizes: counts or percentages of the changed devices")
	fl.DurationVar(&soak, "soak", rollout.DefaultSoak, "how long a wave stays converged and healthy before the next begins")
	fl.DurationVar(&waveTimeout, "wave-timeout", rollout.DefaultWaveTimeout, "how long a wave's devices have to become converged and healthy")
	fl.StringVar(&maxFailures, "max-failures", rollout.DefaultMaxFailures, "failed devices a wave may have: 0, a count or a percentage of the wave")
	fl.StringVar(&onFailure, "on-failure", rollout.DefaultOnFailure, "past max failures: pause, or revert (previous state back, rollout failed)")
	fl.BoolVar(&dryRun, "dry-run", false, "print the plan and the waves; change nothing")
	fl.BoolVar(&wait, "wait", false, "wait until the rollout ends or pauses; exit 1 unless it is done")
	addOutputFlag(c, &format, outText)
	return c
}

// waitRollout follows a rollout until it ends or pauses, printing each
// change of wave or phase; it fails unless the rollout is done.
func waitRollout(cmd *cobra.Command, e *env, cl *client.Client, name string) error {
	ctx := cmd.Context()
	last := ""
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		r, err := cl.Rollout(ctx, name)
		if err != nil {
			return err
		}
		now := fmt.Sprintf("%s wave %d/%d", r.Phase, r.Wave+1, len(r.Stages))
		if now != last {
			fmt.Fprintf(e.stderr, "rollout %s: %s\n", name, now)
			last = now
		}
		switch r.Phase {
		case api.RolloutDone:
			return nil
		case api.RolloutRunning:
		default:
			return fmt.Errorf("rollout %s %s: %s", name, r.Phase, r.Reason)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// printRolloutPlan prints a dry run: each wave with its devices' steps,
// then the plan's errors and summary line.
func printRolloutPlan(w io.Writer, dr api.RolloutDryRun) {
	r := dr.Rollout
	steps := map[string][]api.PlanStep{}
	for _, d := range r.Devices {
		steps[d.ID] = d.Steps
	}
	fmt.Fprintf(w, "waves %s, soak %v, wave timeout %v, max failures %s, on failure %s\n",
		strings.Join(r.Waves, ","), time.Duration(r.Soak), time.Duration(r.WaveTimeout), r.MaxFailures, r.OnFailure)
	for i, st := range r.Stages {
		fmt.Fprintf(w, "wave %d/%d (%s): %d devices\n", i+1, len(r.Stages), r.Waves[i], st.Size)
		for _, id := range st.Devices {
			fmt.Fprintf(w, "  %s: %s\n", id, stepsText(steps[id]))
		}
	}
	for _, d := range dr.Plan.Devices {
		for _, e := range d.Errors {
			fmt.Fprintf(w, "error: %s: %s\n", d.Device, e)
		}
	}
	fmt.Fprintln(w, dr.Plan.Summary())
}

// stepsText is a device's steps on one line: "upgrade com.example:web 1.0.0 -> 1.1.0".
func stepsText(steps []api.PlanStep) string {
	var parts []string
	for _, s := range steps {
		name := s.Name
		if s.Instance != "" {
			name += " (" + s.Instance + ")"
		}
		switch {
		case s.From != "" && s.To != "" && s.From != s.To:
			parts = append(parts, fmt.Sprintf("%s %s %s -> %s", s.Kind, name, s.From, s.To))
		case s.To != "":
			parts = append(parts, fmt.Sprintf("%s %s %s", s.Kind, name, s.To))
		default:
			parts = append(parts, fmt.Sprintf("%s %s %s", s.Kind, name, s.From))
		}
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, "; ")
}

func rolloutLsCmd(e *env, conn *connFlags) *cobra.Command {
	var format string
	c := &cobra.Command{
		Use:   "ls",
		Short: "List rollouts: name, phase, wave, devices, created",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return query(cmd, e, conn, format, func(ctx context.Context, cl *client.Client) ([]api.Rollout, error) {
				return cl.Rollouts(ctx)
			}, func(list []api.Rollout) error {
				return printRollouts(e.stdout, list)
			})
		},
	}
	addOutputFlag(c, &format, outText)
	return c
}

// printRollouts is `rollout ls` for people: one row per rollout.
func printRollouts(w io.Writer, list []api.Rollout) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tPHASE\tWAVE\tDEVICES\tFAILED\tCREATED\tREASON")
	for _, r := range list {
		failed := 0
		for _, d := range r.Devices {
			if d.Outcome == api.OutcomeFailed {
				failed++
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%d\t%d\t%s\t%s\n", r.Name, r.Phase, r.Wave+1, len(r.Stages), len(r.Devices),
			failed, r.Created.Local().Format(time.DateTime), dashIfEmpty(r.Reason))
	}
	return tw.Flush()
}

func dashIfEmpty(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func rolloutStatusCmd(e *env, conn *connFlags) *cobra.Command {
	var format string
	c := &cobra.Command{
		Use:   "status NAME",
		Short: "Show a rollout: phase, current wave, each device's outcome",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return query(cmd, e, conn, format, func(ctx context.Context, cl *client.Client) (api.Rollout, error) {
				return cl.Rollout(ctx, args[0])
			}, func(r api.Rollout) error {
				printRolloutStatus(e.stdout, r, time.Now())
				return nil
			})
		},
	}
	addOutputFlag(c, &format, outText)
	return c
}

// printRolloutStatus prints a rollout for people: a header, then one row
// per device.
func printRolloutStatus(w io.Writer, r api.Rollout, now time.Time) {
	fmt.Fprintf(w, "rollout:  %s (by %s, %s)\n", r.Name, dashIfEmpty(r.CreatedBy), r.Created.Local().Format(time.DateTime))
	fmt.Fprintf(w, "phase:    %s\n", r.Phase)
	wave := fmt.Sprintf("%d/%d", r.Wave+1, len(r.Stages))
	if r.Wave < len(r.Stages) && r.Phase == api.RolloutRunning {
		st := r.Stages[r.Wave]
		switch {
		case !st.Soaking.IsZero():
			left := st.Soaking.Add(time.Duration(r.Soak)).Sub(now).Round(time.Second)
			wave += fmt.Sprintf(", soaking, %v left", max(left, 0))
		case !st.Started.IsZero():
			left := st.Started.Add(time.Duration(r.WaveTimeout)).Sub(now).Round(time.Second)
			wave += fmt.Sprintf(", converging, timeout in %v", max(left, 0))
		default:
			wave += ", about to begin"
		}
	}
	fmt.Fprintf(w, "wave:     %s\n", wave)
	fmt.Fprintf(w, "policy:   waves %s, soak %v, wave timeout %v, max failures %s, on failure %s\n",
		strings.Join(r.Waves, ","), time.Duration(r.Soak), time.Duration(r.WaveTimeout), r.MaxFailures, r.OnFailure)
	if r.Reason != "" {
		fmt.Fprintf(w, "reason:   %s\n", r.Reason)
	}
	var docs []string
	for _, d := range r.Documents {
		docs = append(docs, d.Key())
	}
	if len(docs) > 5 {
		docs = append(docs[:5], fmt.Sprintf("and %d more", len(docs)-5))
	}
	fmt.Fprintf(w, "documents: %s\n\n", strings.Join(docs, ", "))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "WAVE\tDEVICE\tOUTCOME\tSTEPS\tREASON")
	for _, d := range r.Devices {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", d.Wave+1, d.ID, d.Outcome, stepsText(d.Steps), dashIfEmpty(d.Reason))
	}
	_ = tw.Flush()
}

func rolloutPauseCmd(e *env, conn *connFlags) *cobra.Command {
	return rolloutVerbCmd(e, conn, "pause NAME", "Pause a running rollout: every device stays as it is",
		func(cmd *cobra.Command, cl *client.Client, name string) (api.Rollout, error) {
			return cl.PauseRollout(cmd.Context(), name)
		})
}

func rolloutResumeCmd(e *env, conn *connFlags) *cobra.Command {
	return rolloutVerbCmd(e, conn, "resume NAME", "Resume a paused rollout: its current wave starts over",
		func(cmd *cobra.Command, cl *client.Client, name string) (api.Rollout, error) {
			return cl.ResumeRollout(cmd.Context(), name)
		})
}

func rolloutAbortCmd(e *env, conn *connFlags) *cobra.Command {
	var revert bool
	c := rolloutVerbCmd(e, conn, "abort NAME", "Stop a rollout where it is (--revert: give its devices their previous state back)",
		func(cmd *cobra.Command, cl *client.Client, name string) (api.Rollout, error) {
			return cl.AbortRollout(cmd.Context(), name, revert)
		})
	c.Flags().BoolVar(&revert, "revert", false, "give every device the rollout changed its previous desired state back")
	return c
}

func rolloutVerbCmd(e *env, conn *connFlags, use, short string,
	do func(cmd *cobra.Command, cl *client.Client, name string) (api.Rollout, error)) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := conn.client()
			if err != nil {
				return err
			}
			defer cl.Close()
			r, err := do(cmd, cl, args[0])
			if err != nil {
				return err
			}
			msg := fmt.Sprintf("rollout %s %s at wave %d/%d", r.Name, r.Phase, r.Wave+1, len(r.Stages))
			if r.Reason != "" {
				msg += ": " + r.Reason
			}
			fmt.Fprintln(e.stdout, msg)
			return nil
		},
	}
}
