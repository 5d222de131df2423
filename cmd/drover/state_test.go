package main

import (
	"strings"
	"testing"

	fleetdocs "github.com/drover-dev/drover/internal/fleet"
)

func TestParseState(t *testing.T) {
	tests := []struct {
		name, yaml, wantErr string
		apps                int
	}{
		{"contract shape", "id: device-1\nsystemtags: [linux, amd64]\napps:\n  - name: com.example:openvpn\n    version: 1.2.0\n    tags: []\n", "", 1},
		{"constraint and extras", "id: d\napps:\n  - name: com.example:a\n    version: \">=1.0.0, <2.0.0\"\n    instance: blue\n    params: {port: 8081}\n    purge: true\n", "", 1},
		{"no apps", "id: d\napps: []\n", "", 0},
		{"unknown field", "id: d\napps:\n  - name: com.example:a\n    colour: red\n", "colour", 0},
		{"unknown top field", "id: d\nowner: me\napps: []\n", "owner", 0},
		{"no id", "apps: []\n", "no id", 0},
		{"bad name", "id: d\napps:\n  - name: openvpn\n", "group:name", 0},
		{"empty", "", "empty", 0},
		{"second document unknown field", "id: d\napps: []\n---\nid: e\ncolour: red\n", "colour", 0},
		{"not yaml", "id: [d\n", "malformed", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			docs, err := fleetdocs.ParseDocuments([]byte(tt.yaml))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseState(%q) = %v, want an error mentioning %q", tt.yaml, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseState(%q) = %v", tt.yaml, err)
			}
			if st := docs[0]; len(docs) != 1 || len(st.Apps) != tt.apps {
				t.Errorf("parseState(%q) has %d apps, want %d", tt.yaml, len(st.Apps), tt.apps)
			}
		})
	}
}

func TestParseStates(t *testing.T) {
	sts, err := fleetdocs.ParseDocuments([]byte("id: a\napps: []\n---\nid: b\napps:\n  - name: com.example:x\n"))
	if err != nil || len(sts) != 2 || sts[0].ID != "a" || sts[1].ID != "b" || len(sts[1].Apps) != 1 {
		t.Fatalf("parseStates(two documents) = %+v, %v", sts, err)
	}
	if _, err := fleetdocs.ParseDocuments([]byte("id: a\napps: []\n---\nid: a\napps: []\n")); err == nil || !strings.Contains(err.Error(), "two desired states") {
		t.Errorf("parseStates(the same device twice) = %v, want an error", err)
	}
}

// FuzzParseState: the desired-state YAML is outside input; no input may
// panic, and what parses has an id and well-formed names.
func FuzzParseState(f *testing.F) {
	f.Add([]byte("id: device-1\napps:\n  - name: com.example:openvpn\n    version: 1.2.0\n"))
	f.Add([]byte("id: d\napps: [{name: a:b, params: {x: [1, 2]}}]\n"))
	f.Add([]byte("&a [*a]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		docs, err := fleetdocs.ParseDocuments(data)
		if err != nil {
			return
		}
		for _, st := range docs {
			if st.ID == "" && st.Group == "" {
				t.Errorf("parsed a state with no id from %q", data)
			}
			for _, a := range st.Apps {
				if !strings.Contains(a.Name, ":") {
					t.Errorf("parsed app name %q from %q", a.Name, data)
				}
			}
		}
	})
}
