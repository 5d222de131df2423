// Package plan is the agent's half of convergence (DESIGN §8): it compares
// the resolved state the server sent with what is really installed on this
// machine and returns the ordered steps that take one to the other.
//
// The server never guesses a device's disk, so this comparison happens
// here, against the agent's own record of its installs. Make is pure; the
// agent executes the steps.
package plan

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/Masterminds/semver/v3"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/param"
)

// Action is what a step does to one app.
type Action string

// Actions of a step.
const (
	Install Action = "install"
	Upgrade Action = "upgrade"
	// Downgrade is a rollback to an older version; it runs the same way as
	// an upgrade.
	Downgrade Action = "downgrade"
	// Reinstall replaces a build by another build of the same version
	// (its digest changed, say after a tag change picked another build).
	Reinstall Action = "reinstall"
	Remove    Action = "remove"
	// Reconfigure keeps the installed build and applies new parameter
	// values: templates and the configure script run again and the app's
	// services restart; nothing is reinstalled.
	Reconfigure Action = "reconfigure"
)

// Step is one action on one app, identified by Name and Instance.
type Step struct {
	Action   Action
	Name     string // group:name
	Instance string
	From     *api.InstalledApp // nil on install
	To       *api.ResolvedApp  // nil on remove
}

// String describes the step for logs and events, e.g.
// "upgrade com.example:tool[blue] 1.0.0 -> 1.1.0".
func (s Step) String() string {
	who := s.Name
	if s.Instance != "" {
		who += "[" + s.Instance + "]"
	}
	switch {
	case s.From != nil && s.To != nil && s.Action == Reconfigure:
		return fmt.Sprintf("%s %s %s", s.Action, who, s.To.Version)
	case s.From != nil && s.To != nil && s.Action == Reinstall:
		return fmt.Sprintf("%s %s %s (build %s -> %s)", s.Action, who, s.To.Version, short(s.From.Digest), short(s.To.Digest))
	case s.From != nil && s.To != nil:
		return fmt.Sprintf("%s %s %s -> %s", s.Action, who, s.From.Version, s.To.Version)
	case s.To != nil:
		return fmt.Sprintf("%s %s %s", s.Action, who, s.To.Version)
	case s.From != nil:
		return fmt.Sprintf("%s %s %s", s.Action, who, s.From.Version)
	}
	return fmt.Sprintf("%s %s", s.Action, who)
}

// short abbreviates a digest the way git abbreviates commits.
func short(d string) string {
	if d == "" {
		return "unknown"
	}
	if len(d) > 12 {
		return d[:12]
	}
	return d
}

// key is an app's identity on a device: two instances of one package are
// two apps.
type key struct{ name, instance string }

// Make returns the steps that take the installed apps to the resolved
// state, or nil when there is nothing to do (or r is nil: with no resolved
// state known, the agent keeps what it has rather than remove it all).
//
// Installs, upgrades, downgrades and reinstalls come first, in the
// resolved order, which already has dependencies first. Then the installed
// apps absent from the resolved state are removed, dependents before their
// dependencies; dependsOf reports the package names an installed app
// depends on (from its manifest) and may be nil.
func Make(r *api.Resolved, installed []api.InstalledApp, dependsOf func(api.InstalledApp) []string) []Step {
	if r == nil {
		return nil
	}
	have := map[key]*api.InstalledApp{}
	for i := range installed {
		k := key{installed[i].Name, installed[i].Instance}
		if have[k] == nil { // a duplicate report of one identity is one app
			have[k] = &installed[i]
		}
	}

	var steps []Step
	wanted := map[key]bool{}
	for i := range r.Apps {
		to := &r.Apps[i]
		k := key{to.Name, to.Instance}
		if wanted[k] {
			continue // the resolver never repeats an app; do not install it twice if it did
		}
		wanted[k] = true
		from := have[k]
		if from != nil && from.Digest == to.Digest && (to.Digest != "" || from.Version == to.Version) {
			// Already there; an app without digests is matched by
			// version. Other parameter values alone are a reconfigure.
			if from.ParamsDigest != param.Digest(param.Strings(to.Params)) {
				steps = append(steps, Step{Action: Reconfigure, Name: to.Name, Instance: to.Instance, From: from, To: to})
			}
			continue
		}
		act := Install
		if from != nil {
			act = Change(from.Version, to.Version)
		}
		steps = append(steps, Step{Action: act, Name: to.Name, Instance: to.Instance, From: from, To: to})
	}

	var gone []*api.InstalledApp
	for k, app := range have {
		if !wanted[k] {
			gone = append(gone, app)
		}
	}
	for _, app := range removalOrder(gone, dependsOf) {
		steps = append(steps, Step{Action: Remove, Name: app.Name, Instance: app.Instance, From: app})
	}
	return steps
}

// Change tells what replacing an installed version by another is:
// Upgrade, Downgrade or Reinstall. It is the one rule of a step's kind;
// the install engine takes the plan's kind, and asks Change when it has
// none.
func Change(from, to string) Action {
	old, err1 := semver.NewVersion(from)
	nu, err2 := semver.NewVersion(to)
	if err1 != nil || err2 != nil {
		// An unreadable version on disk is replaced the way an upgrade
		// replaces anything; only the label is unsure.
		if from == to {
			return Reinstall
		}
		return Upgrade
	}
	switch c := nu.Compare(old); {
	case c > 0:
		return Upgrade
	case c < 0:
		return Downgrade
	case from != to:
		// Same precedence, other build metadata (1.0.0+a, 1.0.0+b):
		// another version all the same.
		return Upgrade
	}
	return Reinstall
}

// removalOrder orders the apps to remove so that an app comes before every
// app it depends on. Apps are taken by name then instance, and each is
// preceded by its dependents, so the order is deterministic and otherwise
// alphabetical. A dependency cycle (which the server refuses) is broken
// where the walk meets it.
func removalOrder(apps []*api.InstalledApp, dependsOf func(api.InstalledApp) []string) []*api.InstalledApp {
	slices.SortFunc(apps, func(a, b *api.InstalledApp) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Instance, b.Instance))
	})
	// dependents[n] lists the apps to remove that depend on package n.
	dependents := map[string][]*api.InstalledApp{}
	if dependsOf != nil {
		for _, a := range apps {
			names := slices.Clone(dependsOf(*a))
			slices.Sort(names)
			for _, n := range slices.Compact(names) {
				dependents[n] = append(dependents[n], a)
			}
		}
	}
	visited := map[*api.InstalledApp]bool{}
	var out []*api.InstalledApp
	var visit func(a *api.InstalledApp)
	visit = func(a *api.InstalledApp) {
		if visited[a] {
			return
		}
		visited[a] = true
		for _, d := range dependents[a.Name] {
			visit(d)
		}
		out = append(out, a)
	}
	for _, a := range apps {
		visit(a)
	}
	return out
}
