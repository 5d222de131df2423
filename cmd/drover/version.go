package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/drover-dev/drover/internal/agent"
)

func versionCmd(e *env) *cobra.Command {
	var format string
	c := &cobra.Command{
		Use:   "version",
		Short: "Print drover's version (also drover --version)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(format, outText, outYAML, outJSON); err != nil {
				return err
			}
			if format != outText {
				return printAs(e.stdout, format, struct {
					Version string `json:"version" yaml:"version"`
				}{agent.Version})
			}
			_, err := fmt.Fprintf(e.stdout, "drover %s\n", agent.Version)
			return err
		},
	}
	addOutputFlag(c, &format, outText)
	return c
}

func completionCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "completion bash|zsh|fish",
		Short: "Print a shell completion script (e.g. drover completion bash > /etc/bash_completion.d/drover)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			root := cmd.Root()
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(e.stdout, true)
			case "zsh":
				return root.GenZshCompletion(e.stdout)
			case "fish":
				return root.GenFishCompletion(e.stdout, true)
			}
			return usagef("completion %q: want bash, zsh or fish", args[0])
		},
	}
}
