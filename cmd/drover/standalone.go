package main

import "github.com/spf13/cobra"

// standaloneCmds are install, remove and ls, which work with no server
// (issue 3).
func standaloneCmds(e *env) []*cobra.Command { return nil }
