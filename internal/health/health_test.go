package health

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/drover-dev/drover/internal/api"
)

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		forever bool
		err     bool
	}{
		{"1h", time.Hour, false, false},
		{"30m", 30 * time.Minute, false, false},
		{"2d", 48 * time.Hour, false, false},
		{"1d12h", 36 * time.Hour, false, false},
		{"1w", 7 * 24 * time.Hour, false, false},
		{"90s", 90 * time.Second, false, false},
		{"500ms", 500 * time.Millisecond, false, false},
		{" 45m ", 45 * time.Minute, false, false},
		{"forever", 0, true, false},
		{"FOREVER", 0, true, false},
		{"", 0, false, true},
		{"0h", 0, false, true},
		{"2", 0, false, true},
		{"d", 0, false, true},
		{"1.5h", 0, false, true},
		{"-1h", 0, false, true},
		{"2y", 0, false, true},
		{"1h ", time.Hour, false, false},
		{"1 h", 0, false, true},
		{"99999999999d", 0, false, true},
		{"3651d", 0, false, true},
		{"soon", 0, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			d, forever, err := ParseDuration(tt.in)
			if (err != nil) != tt.err {
				t.Fatalf("ParseDuration(%q) error = %v, want error %v", tt.in, err, tt.err)
			}
			if err != nil && !errors.Is(err, ErrBadDuration) {
				t.Errorf("ParseDuration(%q) error %v is not ErrBadDuration", tt.in, err)
			}
			if d != tt.want || forever != tt.forever {
				t.Errorf("ParseDuration(%q) = %v, %v, want %v, %v", tt.in, d, forever, tt.want, tt.forever)
			}
		})
	}
}

func TestFormatDuration(t *testing.T) {
	for _, tt := range []struct {
		d    time.Duration
		want string
	}{{time.Hour, "1h"}, {51 * time.Hour, "2d3h"}, {30 * time.Minute, "30m"}, {0, "0s"}} {
		if got := FormatDuration(tt.d); got != tt.want {
			t.Errorf("FormatDuration(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}

func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"1h", "2d", "forever", "1d12h30m", "", "9999999999999w"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, forever, err := ParseDuration(s)
		if err != nil {
			return
		}
		if !forever && (d <= 0 || d > maxDuration) {
			t.Fatalf("ParseDuration(%q) = %v, want within (0, %v]", s, d, maxDuration)
		}
		if !forever {
			back, _, err := ParseDuration(FormatDuration(d))
			if err != nil || back != d {
				t.Fatalf("ParseDuration(FormatDuration(%v)) = %v, %v", d, back, err)
			}
		}
	})
}

func TestMachine(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	const (
		H = api.HealthHealthy
		U = api.HealthUnknown
		T = api.HealthTerminate
		S = api.HealthStarting
	)
	type obs struct {
		sec    int
		result string
		want   string
	}
	tests := []struct {
		name string
		cfg  MachineConfig
		hold int // seconds at which an install happened; -1 none
		obs  []obs
	}{
		{"one result changes the state by default", MachineConfig{}, -1,
			[]obs{{1, H, H}, {2, T, T}, {3, H, H}}},
		{"flapping is held back", MachineConfig{Consecutive: 3}, -1,
			[]obs{{1, H, S}, {2, H, S}, {3, H, H}, {4, T, H}, {5, H, H}, {6, T, H}, {7, T, H}, {8, U, H}, {9, T, H}, {10, T, H}, {11, T, T}}},
		{"an interrupted run starts counting again", MachineConfig{Consecutive: 2}, -1,
			[]obs{{1, U, S}, {2, H, S}, {3, U, S}, {4, U, U}}},
		{"start delay ignores early results", MachineConfig{StartDelay: 10 * time.Second}, -1,
			[]obs{{1, T, S}, {9, T, S}, {10, T, T}}},
		{"an install holds the results again", MachineConfig{StartDelay: 5 * time.Second, Consecutive: 2}, 20,
			[]obs{{5, H, S}, {6, H, H}, {19, U, H}, {21, U, H}, {24, U, H}, {25, U, H}, {26, U, U}}},
		{"no checks is its own state", MachineConfig{}, -1,
			[]obs{{1, T, T}, {2, "", ""}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := NewMachine(tt.cfg, t0)
			for _, o := range tt.obs {
				if tt.hold >= 0 && o.sec > tt.hold {
					m.Hold(at(tt.hold))
					tt.hold = -1
				}
				prev, _ := m.State()
				got, changed := m.Observe(at(o.sec), o.result)
				if got != o.want || changed != (prev != o.want) {
					t.Fatalf("at %ds Observe(%q) = %q, %v; want %q, %v", o.sec, o.result, got, changed, o.want, prev != o.want)
				}
			}
		})
	}
}

func writeCheck(t *testing.T, dir, name, body string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+body+"\n"), mode); err != nil {
		t.Fatal(err)
	}
}

