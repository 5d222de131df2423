package main

import "github.com/spf13/cobra"

// serviceCmds is the service noun: process actions answered by the local
// agent (issue 3).
func serviceCmds(e *env) []*cobra.Command { return nil }
