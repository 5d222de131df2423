package api

import (
	"fmt"
	"time"
)

// Kinds of desired-state document. A device document (`id:`) gives one
// device its own apps; a group document (`group:` and `selector:`) gives
// apps to every device its label selector matches.
const (
	DocDevice = "device"
	DocGroup  = "group"
)

// Document is one desired-state document as the operator wrote it, plus
// what the server recorded when it was set. `state set -f` reads the
// operator's part (ID or Group+Selector, Apps); `state get` and `state ls`
// print it back with Pinned.
type Document struct {
	// Kind is DocDevice or DocGroup; derived from which of ID and Group is
	// set when a file is read.
	Kind string `json:"kind" yaml:"kind"`
	// ID names the device of a device document.
	ID string `json:"id,omitempty" yaml:"id,omitempty"`
	// Group names a group document: ^[a-z0-9][a-z0-9-]{0,62}$.
	Group string `json:"group,omitempty" yaml:"group,omitempty"`
	// Selector is a group's label selector in Kubernetes' syntax; ""
	// matches every device.
	Selector string       `json:"selector,omitempty" yaml:"selector,omitempty"`
	Apps     []DesiredApp `json:"apps" yaml:"apps"`
	// Init lists a group's init entries, run in order on each device that
	// joins the group, before its apps (group documents only).
	Init []InitEntry `json:"init,omitempty" yaml:"init,omitempty"`
	// Pinned lists, for each app whose version is a constraint, the exact
	// version it resolved to against the packages that existed when the
	// document was set. Later pushes do not change it.
	Pinned []Pin `json:"pinned,omitempty" yaml:"pinned,omitempty"`
	// Set and SetBy record when and by whom the document was stored.
	Set   time.Time `json:"set,omitempty" yaml:"set,omitempty"`
	SetBy string    `json:"set_by,omitempty" yaml:"set_by,omitempty"`
}

// Key names a document uniquely across both kinds: "device/ID" or
// "group/NAME".
func (d Document) Key() string {
	if d.Kind == DocGroup {
		return DocGroup + "/" + d.Group
	}
	return DocDevice + "/" + d.ID
}

// Pin is the exact version a document's constraint resolved to.
type Pin struct {
	Name       string `json:"name" yaml:"name"`
	Instance   string `json:"instance,omitempty" yaml:"instance,omitempty"`
	Constraint string `json:"constraint" yaml:"constraint"`
	Version    string `json:"version" yaml:"version"`
	// Init is true for the pin of an init entry (not of an app).
	Init bool `json:"init,omitempty" yaml:"init,omitempty"`
}

// DocumentSummary is one row of `state ls`.
type DocumentSummary struct {
	Document
	// Devices counts the devices whose effective state takes at least one
	// app from this document.
	Devices int `json:"devices" yaml:"devices"`
	// Newer lists, per pinned app, newer versions that would fit its
	// constraint now ("com.example:web 1.3.0").
	Newer []string `json:"newer,omitempty" yaml:"newer,omitempty"`
}

// EffectiveApp is one app of a device's effective desired state, with the
// document that gave it.
type EffectiveApp struct {
	DesiredApp `yaml:",inline"`
	// Source is the document's Key ("device/ID" or "group/NAME"), or
	// "rollout/NAME" while a rollout gives the device a staged version.
	Source string `json:"source" yaml:"source"`
}

// Steps of a plan (`drover plan`, `state set --dry-run`).
const (
	StepInstall     = "install"
	StepUpgrade     = "upgrade"
	StepDowngrade   = "downgrade"
	StepReinstall   = "reinstall"
	StepReconfigure = "reconfigure"
	StepRemove      = "remove"
)

// PlanStep is one app's change on one device.
type PlanStep struct {
	Kind     string `json:"kind" yaml:"kind"`
	Name     string `json:"name" yaml:"name"`
	Instance string `json:"instance,omitempty" yaml:"instance,omitempty"`
	From     string `json:"from,omitempty" yaml:"from,omitempty"` // installed version
	To       string `json:"to,omitempty" yaml:"to,omitempty"`     // new version
	// Build is the chosen build's manifest digest; BuildTags its tags,
	// the ones that chose it.
	Build     string   `json:"build,omitempty" yaml:"build,omitempty"`
	BuildTags []string `json:"build_tags,omitempty" yaml:"build_tags,omitempty"`
	// Group and Run are set for an init step: the group whose init entry
	// the device has not run yet, and its program.
	Group string `json:"group,omitempty" yaml:"group,omitempty"`
	Run   string `json:"run,omitempty" yaml:"run,omitempty"`
}

// DevicePlan is what a change would do to one device.
type DevicePlan struct {
	Device string     `json:"device" yaml:"device"`
	Steps  []PlanStep `json:"steps" yaml:"steps"`
	// Download is the bytes of blobs the device would fetch (those it
	// does not have already).
	Download int64 `json:"download" yaml:"download"`
	// Conflicts are root-mode paths two packages of the new state would
	// both own.
	Conflicts []string `json:"conflicts,omitempty" yaml:"conflicts,omitempty"`
	// Errors are resolution, tie and parameter errors for this device.
	Errors []string `json:"errors,omitempty" yaml:"errors,omitempty"`
}

