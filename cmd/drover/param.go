package main

import "github.com/spf13/cobra"

// paramCmds is the param noun: fleet and device parameter values
// (issue 3).
func paramCmds(e *env) []*cobra.Command { return nil }
