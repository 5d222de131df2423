package selector

import (
	"errors"
	"strings"
	"testing"
)

func TestParseAndMatch(t *testing.T) {
	web := map[string]string{"env": "prod", "role": "web"}
	canary := map[string]string{"env": "prod", "role": "edge", "canary": "yes"}
	dev := map[string]string{"env": "dev"}
	none := map[string]string{}
	tests := []struct {
		sel   string
		terms int
		canon string
		match []map[string]string
		miss  []map[string]string
	}{
		{"", 0, "", []map[string]string{web, dev, none}, nil},
		{"   ", 0, "", []map[string]string{none}, nil},
		{"env=prod", 1, "env=prod", []map[string]string{web, canary}, []map[string]string{dev, none}},
		{"env==prod", 1, "env=prod", []map[string]string{web}, []map[string]string{dev}},
		{"env!=prod", 1, "env!=prod", []map[string]string{dev, none}, []map[string]string{web}},
		{"role in (web,edge)", 1, "role in (edge,web)", []map[string]string{web, canary}, []map[string]string{dev, none}},
		{"role in(web)", 1, "role in (web)", []map[string]string{web}, []map[string]string{canary}},
		{"role notin (web)", 1, "role notin (web)", []map[string]string{canary, dev, none}, []map[string]string{web}},
		{"canary", 1, "canary", []map[string]string{canary}, []map[string]string{web}},
		{"!canary", 1, "!canary", []map[string]string{web, none}, []map[string]string{canary}},
		{"env=prod,role in (web,edge),!canary", 3, "env=prod,role in (edge,web),!canary", []map[string]string{web}, []map[string]string{canary, dev}},
		{" env = prod , ! canary ", 2, "env=prod,!canary", []map[string]string{web}, []map[string]string{canary}},
		{"example.com/tier=a-1", 1, "example.com/tier=a-1", []map[string]string{{"example.com/tier": "a-1"}}, []map[string]string{none}},
		{"env=", 1, "env=", []map[string]string{{"env": ""}}, []map[string]string{web, none}},
	}
	for _, tt := range tests {
		s, err := Parse(tt.sel)
		if err != nil {
			t.Errorf("Parse(%q) = %v", tt.sel, err)
			continue
		}
		if s.Terms() != tt.terms {
			t.Errorf("Parse(%q).Terms() = %d, want %d", tt.sel, s.Terms(), tt.terms)
		}
		if s.String() != tt.canon {
			t.Errorf("Parse(%q).String() = %q, want %q", tt.sel, s.String(), tt.canon)
		}
		for _, l := range tt.match {
			if !s.Matches(l) {
				t.Errorf("Parse(%q).Matches(%v) = false, want true", tt.sel, l)
			}
		}
		for _, l := range tt.miss {
			if s.Matches(l) {
				t.Errorf("Parse(%q).Matches(%v) = true, want false", tt.sel, l)
			}
		}
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		sel  string
		want string // the one-line message
	}{
		{"env=prod,", `selector "env=prod,": want a label key, got the end at column 10`},
		{",env", `selector ",env": want a label key, got ',' at column 1`},
		{"env prod", `selector "env prod": want =, ==, !=, in or notin after "env" at column 5`},
		{"role in web", `selector "role in web": want '(' after "in" at column 9`},
		{"role in (web", `selector "role in (web": want ')' to close the list of "role" at column 13`},
		{"role in ()", `selector "role in ()": want a value in the list of "role" at column 10`},
		{"role in (a;b)", `selector "role in (a;b)": want ',' or ')' in the list of "role" at column 11`},
		{"env=prod;x", `selector "env=prod;x": unexpected ';' in the value of "env" at column 9`},
		{"-env=prod", `selector "-env=prod": label key "-env" must start and end with a letter or digit at column 1`},
		{"!=prod", `selector "!=prod": want a label key before '!=' at column 1`},
		{"env=prod role=web", `selector "env=prod role=web": want ',' between terms at column 10`},
		{"a=b=c", `selector "a=b=c": unexpected '=' in the value of "a" at column 4`},
	}
	for _, tt := range tests {
		_, err := Parse(tt.sel)
		var pe *Error
		if !errors.As(err, &pe) {
			t.Errorf("Parse(%q) = %v, want an *Error", tt.sel, err)
			continue
		}
		if err.Error() != tt.want {
			t.Errorf("Parse(%q) = %q, want %q", tt.sel, err, tt.want)
		}
	}
	if _, err := Parse(strings.Repeat("a", maxLen+1)); err == nil {
		t.Errorf("Parse(long) = nil, want an error")
	}
}

// FuzzParse checks that any input parses or fails cleanly, and that the
// canonical form of a parsed selector parses to the same selector.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"", "env=prod", "env=prod,role in (web,edge),!canary", "k notin (a, b)", "x", "!x", "a==b", "a!=b", "(", "a in (", "a=b,,c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sel, err := Parse(s)
		if err != nil {
			if strings.Contains(err.Error(), "\n") && !strings.Contains(s, "\n") {
				t.Fatalf("Parse(%q) error has a newline: %q", s, err)
			}
			return
		}
		again, err := Parse(sel.String())
		if err != nil {
			t.Fatalf("Parse(%q) canonical %q does not parse: %v", s, sel.String(), err)
		}
		if again.String() != sel.String() || again.Terms() != sel.Terms() {
			t.Fatalf("Parse(%q): canonical %q reparses as %q", s, sel.String(), again.String())
		}
		labels := map[string]string{}
		for _, term := range sel.List() {
			if len(term.Values) > 0 {
				labels[term.Key] = term.Values[0]
			}
		}
		_ = sel.Matches(labels) // must not panic
	})
}
