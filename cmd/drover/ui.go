package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

func uiCmd(e *env) *cobra.Command {
	var conn connFlags
	c := operatorCmd("ui", "The fleet page in a browser", &conn)
	c.AddCommand(uiURLCmd(e, &conn))
	return c
}

func uiURLCmd(e *env, conn *connFlags) *cobra.Command {
	var ttl time.Duration
	var format string
	c := &cobra.Command{
		Use:   "url",
		Short: "Print a one-time login URL of the fleet page",
		Long: "Print a one-time login URL of the fleet page (/ui/ on the server's address). Opening it\n" +
			"logs the browser in for 8 hours; the URL works once and expires after --ttl.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(format, outText, outYAML, outJSON); err != nil {
				return err
			}
			if ttl < time.Second || ttl > 24*time.Hour {
				return usagef("--ttl %s: want between 1s and 24h", ttl)
			}
			cl, err := conn.client()
			if err != nil {
				return err
			}
			defer cl.Close()
			login, err := cl.UILogin(cmd.Context(), ttl)
			if err != nil {
				return err
			}
			url := strings.TrimRight(cl.Addr(), "/") + login.Path
			if format != outText {
				return printAs(e.stdout, format, map[string]any{"url": url, "expires": login.Expires})
			}
			fmt.Fprintln(e.stdout, url)
			return nil
		},
	}
	c.Flags().DurationVar(&ttl, "ttl", 10*time.Minute, "how long the URL stays valid (it works once)")
	addOutputFlag(c, &format, outText)
	return c
}
