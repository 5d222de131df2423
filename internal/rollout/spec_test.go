package rollout

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/api"
)

func TestParseWaves(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    string
		wantErr string
	}{
		{in: "1,10%,50%,100%", want: "1|10%|50%|100%"},
		{in: " 2 , 100% ", want: "2|100%"},
		{in: "100%", want: "100%"},
		{in: "1,5,20", want: "1|5|20"},
		{in: "0,100%", wantErr: `wave "0"`},
		{in: "1,,100%", wantErr: `wave ""`},
		{in: "10%,5%,100%", wantErr: "must grow"},
		{in: "3,3,100%", wantErr: "must grow"},
		{in: "150%", wantErr: `wave "150%"`},
		{in: "-1%", wantErr: `wave "-1%"`},
		{in: "a", wantErr: `wave "a"`},
		{in: "NaN%", wantErr: `wave "NaN%"`},
	} {
		got, err := ParseWaves(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseWaves(%q) = %v, %v; want error with %q", tc.in, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || strings.Join(got, "|") != tc.want {
			t.Errorf("ParseWaves(%q) = %q, %v; want %s", tc.in, got, err, tc.want)
		}
	}
}

func FuzzParseWaves(f *testing.F) {
	for _, s := range []string{"1,10%,50%,100%", "100%", "3,2", "0.5%,100%", "1e3%", ",", "%"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ws, err := ParseWaves(s)
		if err != nil {
			return
		}
		// Whatever parses splits any fleet without panic, and a split
		// that succeeds places every device exactly once.
		for _, n := range []int{1, 7, 100} {
			ids := make([]string, n)
			for i := range ids {
				ids[i] = fmt.Sprintf("d%03d", i)
			}
			stages, err := Split(api.RolloutSpec{Waves: ws}, ids)
			if err != nil {
				continue
			}
			total := 0
			for _, st := range stages {
				if st.Size != len(st.Devices) {
					t.Fatalf("Split(%q, %d): size %d with %d devices", s, n, st.Size, len(st.Devices))
				}
				total += st.Size
			}
			if total != n {
				t.Fatalf("Split(%q, %d) placed %d devices", s, n, total)
			}
		}
	})
}

func TestNormalize(t *testing.T) {
	var spec api.RolloutSpec
	if err := Normalize(&spec); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(spec.Waves, ","); got != DefaultWaves || time.Duration(spec.Soak) != 5*time.Minute ||
		time.Duration(spec.WaveTimeout) != 15*time.Minute || spec.MaxFailures != "0" || spec.OnFailure != api.OnFailurePause {
		t.Errorf("defaults = %+v", spec)
	}
	for _, tc := range []struct {
		spec    api.RolloutSpec
		wantErr string
	}{
		{api.RolloutSpec{Name: "Bad_Name"}, "rollout name"},
		{api.RolloutSpec{MaxFailures: "x"}, "max failures"},
		{api.RolloutSpec{MaxFailures: "-1"}, "max failures"},
		{api.RolloutSpec{MaxFailures: "120%"}, "max failures"},
		{api.RolloutSpec{OnFailure: "retry"}, "on failure"},
		{api.RolloutSpec{Waves: []string{"50%", "10%"}}, "must grow"},
		{api.RolloutSpec{Soak: -1}, "negative"},
	} {
		if err := Normalize(&tc.spec); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("Normalize(%+v) = %v, want %q", tc.spec, err, tc.wantErr)
		}
	}
	for _, ok := range []string{"0", "3", "10%", "0%", "100%"} {
		spec := api.RolloutSpec{MaxFailures: ok}
		if err := Normalize(&spec); err != nil {
			t.Errorf("max failures %s: %v", ok, err)
		}
	}
}

func ids(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("dev-%04d", i)
	}
	return out
}

func TestSplit(t *testing.T) {
	for _, tc := range []struct {
		waves   string
		n       int
		want    []int
		wantErr string
	}{
		{"1,10%,50%,100%", 1000, []int{1, 99, 400, 500}, ""},
		{"1,10%,50%,100%", 5, []int{1, 0, 2, 2}, ""},
		{"1,10%,50%,100%", 1, []int{1, 0, 0, 0}, ""},
		{"1,10%,50%,100%", 30, []int{1, 2, 12, 15}, ""},
		{"100%", 7, []int{7}, ""},
		{"2,5", 5, []int{2, 3}, ""},
		{"2,10", 5, []int{2, 3}, ""},
		{"1,50%", 10, []int{1, 4}, "cover 5 of the 10"},
		{"50%,3,100%", 10, nil, "fewer than the wave before"},
	} {
		ws, err := ParseWaves(tc.waves)
		if err != nil {
			t.Fatal(err)
		}
		// Given in reverse: the order of the waves is the sorted one.
		devs := ids(tc.n)
		for i, j := 0, len(devs)-1; i < j; i, j = i+1, j-1 {
			devs[i], devs[j] = devs[j], devs[i]
		}
		stages, err := Split(api.RolloutSpec{Waves: ws}, devs)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Split(%s, %d) = %v; want error %q", tc.waves, tc.n, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("Split(%s, %d): %v", tc.waves, tc.n, err)
		}
		var sizes []int
		next := 0
		for _, st := range stages {
			sizes = append(sizes, st.Size)
			for _, id := range st.Devices {
				if id != fmt.Sprintf("dev-%04d", next) {
					t.Fatalf("Split(%s, %d): device %s where dev-%04d was due", tc.waves, tc.n, id, next)
				}
				next++
			}
		}
		if fmt.Sprint(sizes) != fmt.Sprint(tc.want) {
			t.Errorf("Split(%s, %d) sizes = %v, want %v", tc.waves, tc.n, sizes, tc.want)
		}
	}
}

func TestAllowedFailures(t *testing.T) {
	for _, tc := range []struct {
		max  string
		n    int
		want int
	}{{"0", 10, 0}, {"2", 10, 2}, {"10%", 10, 1}, {"10%", 5, 0}, {"50%", 5, 2}, {"100%", 3, 3}} {
		if got := allowedFailures(tc.max, tc.n); got != tc.want {
			t.Errorf("allowedFailures(%s, %d) = %d, want %d", tc.max, tc.n, got, tc.want)
		}
	}
}
