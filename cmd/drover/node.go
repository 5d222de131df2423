package main

import "github.com/spf13/cobra"

// nodeCmds are the node-local verbs answered by the agent on this machine:
// config, converge, keepalive, log, send (issue 4).
func nodeCmds(e *env) []*cobra.Command { return nil }
