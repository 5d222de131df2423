package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/drover-dev/drover/internal/dev"
)

func devCmd(e *env) *cobra.Command {
	var dir, listen, logLevel string
	c := &cobra.Command{
		Use:   "dev",
		Short: "Run a server, an agent and sample packages in one process, for a first try",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if dir == "" {
				d, err := os.MkdirTemp("", "drover-dev-")
				if err != nil {
					return err
				}
				dir = d
			} else if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
				return usagef("dev: --dir %s is not empty; give a new or empty folder", dir)
			}
			log, err := newLogger(e, logLevel)
			if err != nil {
				return err
			}
			if err := dev.Run(cmd.Context(), dev.Config{Dir: dir, Listen: listen, Out: e.stdout, Logger: log}); err != nil {
				return fmt.Errorf("dev: %w", err)
			}
			return nil
		},
	}
	c.Flags().StringVar(&dir, "dir", "", "folder for everything (default a new temporary folder)")
	c.Flags().StringVar(&listen, "listen", "", "server address (default 127.0.0.1:8443, else a free port)")
	c.Flags().StringVar(&logLevel, "log-level", "warn", "debug, info, warn or error")
	return c
}