// Plan is the answer of a dry run.
type Plan struct {
	Devices   []DevicePlan `json:"devices" yaml:"devices"` // only devices that change or have errors
	Changed   int          `json:"changed" yaml:"changed"`
	Unchanged int          `json:"unchanged" yaml:"unchanged"`
	Errors    int          `json:"errors" yaml:"errors"`
}

// Summary is the plan's closing line.
func (p Plan) Summary() string {
	return fmt.Sprintf("%d devices change, %d unchanged, %d errors", p.Changed, p.Unchanged, p.Errors)
}

// Phases of a rollout.
const (
	RolloutRunning = "running"
	RolloutPaused  = "paused"
	RolloutFailed  = "failed"
	RolloutAborted = "aborted"
	RolloutDone    = "done"
)

// Outcomes of a device in a rollout.
const (
	OutcomePending   = "pending"   // its wave has not begun
	OutcomeUpdating  = "updating"  // given the new state, not yet converged and healthy
	OutcomeSoaking   = "soaking"   // converged and healthy, its wave is soaking
	OutcomePassed    = "passed"    // its wave passed
	OutcomeFailed    = "failed"    // step failed, timed out, or unhealthy during the soak
	OutcomeReverted  = "reverted"  // given its previous state back
	OutcomeUntouched = "untouched" // the rollout ended before its wave
)

// Failure policies of a rollout.
const (
	OnFailurePause  = "pause"
	OnFailureRevert = "revert"
)

// RolloutSpec is what `drover rollout start` asks for.
type RolloutSpec struct {
	Name      string     `json:"name" yaml:"name"`
	Documents []Document `json:"documents" yaml:"documents"`
	// Waves are cumulative sizes of the changed devices: "1", "10%".
	Waves       []string `json:"waves" yaml:"waves"`
	Soak        Duration `json:"soak" yaml:"soak"`
	WaveTimeout Duration `json:"wave_timeout" yaml:"wave_timeout"`
	// MaxFailures is "0", a count "N" or a percentage "P%" of a wave.
	MaxFailures string `json:"max_failures" yaml:"max_failures"`
	OnFailure   string `json:"on_failure" yaml:"on_failure"`
}

// Rollout is a stored rollout and where it stands.
type Rollout struct {
	RolloutSpec `yaml:",inline"`
	Phase       string `json:"phase" yaml:"phase"`
	// Wave is the index in Waves of the current wave (the last one when
	// done).
	Wave    int             `json:"wave" yaml:"wave"`
	Stages  []RolloutWave   `json:"stages" yaml:"stages"`
	Devices []RolloutDevice `json:"devices" yaml:"devices"`
	// Reason says why the rollout is paused, failed or aborted (for a gate
	// hook: the tail of its output).
	Reason    string    `json:"reason,omitempty" yaml:"reason,omitempty"`
	Created   time.Time `json:"created" yaml:"created"`
	Updated   time.Time `json:"updated" yaml:"updated"`
	CreatedBy string    `json:"created_by,omitempty" yaml:"created_by,omitempty"`
}

// RolloutWave is one wave of a rollout.
type RolloutWave struct {
	Size     int       `json:"size" yaml:"size"`       // devices in this wave (not cumulative)
	Devices  []string  `json:"devices" yaml:"devices"` // its devices, in the rollout's stable order
	Started  time.Time `json:"started,omitzero" yaml:"started,omitempty"`
	Soaking  time.Time `json:"soaking,omitzero" yaml:"soaking,omitempty"` // when its soak began
	Passed   time.Time `json:"passed,omitzero" yaml:"passed,omitempty"`
	Failures int       `json:"failures" yaml:"failures"`
}

// RolloutDevice is one device's outcome in a rollout.
type RolloutDevice struct {
	ID      string `json:"id" yaml:"id"`
	Wave    int    `json:"wave" yaml:"wave"`
	Outcome string `json:"outcome" yaml:"outcome"`
	Reason  string `json:"reason,omitempty" yaml:"reason,omitempty"`
	// Steps are the device's changes, as the plan at the start saw them;
	// the services of their apps must run and be healthy.
	Steps []PlanStep `json:"steps,omitempty" yaml:"steps,omitempty"`
}

// RolloutDryRun answers `rollout start --dry-run`: the plan of the
// documents and the waves the rollout would have. Nothing is stored.
type RolloutDryRun struct {
	Plan    Plan    `json:"plan" yaml:"plan"`
	Rollout Rollout `json:"rollout" yaml:"rollout"`
}

// Duration is a time.Duration written as text ("5m", "90s") in JSON and
// YAML, so rollout specs and statuses read as an operator wrote them.
type Duration time.Duration

// String writes d as time.Duration.String does ("5m0s").
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalText writes d as time.Duration.String does.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText reads a Go duration ("5m", "1h30m").
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("duration %q: want a number and a unit, like 30s, 5m or 1h", b)
	}
	if v < 0 {
		return fmt.Errorf("duration %q: must not be negative", b)
	}
	*d = Duration(v)
	return nil
}

// UILoginRequest asks for a one-time login URL of the fleet page.
type UILoginRequest struct {
	// TTL is how long the URL stays valid; 0 = 10 minutes.
	TTL Duration `json:"ttl,omitempty"`
}

// UILogin is a one-time login URL's path (with its token) on the server's
// address, and when it expires.
type UILogin struct {
	Path    string    `json:"path"`
	Expires time.Time `json:"expires"`
}
