// Package rollout is the state machine of a rollout: it applies state
// documents to the devices they change in waves, and moves to the next
// wave only when the devices of the current one are converged and healthy
// for a soak time. It does no I/O and reads no clock: the server's driver
// feeds it observations of the devices and the time, and carries out what
// it decides (give devices the new state, give them their previous state
// back, store the documents, emit events).
package rollout

import (
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/drover-dev/drover/internal/api"
)

// Defaults of a rollout spec.
const (
	DefaultWaves       = "1,10%,50%,100%"
	DefaultSoak        = 5 * time.Minute
	DefaultWaveTimeout = 15 * time.Minute
	DefaultMaxFailures = "0"
	DefaultOnFailure   = api.OnFailurePause
)

// maxWaves bounds how many waves a rollout may have.
const maxWaves = 100

var nameRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// ValidName reports whether n is a valid rollout name: the rule of group
// names.
func ValidName(n string) bool { return nameRe.MatchString(n) }

// ParseWaves reads a comma-separated wave list ("1,10%,50%,100%").
func ParseWaves(s string) ([]string, error) {
	var out []string
	for _, w := range strings.Split(s, ",") {
		out = append(out, strings.TrimSpace(w))
	}
	if err := checkWaves(out); err != nil {
		return nil, err
	}
	return out, nil
}

// size is one parsed wave: a count, or a percentage when pct.
type size struct {
	n   float64
	pct bool
}

func parseSize(w string) (size, error) {
	if p, ok := strings.CutSuffix(w, "%"); ok {
		v, err := strconv.ParseFloat(p, 64)
		if err != nil || math.IsNaN(v) || v <= 0 || v > 100 {
			return size{}, fmt.Errorf("wave %q: want a count (1, 5) or a percentage above 0%% and at most 100%%", w)
		}
		return size{v, true}, nil
	}
	v, err := strconv.Atoi(w)
	if err != nil || v < 1 {
		return size{}, fmt.Errorf("wave %q: want a count (1, 5) or a percentage above 0%% and at most 100%%", w)
	}
	return size{float64(v), false}, nil
}

// checkWaves checks each wave and that counts and percentages each grow
// strictly; that the waves cover every device is checked by Split, which
// knows how many there are.
func checkWaves(ws []string) error {
	if len(ws) == 0 {
		return fmt.Errorf("waves: want at least one")
	}
	if len(ws) > maxWaves {
		return fmt.Errorf("waves: at most %d", maxWaves)
	}
	var lastN, lastP float64
	for _, w := range ws {
		sz, err := parseSize(w)
		if err != nil {
			return err
		}
		last := &lastN
		if sz.pct {
			last = &lastP
		}
		if sz.n <= *last {
			return fmt.Errorf("waves %s: sizes are cumulative and must grow (%s)", strings.Join(ws, ","), w)
		}
		*last = sz.n
	}
	return nil
}

// allowedFailures is how many failures a wave of n devices may have
// under max ("0", "N" or "P%" of the wave, rounded down).
func allowedFailures(max string, n int) int {
	if p, ok := strings.CutSuffix(max, "%"); ok {
		v, _ := strconv.ParseFloat(p, 64)
		return int(math.Floor(v * float64(n) / 100))
	}
	v, _ := strconv.Atoi(max)
	return v
}

func checkMaxFailures(s string) error {
	if p, ok := strings.CutSuffix(s, "%"); ok {
		v, err := strconv.ParseFloat(p, 64)
		if err == nil && !math.IsNaN(v) && v >= 0 && v <= 100 {
			return nil
		}
	} else if v, err := strconv.Atoi(s); err == nil && v >= 0 {
		return nil
	}
	return fmt.Errorf("max failures %q: want 0, a count (2) or a percentage of a wave (10%%)", s)
}

