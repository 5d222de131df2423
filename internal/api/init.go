package api

import "time"

// InitEntry is one entry of a group document's `init:` list: a package and
// a program in it, relative to its install location (like a service's
// start), run once on each device that joins the group, before the
// group's apps.
type InitEntry struct {
	Name    string `json:"name" yaml:"name"`                           // group:name
	Version string `json:"version,omitempty" yaml:"version,omitempty"` // exact, a constraint, or "" (latest)
	Run     string `json:"run" yaml:"run"`                             // e.g. bin/join
}

// ResolvedInit is one init entry of a device's resolved state: its group
// and the build chosen for the device by tag match, like an app's.
type ResolvedInit struct {
	Group   string `json:"group"`
	Name    string `json:"name"`
	Version string `json:"version"`
	Digest  string `json:"digest"` // manifest digest of the chosen build
	Run     string `json:"run"`
	// BuildTags are the chosen build's tags: with the coordinate they name
	// it among signed targets (--trust-root).
	BuildTags []string `json:"build_tags,omitempty"`
}

// InitRecord is an init entry that succeeded on a device: the agent keeps
// one per group and name, and reports them. An entry is pending on a
// device while no record has its group, name, build digest and run.
type InitRecord struct {
	Group   string    `json:"group" yaml:"group"`
	Name    string    `json:"name" yaml:"name"`
	Version string    `json:"version" yaml:"version"`
	Digest  string    `json:"digest" yaml:"digest"`
	Run     string    `json:"run" yaml:"run"`
	Done    time.Time `json:"done" yaml:"done"`
}

// StepInit is the plan step of an init entry a device has not run yet.
const StepInit = "init"

// Event kinds of init entries (docs/events.md).
const (
	KindInitStart  = "init-start"  // an init entry's program starts
	KindInitDone   = "init-done"   // it exited 0; recorded, it will not run again
	KindInitFailed = "init-failed" // it failed: the convergence stops before the apps
)
