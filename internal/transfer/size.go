package transfer

import (
	"fmt"
	"strconv"
	"strings"
)

// ParseSize parses a byte count: a plain number of bytes, or a number with
// a unit: kB, MB, GB (powers of 1000) or KiB, MiB, GiB (powers of 1024),
// case-insensitive. "10MB" is 10,000,000 bytes.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   int64
	}{
		{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30},
		{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"k", 1e3}, {"m", 1e6}, {"g", 1e9}, {"b", 1},
	}
	mult := int64(1)
	lower := strings.ToLower(t)
	for _, u := range units {
		if strings.HasSuffix(lower, u.suffix) {
			mult = u.mult
			t = strings.TrimSpace(t[:len(t)-len(u.suffix)])
			break
		}
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || f < 0 || f*float64(mult) > 1<<50 {
		return 0, fmt.Errorf("size %q: want a number of bytes like 10MB, 1.5GiB or 4096", s)
	}
	return int64(f * float64(mult)), nil
}
