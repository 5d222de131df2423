package agentfile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParse(t *testing.T) {
	full := map[string]string{
		"addr": "https://fleet.example:8443", "ca-cert": "/etc/drover/ca.crt",
		"client-cert": "/home/tls/node.crt", "client-key": "/home/tls/node.key",
		"tags": "edge,lab", "labels": "rack=a1,env=test",
		"software-root": "/home/software", "runtime-root": "/var/lib/drover/runtime", "root": "/",
		"health-interval": "30s", "health-timeout": "10s", "health-start-delay": "0s", "health-consecutive": "3",
		"report-interval": "1m", "hook-timeout": "2m", "log-level": "debug",
		"blob-mirror": "http://m1/blobs,http://m2/sha256/{prefix}/{digest}", "max-download-rate": "10MB",
	}
	tests := []struct {
		file string
		want map[string]string
		// wantErr are parts of the one-line error: file, line, key, why.
		wantErr []string
	}{
		{"full.yaml", full, nil},
		{"empty.yaml", map[string]string{}, nil},
		{"unknown-key.yaml", nil, []string{"unknown-key.yaml:2:", `unknown key "log_levl"`}},
		{"tags-not-list.yaml", nil, []string{"tags-not-list.yaml:2: tags:", "want a list"}},
		{"labels-not-map.yaml", nil, []string{"labels-not-map.yaml:1: labels:", "want a mapping"}},
		{"bad-duration.yaml", nil, []string{"bad-duration.yaml:3: health_interval:", `"30" is not a duration`}},
		{"zero-interval.yaml", nil, []string{"zero-interval.yaml:1: report_interval:", "must be positive"}},
		{"consecutive-not-int.yaml", nil, []string{"consecutive-not-int.yaml:1: health_consecutive:", "whole number"}},
		{"bad-log-level.yaml", nil, []string{"bad-log-level.yaml:1: log_level:", "want debug, info, warn or error"}},
		{"bad-label.yaml", nil, []string{"bad-label.yaml:2: labels:", "label env"}},
		{"bad-rate.yaml", nil, []string{"bad-rate.yaml:1: max_download_rate:", "10MB"}},
		{"twice.yaml", nil, []string{"twice.yaml:2: addr: given twice"}},
		{"null-value.yaml", nil, []string{"null-value.yaml:1: addr:", "want a single value"}},
		{"syntax.yaml", nil, []string{"syntax.yaml:", "line"}},
		{"not-mapping.yaml", nil, []string{"not-mapping.yaml:1:", "want a mapping of settings"}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join("testdata", tt.file)
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Parse(path, data, "/home")
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Parse(%s) = %v", tt.file, err)
				}
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("Parse(%s) (-want +got):\n%s", tt.file, diff)
				}
				return
			}
			if err == nil {
				t.Fatalf("Parse(%s) = %v, want an error", tt.file, got)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Parse(%s) error %q lacks %q", tt.file, err, w)
				}
			}
		})
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	vals := map[string]any{
		"addr": "https://fleet.example:8443", "client-cert": "/etc/drover/n.crt", "tags": []string{"edge", "yes"},
		"labels": map[string]string{"rack": "a1", "note": "true"}, "health-interval": "1m0s", "health-consecutive": 3,
		"log-level": "warn",
	}
	text, err := Marshal(vals, "Written by a test")
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse("agent.yaml", []byte(text), "/home")
	if err != nil {
		t.Fatalf("Parse(Marshal(...)) = %v; the file:\n%s", err, text)
	}
	want := map[string]string{"addr": "https://fleet.example:8443", "client-cert": "/etc/drover/n.crt", "tags": "edge,yes",
		"labels": "note=true,rack=a1", "health-interval": "1m0s", "health-consecutive": "3", "log-level": "warn"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Parse(Marshal(...)) (-want +got):\n%s\nthe file:\n%s", diff, text)
	}
}
