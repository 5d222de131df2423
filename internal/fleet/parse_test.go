package fleet

import (
	"strings"
	"testing"

	"github.com/drover-dev/drover/internal/api"
)

func TestParseDocuments(t *testing.T) {
	tests := []struct {
		name, yaml, wantErr string
		kinds               string // kinds of the documents, by initial
	}{
		{"mixed", "group: prod-web\nselector: \"env=prod,role in (web,edge),!canary\"\napps:\n  - {name: com.example:web, version: \"^1.2\", params: {port: 8081}}\n---\nid: web-1\napps: []\n", "", "gd"},
		{"every device", "group: all\nselector: \"\"\napps: []\n", "", "g"},
		{"state get output", "group: all\nselector: \"\"\napps:\n  - name: com.example:web\n    version: ^1\npinned:\n  - {name: com.example:web, constraint: ^1, version: 1.2.0}\n", "", "g"},
		{"device with systemtags", "id: d\nsystemtags: [linux]\napps: []\n", "", "d"},
		{"group without selector", "group: web\napps: []\n", `group web: no selector`, ""},
		{"bad group name", "group: Web_1\nselector: \"\"\n", `group "Web_1": want a name`, ""},
		{"bad selector", "group: web\nselector: \"env in prod\"\n", `group web: selector "env in prod": want '(' after "in" at column 8`, ""},
		{"both kinds", "id: d\ngroup: g\nselector: \"\"\n", "names both", ""},
		{"device with selector", "id: d\nselector: a\n", "has no selector", ""},
		{"neither", "apps: []\n", "no id", ""},
		{"unknown field", "id: d\napps:\n  - name: com.example:a\n    versoin: 1\n", `unknown field "versoin"`, ""},
		{"twice", "group: a\nselector: \"\"\n---\ngroup: a\nselector: x\n", "group a has two documents", ""},
		{"empty", "", "empty", ""},
		{"wrong type", "id: d\napps: {name: x}\n", "line 2: a mapping where a list is wanted", ""},
		{"a string", "0\n00\n", "where a mapping is wanted", ""},
		{"group with init", "group: edge\nselector: role=edge\ninit:\n  - {name: com.example:join, version: \"^1\", run: bin/join}\napps: []\n", "", "g"},
		{"init in a device document", "id: d\ninit:\n  - {name: com.example:join, run: bin/join}\n", "d: a device document has no init entries", ""},
		{"init without run", "group: g\nselector: \"\"\ninit:\n  - {name: com.example:join}\n", "group g: init com.example:join: no run", ""},
		{"init absolute run", "group: g\nselector: \"\"\ninit:\n  - {name: com.example:join, run: /bin/sh}\n", `run: path "/bin/sh" is absolute`, ""},
		{"init run with ..", "group: g\nselector: \"\"\ninit:\n  - {name: com.example:join, run: bin/../../x}\n", `has a ".." element`, ""},
		{"init bad name", "group: g\nselector: \"\"\ninit:\n  - {name: join, run: bin/join}\n", "group g: init[0]:", ""},
		{"init twice", "group: g\nselector: \"\"\ninit:\n  - {name: a:b, run: x}\n  - {name: a:b, run: y}\n", "init a:b: listed twice", ""},
		{"init unknown field", "group: g\nselector: \"\"\ninit:\n  - {name: a:b, run: x, timeout: 5}\n", `unknown field "timeout"`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			docs, err := ParseDocuments([]byte(tt.yaml))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("ParseDocuments = %v, want one line with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseDocuments = %v", err)
			}
			var kinds string
			for _, d := range docs {
				kinds += d.Kind[:1]
			}
			if kinds != tt.kinds {
				t.Errorf("kinds = %q, want %q", kinds, tt.kinds)
			}
		})
	}
}

// FuzzParseDocuments: a state file is outside input; nothing may panic,
// and what parses is a valid set of documents.
func FuzzParseDocuments(f *testing.F) {
	f.Add([]byte("group: prod-web\nselector: \"env=prod,!canary\"\napps:\n  - {name: com.example:web, version: \"^1.2\"}\n---\nid: d\napps: []\n"))
	f.Add([]byte("id: d\napps: [{name: a:b, params: {x: [1, 2]}}]\n"))
	f.Add([]byte("&a [*a]"))
	f.Add([]byte("group: g\nselector: \"\"\ninit:\n  - {name: a:b, version: ^1, run: bin/x}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		docs, err := ParseDocuments(data)
		if err != nil {
			if strings.Contains(err.Error(), "\n") || strings.Contains(err.Error(), "fleet.") || strings.Contains(err.Error(), "api.") {
				t.Errorf("error with a newline or a Go type name: %q", err)
			}
			return
		}
		if _, err := Compile(docs); err != nil {
			t.Errorf("parsed documents do not compile: %v", err)
		}
		for _, d := range docs {
			if d.Kind != api.DocDevice && d.Kind != api.DocGroup {
				t.Errorf("kind %q", d.Kind)
			}
		}
	})
}
