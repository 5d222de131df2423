package health

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ErrBadDuration is returned for a malformed keepalive duration.
var ErrBadDuration = errors.New("malformed duration")

// units of ParseDuration, longest first where one is a prefix of another.
var units = []struct {
	name string
	d    time.Duration
}{
	{"ms", time.Millisecond},
	{"s", time.Second},
	{"m", time.Minute},
	{"h", time.Hour},
	{"d", 24 * time.Hour},
	{"w", 7 * 24 * time.Hour},
}

// maxDuration bounds a keepalive: longer than that is `forever`.
const maxDuration = 10 * 365 * 24 * time.Hour

// ParseDuration parses a keepalive duration: one or more whole numbers
// each with a unit (ms, s, m, h, d for days, w for weeks), like 30m, 2d or
// 1d12h, or the word forever. time.ParseDuration knows no days, which is
// what operators type for a keepalive.
func ParseDuration(s string) (d time.Duration, forever bool, err error) {
	in := strings.TrimSpace(s)
	if strings.EqualFold(in, "forever") {
		return 0, true, nil
	}
	if in == "" {
		return 0, false, fmt.Errorf("%w %q: want a number with a unit (30m, 1h, 2d) or forever", ErrBadDuration, s)
	}
	rest := in
	for rest != "" {
		i := 0
		for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
			i++
		}
		if i == 0 || i > 12 {
			return 0, false, fmt.Errorf("%w %q: want a number with a unit (30m, 1h, 2d) or forever", ErrBadDuration, s)
		}
		n, _ := strconv.ParseInt(rest[:i], 10, 64)
		rest = rest[i:]
		var unit time.Duration
		for _, u := range units {
			if strings.HasPrefix(rest, u.name) {
				unit = u.d
				rest = rest[len(u.name):]
				break
			}
		}
		if unit == 0 {
			return 0, false, fmt.Errorf("%w %q: unit must be ms, s, m, h, d or w", ErrBadDuration, s)
		}
		if n > int64(maxDuration/unit) || d > maxDuration-time.Duration(n)*unit {
			return 0, false, fmt.Errorf("%w %q: longer than 10 years; use forever", ErrBadDuration, s)
		}
		d += time.Duration(n) * unit
	}
	if d <= 0 {
		return 0, false, fmt.Errorf("%w %q: must be longer than zero", ErrBadDuration, s)
	}
	return d, false, nil
}

// FormatDuration prints d in the units ParseDuration reads, largest first
// (2d3h, 30m), so what a user typed comes back recognisably.
func FormatDuration(d time.Duration) string {
	if d <= 0 {
		return "0s"
	}
	var b strings.Builder
	for i := len(units) - 2; i >= 0; i-- { // no weeks: "9d" reads better than "1w2d"
		u := units[i]
		if n := d / u.d; n > 0 {
			fmt.Fprintf(&b, "%d%s", n, u.name)
			d -= n * u.d
		}
	}
	return b.String()
}
