package yamlerr

import (
	"bytes"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

type app struct {
	Name string   `yaml:"name"`
	Tags []string `yaml:"tags"`
	N    int      `yaml:"n"`
}

type doc struct {
	ID   string `yaml:"id"`
	Apps []app  `yaml:"apps"`
}

func decode(t *testing.T, in string) error {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewReader([]byte(in)))
	dec.KnownFields(true)
	var d doc
	return Describe(dec.Decode(&d), 2)
}

func TestDescribe(t *testing.T) {
	for _, tt := range []struct {
		in, want string
	}{
		{"id: a\napps:\n  - name: x\n    versoin: 1\n", `document 2, line 4: unknown field "versoin"`},
		{"id: a\napps:\n  - name: x\n    tags: linux\n", `document 2, line 4: "linux" where a list is wanted`},
		{"id: a\napps:\n  - name: x\n    n: many\n", `document 2, line 4: "many" where a number is wanted`},
		{"id: [a]\n", `document 2, line 1: a list where a string is wanted`},
		{"id: a\n  b: :\n", `document 2, line 2: mapping values are not allowed in this context`},
	} {
		err := decode(t, tt.in)
		if err == nil || err.Error() != tt.want {
			t.Errorf("Describe(%q) = %v, want %s", tt.in, err, tt.want)
		}
		if err != nil && (strings.Contains(err.Error(), "main.") || strings.Contains(err.Error(), "yamlerr.")) {
			t.Errorf("Describe(%q) = %v: names a Go type", tt.in, err)
		}
	}
	if Describe(nil, 1) != nil {
		t.Error("Describe(nil) != nil")
	}
}

func FuzzDescribe(f *testing.F) {
	f.Add("id: a\napps:\n  - name: x\n    versoin: 1\n")
	f.Add("id: [a]\n")
	f.Fuzz(func(t *testing.T, in string) {
		dec := yaml.NewDecoder(bytes.NewReader([]byte(in)))
		dec.KnownFields(true)
		var d doc
		if err := Describe(dec.Decode(&d), 1); err != nil && strings.Contains(err.Error(), "yamlerr.") {
			t.Errorf("Describe(%q) = %v: names a Go type", in, err)
		}
	})
}
