package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/drover-dev/drover/internal/trust"
)

// trustCmd is `drover trust`: the offline keys and metadata of signed
// builds (The Update Framework).
func trustCmd(e *env) *cobra.Command {
	c := groupCmd("trust", "Make and rotate the keys that sign builds (The Update Framework)")
	c.AddCommand(trustInitCmd(e), trustRotateCmd(e))
	return c
}

// trustInitCmd is `drover trust init --dir K [--threshold N --keys M]`.
func trustInitCmd(e *env) *cobra.Command {
	var (
		dir             string
		threshold, keys int
	)
	c := &cobra.Command{
		Use:   "init --dir K [--threshold N --keys M]",
		Short: "Create root keys and root.json, a targets (publisher) key, and the server's snapshot and timestamp keys",
		Long: "Create a key folder K: M root keys (root-1.key ...; N of them must sign a new root), targets.key\n" +
			"(the publisher's, for pkg push --sign-key), snapshot.key and timestamp.key (for the server),\n" +
			"root.json (give it to agents: agent --trust-root) and targets.json.\n\n" +
			"Keep the root keys and targets.key offline. Give the server (server --trust-dir DIR) only\n" +
			"root.json, the N.root.json files, targets.json, snapshot.key and timestamp.key.",
		Args:                  cobra.NoArgs,
		DisableFlagsInUseLine: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return usagef("trust init: --dir is required")
			}
			if threshold < 1 || keys < 0 || (keys > 0 && keys < threshold) {
				return usagef("trust init: --threshold must be at least 1 and at most --keys")
			}
			if err := trust.Init(trust.InitConfig{Dir: dir, Threshold: threshold, Keys: keys, Now: time.Now()}); err != nil {
				return err
			}
			return printKeyDir(e, dir)
		},
	}
	c.Flags().StringVar(&dir, "dir", "", "key folder (created with mode 0700)")
	c.Flags().IntVar(&threshold, "threshold", 1, "root keys that must sign a new root")
	c.Flags().IntVar(&keys, "keys", 0, "root keys to make (default: the threshold)")
	return c
}

// trustRotateCmd is `drover trust rotate --dir K --role R`.
func trustRotateCmd(e *env) *cobra.Command {
	var dir, role string
	c := &cobra.Command{
		Use:   "rotate --dir K --role targets|snapshot|timestamp|root",
		Short: "Give a role new keys; the new root.json is signed by the old root keys (root: by the old and the new)",
		Long: "Give a role new keys in the key folder K and write the next root.json (and N.root.json).\n" +
			"Copy root.json, N.root.json and targets.json (and the new snapshot.key or timestamp.key)\n" +
			"to the server's --trust-dir; it picks them up within a minute, agents at their next plan.\n" +
			"After a targets rotation, builds signed with the old key are refused until pushed again.",
		Args:                  cobra.NoArgs,
		DisableFlagsInUseLine: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" || role == "" {
				return usagef("trust rotate: --dir and --role are required")
			}
			switch role {
			case "targets", "snapshot", "timestamp", "root":
			default:
				return usagef("trust rotate: --role %q: want targets, snapshot, timestamp or root", role)
			}
			if err := trust.Rotate(dir, role, time.Now()); err != nil {
				return err
			}
			return printKeyDir(e, dir)
		},
	}
	c.Flags().StringVar(&dir, "dir", "", "key folder made by trust init")
	c.Flags().StringVar(&role, "role", "", "role to rotate: targets, snapshot, timestamp or root")
	return c
}

// printKeyDir lists the files of a key folder, saying which stay offline.
func printKeyDir(e *env, dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, en := range entries {
		name := en.Name()
		if en.IsDir() || name[0] == '.' {
			continue
		}
		where := "server and agents"
		switch {
		case name == trust.SnapshotKey || name == trust.TimestampKey:
			where = "server (--trust-dir)"
		case filepath.Ext(name) == ".key":
			where = "offline"
		case name == trust.TargetsFile:
			where = "server (--trust-dir)"
		case name != trust.RootFile:
			where = "server (--trust-dir)"
		}
		fmt.Fprintf(e.stdout, "%s\t%s\n", filepath.Join(dir, name), where)
	}
	return nil
}
