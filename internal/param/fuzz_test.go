package param

import (
	"testing"

	"github.com/drover-dev/drover/internal/api"
)

// FuzzConvert feeds text values, as a command line or a prompt gives them,
// to every type: Convert must never panic, and what it accepts must pass
// the declaration's bounds.
func FuzzConvert(f *testing.F) {
	for _, s := range []string{"8080", "-1", "1e308", "NaN", "true", "a,b,,c", "", "99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, typ := range []string{TypeString, TypeInt, TypeFloat, TypeBool, TypeList} {
			p := api.Param{Type: typ}
			if typ == TypeInt || typ == TypeFloat {
				p.Min, p.Max = f64(1), f64(100)
			}
			v, err := Convert(p, s)
			if err != nil {
				continue
			}
			if fv, ok := asFloat(v); ok && (typ == TypeInt || typ == TypeFloat) && (fv < 1 || fv > 100) {
				t.Errorf("Convert(%s, %q) = %v, outside 1..100", typ, s, v)
			}
			_ = String(v)
		}
	})
}