func TestRunAll(t *testing.T) {
	dir := t.TempDir()
	writeCheck(t, dir, "a-ok", "echo fine", 0o755)
	writeCheck(t, dir, "b_term", "echo bye; exit 254", 0o755)
	writeCheck(t, dir, "c-fail", "echo broken >&2; exit 3", 0o755)
	// A hung check whose child keeps our output open: both are killed at
	// the timeout, and Wait does not hang on the child.
	writeCheck(t, dir, "d-hang", "sleep 30 & echo started; wait", 0o755)
	writeCheck(t, dir, "e-noexec", "exit 0", 0o644)
	writeCheck(t, dir, "f.bak", "exit 0", 0o755)
	if err := os.Mkdir(filepath.Join(dir, "g-dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res, skipped, err := RunAll(context.Background(), Config{Dir: dir, Timeout: 500 * time.Millisecond, LogDir: filepath.Join(t.TempDir(), "logs")})
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("RunAll took %v; the hung check was not killed at its timeout", took)
	}
	type brief struct {
		Name, Status string
		Code         int
		Output       string
	}
	var got []brief
	for _, r := range res {
		got = append(got, brief{r.Name, r.Status, r.ExitCode, strings.TrimSpace(r.Output)})
	}
	want := []brief{
		{"a-ok", api.HealthHealthy, 0, "fine"},
		{"b_term", api.HealthTerminate, 254, "bye"},
		{"c-fail", api.HealthUnknown, 3, "broken"},
		{"d-hang", api.HealthUnknown, -1, "started\ndrover: killed after the health-check timeout of 500ms"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("RunAll results (-want +got):\n%s", diff)
	}
	var names []string
	for _, s := range skipped {
		names = append(names, s.Name)
	}
	if diff := cmp.Diff([]string{"e-noexec", "f.bak", "g-dir"}, names); diff != "" {
		t.Errorf("RunAll skipped (-want +got):\n%s", diff)
	}
	if got := Overall(res); got != api.HealthTerminate {
		t.Errorf("Overall = %q, want %q", got, api.HealthTerminate)
	}
	if got := Overall(res[:1]); got != api.HealthHealthy {
		t.Errorf("Overall(ok only) = %q, want healthy", got)
	}
	if got := Overall(res[2:]); got != api.HealthUnknown {
		t.Errorf("Overall(fail, hang) = %q, want unknown", got)
	}
	if got := Overall(nil); got != "" {
		t.Errorf("Overall(nil) = %q, want empty", got)
	}
}

func TestRunAllMissingDir(t *testing.T) {
	res, skipped, err := RunAll(context.Background(), Config{Dir: filepath.Join(t.TempDir(), "none")})
	if err != nil || res != nil || skipped != nil {
		t.Errorf("RunAll(missing dir) = %v, %v, %v; want nothing", res, skipped, err)
	}
}
