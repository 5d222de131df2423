package pkgfile

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/drover-dev/drover/internal/api"
)

func TestParseSpecNetChecks(t *testing.T) {
	head := "group: com.example\nname: web\nversion: 1.0.0\nservices:\n  - name: web\n    start: bin/start\n    net-checks:\n"
	for _, tc := range []struct {
		name, checks string
		want         []api.NetCheck
		err          string
	}{
		{"tcp and http", "      - {tcp: 8080}\n      - {http: /healthz, port: 8081}\n", []api.NetCheck{{TCP: 8080}, {HTTP: "/healthz", Port: 8081}}, ""},
		{"both", "      - {tcp: 8080, http: /x, port: 1}\n", nil, "not both"},
		{"none", "      - {port: 80}\n", nil, "want tcp: PORT"},
		{"tcp with port", "      - {tcp: 80, port: 81}\n", nil, "port: is for http checks"},
		{"bad port", "      - {tcp: 70000}\n", nil, "want 1 to 65535"},
		{"http no port", "      - {http: /healthz}\n", nil, "port 0"},
		{"relative path", "      - {http: healthz, port: 80}\n", nil, "absolute URL path"},
		{"space in path", "      - {http: \"/a b\", port: 80}\n", nil, "absolute URL path"},
		{"twice", "      - {tcp: 80}\n      - {tcp: 80}\n", nil, "tcp:80 listed twice"},
		{"unknown key", "      - {udp: 53}\n", nil, "unknown field udp"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec, err := ParseSpec([]byte(head + tc.checks))
			if tc.err != "" {
				if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ParseSpec() = %v, want ErrInvalid with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseSpec() = %v", err)
			}
			if diff := cmp.Diff(tc.want, spec.Services[0].NetChecks); diff != "" {
				t.Errorf("NetChecks (-want +got):\n%s", diff)
			}
			m := baseManifest()
			m.Services = spec.Services
			if err := ValidateManifest(m); err != nil {
				t.Errorf("ValidateManifest(with the checks) = %v", err)
			}
		})
	}
}
