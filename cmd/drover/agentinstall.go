package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/drover-dev/drover/internal/agentfile"
	"github.com/drover-dev/drover/internal/systemd"
)

// installFlags are the flags of `drover agent install` and `uninstall`
// beside the agent's own.
type installFlags struct {
	name, user, group, destDir, bin string
	createUser, dryRun, noStart     bool
	purge, removeUser               bool
}

func agentInstallCmd(e *env, agentCmd *cobra.Command) *cobra.Command {
	var f installFlags
	c := &cobra.Command{
		Use:   "install --home DIR --addr URL --ca-cert F --client-cert F --client-key F [agent flags] [--user U --create-user] [--dry-run]",
		Short: "Install the agent as a systemd service: home folders, config/agent.yaml, unit, DROVER_HOME; never touches the firewall",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, name := range []string{"addr", "ca-cert", "client-cert", "client-key"} {
				if fl := cmd.Flags().Lookup(name); fl == nil || !fl.Changed {
					return usagef("agent install: --%s is needed by the agent it installs", name)
				}
			}
			home, err := filepath.Abs(orEnv(cmd.Flags().Lookup("home").Value.String(), "DROVER_HOME", "/opt/drover"))
			if err != nil {
				return err
			}
			agentYAML, err := agentFileYAML(cmd.Flags())
			if err != nil {
				return usagef("agent install: %v", err)
			}
			// The agent must take the file it will read.
			if _, err := agentfile.Parse(agentfile.Path(home), []byte(agentYAML), home); err != nil {
				return usagef("agent install: %v", err)
			}
			bin := f.bin
			if bin == "" {
				if bin, err = os.Executable(); err != nil {
					return fmt.Errorf("agent install: where is drover? give --bin: %w", err)
				}
			}
			cfg := systemd.Config{Name: f.name, Home: home, Binary: bin, AgentYAML: agentYAML, User: f.user, Group: f.group,
				CreateUser: f.createUser, DestDir: f.destDir, NoStart: f.noStart}
			plan, err := systemd.InstallPlan(cfg)
			if err != nil {
				return usagef("agent install: %v", err)
			}
			return applyPlan(e, cmd, f, plan)
		},
	}
	// The agent's own flags, written to <home>/config/agent.yaml.
	agentCmd.Flags().VisitAll(func(fl *pflag.Flag) { c.Flags().AddFlag(fl) })
	fl := c.Flags()
	fl.StringVar(&f.name, "name", "drover-agent", "systemd unit name")
	fl.StringVar(&f.user, "user", "", "run the agent as this user (default root)")
	fl.StringVar(&f.group, "group", "", "and this group (default the user's name)")
	fl.BoolVar(&f.createUser, "create-user", false, "create --user as a system user if it does not exist")
	fl.StringVar(&f.destDir, "dest-dir", "", "write every file under this folder (an image); systemctl and useradd are not run")
	fl.StringVar(&f.bin, "bin", "", "path of the drover binary in the unit (default this executable)")
	fl.BoolVar(&f.noStart, "no-start", false, "write the files but do not enable and start the unit")
	fl.BoolVar(&f.dryRun, "dry-run", false, "print what would be done and change nothing")
	return c
}

func agentUninstallCmd(e *env) *cobra.Command {
	var (
		f    installFlags
		home string
	)
	c := &cobra.Command{
		Use:   "uninstall [--home DIR] [--purge] [--user U --remove-user] [--dry-run]",
		Short: "Stop and remove the agent's systemd unit and environment; --purge removes the home too",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			h, err := filepath.Abs(orEnv(home, "DROVER_HOME", "/opt/drover"))
			if err != nil {
				return err
			}
			plan, err := systemd.UninstallPlan(systemd.Config{Name: f.name, Home: h, User: f.user, DestDir: f.destDir}, f.purge, f.removeUser)
			if err != nil {
				return usagef("agent uninstall: %v", err)
			}
			return applyPlan(e, cmd, f, plan)
		},
	}
	fl := c.Flags()
	fl.StringVar(&home, "home", "", "agent home (env DROVER_HOME, default /opt/drover)")
	fl.StringVar(&f.name, "name", "drover-agent", "systemd unit name")
	fl.StringVar(&f.user, "user", "", "the agent's user, for --remove-user")
	fl.BoolVar(&f.removeUser, "remove-user", false, "remove the agent's user (userdel)")
	fl.BoolVar(&f.purge, "purge", false, "remove the agent home with its installed software and state")
	fl.StringVar(&f.destDir, "dest-dir", "", "remove files under this folder (an image); systemctl is not run")
	fl.BoolVar(&f.dryRun, "dry-run", false, "print what would be done and change nothing")
	return c
}

func applyPlan(e *env, cmd *cobra.Command, f installFlags, plan []systemd.Action) error {
	if f.dryRun {
		fmt.Fprintln(e.stdout, "# dry run: nothing is changed; firewall rules are never touched")
		return systemd.Describe(e.stdout, f.destDir, plan)
	}
	if err := systemd.Apply(cmd.Context(), f.destDir, plan, systemd.ExecRunner); err != nil {
		return err
	}
	return systemd.Describe(e.stdout, f.destDir, plan)
}
