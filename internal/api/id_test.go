package api

import (
	"strings"
	"testing"
)

func TestValidDeviceID(t *testing.T) {
	tests := []struct {
		id   string
		want bool
	}{
		{"d1", true},
		{"edge-01.site_a", true},
		{strings.Repeat("a", 63), true},
		{strings.Repeat("a", 64), false},
		{strings.Repeat("a", 2000), false},
		{"", false},
		{".hidden", false},
		{"-x", false},
		{"a/b", false},
		{"..%2F..%2Fetc%0Ax", false},
		{"../../etc", false},
		{"evil\nd9", false},
		{"a b", false},
		{"d1\x00", false},
	}
	for _, tt := range tests {
		if got := ValidDeviceID(tt.id); got != tt.want {
			t.Errorf("ValidDeviceID(%.40q) = %v, want %v", tt.id, got, tt.want)
		}
	}
}

func FuzzValidDeviceID(f *testing.F) {
	for _, s := range []string{"d1", "a/b", "evil\nx", ".x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		if !ValidDeviceID(id) {
			return
		}
		if len(id) > 63 || strings.ContainsAny(id, "/\\\n\r\t %\x00") || id[0] == '.' {
			t.Errorf("ValidDeviceID(%q) = true for a name that can forge a path or a line", id)
		}
	})
}