// Normalize fills the defaults of spec's unset fields and checks it: its
// name (when set), waves, durations, failure threshold and policy. The
// documents are the server's to check.
func Normalize(spec *api.RolloutSpec) error {
	if spec.Name != "" && !ValidName(spec.Name) {
		return fmt.Errorf("rollout name %q: want lowercase letters, digits and '-', at most 63, starting with a letter or digit", spec.Name)
	}
	if len(spec.Waves) == 0 {
		spec.Waves = strings.Split(DefaultWaves, ",")
	}
	if err := checkWaves(spec.Waves); err != nil {
		return err
	}
	if spec.Soak == 0 {
		spec.Soak = api.Duration(DefaultSoak)
	}
	if spec.WaveTimeout == 0 {
		spec.WaveTimeout = api.Duration(DefaultWaveTimeout)
	}
	if spec.Soak < 0 || spec.WaveTimeout < 0 {
		return fmt.Errorf("soak and wave timeout must not be negative")
	}
	if spec.MaxFailures == "" {
		spec.MaxFailures = DefaultMaxFailures
	}
	if err := checkMaxFailures(spec.MaxFailures); err != nil {
		return err
	}
	switch spec.OnFailure {
	case "":
		spec.OnFailure = DefaultOnFailure
	case api.OnFailurePause, api.OnFailureRevert:
	default:
		return fmt.Errorf("on failure %q: want pause or revert", spec.OnFailure)
	}
	return nil
}

// Split puts devices, in a stable order (sorted by id), into the waves of
// spec: wave i holds the devices between the cumulative sizes of waves
// i-1 and i, each a count or a percentage of len(devices) rounded up. A
// wave that adds no device (10% of 5 devices after a first wave of 1) is
// kept, empty, so stages match spec.Waves; the last wave must cover every
// device.
func Split(spec api.RolloutSpec, devices []string) ([]api.RolloutWave, error) {
	if err := checkWaves(spec.Waves); err != nil {
		return nil, err
	}
	ids := slices.Clone(devices)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	n := len(ids)
	out := make([]api.RolloutWave, 0, len(spec.Waves))
	prev := 0
	for _, w := range spec.Waves {
		sz, _ := parseSize(w)
		upto := int(sz.n)
		if sz.pct {
			// Rounded up; the epsilon keeps 10% of 30 at 3, not 4.
			upto = int(math.Ceil(sz.n*float64(n)/100 - 1e-9))
		}
		upto = min(upto, n)
		if upto < prev {
			return nil, fmt.Errorf("waves %s: %s is %d of the %d changed devices, fewer than the wave before (%d)",
				strings.Join(spec.Waves, ","), w, upto, n, prev)
		}
		out = append(out, api.RolloutWave{Size: upto - prev, Devices: slices.Clone(ids[prev:upto])})
		prev = upto
	}
	if prev < n {
		return nil, fmt.Errorf("waves %s cover %d of the %d changed devices: end with 100%%", strings.Join(spec.Waves, ","), prev, n)
	}
	return out, nil
}

// New makes a running rollout of spec (normalized) for the changed
// devices, created at now by by. Its first wave has not begun: the driver
// runs the gate first (NeedsGate).
func New(spec api.RolloutSpec, devices []string, now time.Time, by string) (api.Rollout, error) {
	if err := Normalize(&spec); err != nil {
		return api.Rollout{}, err
	}
	if spec.Name == "" {
		return api.Rollout{}, fmt.Errorf("rollout has no name")
	}
	if len(devices) == 0 {
		return api.Rollout{}, fmt.Errorf("rollout %s changes no device", spec.Name)
	}
	stages, err := Split(spec, devices)
	if err != nil {
		return api.Rollout{}, err
	}
	r := api.Rollout{RolloutSpec: spec, Phase: api.RolloutRunning, Stages: stages,
		Created: now.UTC(), Updated: now.UTC(), CreatedBy: by}
	for i, st := range stages {
		for _, id := range st.Devices {
			r.Devices = append(r.Devices, api.RolloutDevice{ID: id, Wave: i, Outcome: api.OutcomePending})
		}
	}
	return r, nil
}
