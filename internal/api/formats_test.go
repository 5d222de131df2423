package api

import (
	"slices"
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

func TestValidDigest(t *testing.T) {
	tests := []struct {
		d    string
		want bool
	}{
		{strings.Repeat("a", 64), true},
		{"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", true},
		{strings.Repeat("A", 64), false},
		{strings.Repeat("a", 63), false},
		{strings.Repeat("a", 65), false},
		{strings.Repeat("g", 64), false},
		{"../" + strings.Repeat("a", 61), false},
		{"", false},
	}
	for _, tt := range tests {
		if got := ValidDigest(tt.d); got != tt.want {
			t.Errorf("ValidDigest(%q) = %v, want %v", tt.d, got, tt.want)
		}
	}
}

func TestNormalizeTags(t *testing.T) {
	tests := []struct {
		in, want []string
	}{
		{nil, []string{}},
		{[]string{}, []string{}},
		{[]string{"b", "a", "b"}, []string{"a", "b"}},
		{[]string{"linux"}, []string{"linux"}},
	}
	for _, tt := range tests {
		in := slices.Clone(tt.in)
		got := NormalizeTags(in)
		if got == nil || !slices.Equal(got, tt.want) {
			t.Errorf("NormalizeTags(%q) = %#v, want %q", tt.in, got, tt.want)
		}
		if !slices.Equal(in, tt.in) {
			t.Errorf("NormalizeTags(%q) changed its argument to %q", tt.in, in)
		}
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"10MB", 10_000_000, true},
		{"512KiB", 512 << 10, true},
		{"1.5GiB", 3 << 29, true},
		{"4096", 4096, true},
		{" 2 kb ", 2000, true},
		{"3m", 3_000_000, true},
		{"", 0, false},
		{"-1", 0, false},
		{"-1MB", 0, false},
		{"NaN", 0, false},
		{"ten", 0, false},
		{"fast", 0, false},
		{"1e300", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v, want %d, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}
