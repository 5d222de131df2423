package pkgfile

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/drover-dev/drover/internal/api"
)

func ptr(f float64) *float64 { return &f }

func ptrInt(n int) *int { return &n }

func TestParseSpec(t *testing.T) {
	good := []struct {
		name string
		yaml string
		want *Spec
	}{
		{
			name: "least form",
			yaml: "group: com.example\nname: openvpn\nversion: 1.2.0\n",
			want: &Spec{Group: "com.example", Name: "openvpn", Version: "1.2.0", Tags: []string{}, Install: "prefix"},
		},
		{
			name: "everything",
			yaml: `
group: com.example
name: openvpn
version: 1.2.0-rc.1
tags: [systemd, linux, linux]
install: root
depends:
  - {name: com.example:core, version: ">=1.0.0, <2.0.0"}
  - {name: org.other:lib}
params:
  port:  {type: int, default: 8080, min: 1, max: 65535, description: "listen port"}
  mode:  {type: string, default: fast, allowed: [fast, safe]}
  token: {type: string, required: true, secret: true}
  ratio: {type: float, default: 1}
  debug: {type: bool, default: false}
  hosts: {type: list, default: [a, 2]}
  plain: {default: text}
templates:
  - {src: templates/app.conf.tmpl, dest: etc/app.conf}
services:
  - name: web
    start: bin/start
    stop: bin/stop
    health: bin/health
    restart: always
  - {name: worker_2, start: bin/worker}
  - {name: api, start: bin/api, ports: [8081, 9090], startup: 45s, console: {max-size: 1MiB, keep: 2}}
`,
			want: &Spec{
				Group: "com.example", Name: "openvpn", Version: "1.2.0-rc.1",
				Tags: []string{"linux", "systemd"}, Install: "root",
				Depends: []api.Dependency{{Name: "com.example:core", Version: ">=1.0.0, <2.0.0"}, {Name: "org.other:lib"}},
				Params: map[string]api.Param{
					"port":  {Type: "int", Default: int64(8080), Min: ptr(1), Max: ptr(65535), Description: "listen port"},
					"mode":  {Type: "string", Default: "fast", Allowed: []any{"fast", "safe"}},
					"token": {Type: "string", Required: true, Secret: true},
					"ratio": {Type: "float", Default: 1.0},
					"debug": {Type: "bool", Default: false},
					"hosts": {Type: "list", Default: []any{"a", int64(2)}},
					"plain": {Type: "string", Default: "text"},
				},
				Templates: []api.Template{{Src: "templates/app.conf.tmpl", Dest: "etc/app.conf"}},
				Services: []api.Service{
					{Name: "web", Start: "bin/start", Stop: "bin/stop", Health: "bin/health", Restart: "always"},
					{Name: "worker_2", Start: "bin/worker", Restart: "on-failure"},
					{Name: "api", Start: "bin/api", Restart: "on-failure", Ports: []int{8081, 9090}, Startup: "45s",
						Console: &api.ServiceConsole{MaxSize: "1MiB", Keep: ptrInt(2)}},
				},
			},
		},
	}
	for _, tc := range good {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseSpec([]byte(tc.yaml))
			if err != nil {
				t.Fatalf("ParseSpec() error = %v", err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("ParseSpec() mismatch (-want +got):\n%s", diff)
			}
		})
	}

	const head = "group: com.example\nname: p\nversion: 1.0.0\n"
	bad := []struct {
		name string
		yaml string
		want []string // substrings of the error
	}{
		{"empty", "", []string{"empty"}},
		{"not a mapping", "- a\n", []string{"cannot unmarshal"}},
		{"unknown field", head + "colour: red\n", []string{"line 4", "colour"}},
		{"unknown nested field", head + "services:\n  - {name: a, start: b, user: root}\n", []string{"line 5", "user"}},
		{"template digest not settable", head + "templates:\n  - {src: a, dest: b, digest: x}\n", []string{"digest"}},
		{"duplicate key", head + "name: q\n", []string{"already defined"}},
		{"two documents", head + "---\n" + head, []string{"one YAML document"}},
		{"missing group", "name: p\nversion: 1.0.0\n", []string{"group", "required"}},
		{"missing version", "group: g\nname: p\n", []string{"version", "required"}},
		{"bad group", "group: -com\nname: p\nversion: 1.0.0\n", []string{"line 1", "group"}},
		{"bad name", "group: com\nname: 'a b'\nversion: 1.0.0\n", []string{"line 2", "name"}},
		{"bad version", "group: com\nname: p\nversion: 1.2\n", []string{"line 3", "version", "1.2"}},
		{"bad tag", head + "tags: [linux, 'a b']\n", []string{"line 4", "tags[1]"}},
		{"bad install mode", head + "install: opt\n", []string{"line 4", "install", "opt"}},
		{"bad dep name", head + "depends:\n  - {name: core}\n", []string{"line 5", "depends[0]", "group:name"}},
		{"bad dep constraint", head + "depends:\n  - {name: com.example:core, version: '>>1'}\n", []string{"line 5", "constraint"}},
		{"dep twice", head + "depends:\n  - {name: a:b}\n  - {name: a:b}\n", []string{"depends[1]", "twice"}},
		{"dep on itself", head + "depends:\n  - {name: com.example:p}\n", []string{"itself"}},
		{"bad param type", head + "params:\n  x: {type: map}\n", []string{"line 5", "params.x", "type"}},
		{"bad param name", head + "params:\n  x-y: {type: string}\n", []string{"parameter name"}},
		{"default wrong type", head + "params:\n  port: {type: int, default: eighty}\n", []string{"params.port", "not an int"}},
		{"default not integral", head + "params:\n  port: {type: int, default: 1.5}\n", []string{"not an int"}},
		{"default above max", head + "params:\n  port: {type: int, default: 70000, max: 65535}\n", []string{"above max"}},
		{"default below min", head + "params:\n  r: {type: float, default: -1, min: 0}\n", []string{"below min"}},
		{"default not allowed", head + "params:\n  m: {type: string, default: slow, allowed: [fast, safe]}\n", []string{"not one of the allowed"}},
		{"allowed wrong type", head + "params:\n  m: {type: int, allowed: [1, two]}\n", []string{"allowed value"}},
		{"min above max", head + "params:\n  m: {type: int, min: 5, max: 1}\n", []string{"min 5 is above max 1"}},
		{"bounds on string", head + "params:\n  m: {type: string, min: 1}\n", []string{"only to int and float"}},
		{"required with default", head + "params:\n  m: {type: string, required: true, default: x}\n", []string{"required"}},
		{"bool default string", head + "params:\n  b: {type: bool, default: 'yes'}\n", []string{"not a bool"}},
		{"list default map", head + "params:\n  l: {type: list, default: [{a: 1}]}\n", []string{"list element"}},
		{"template dest absolute", head + "templates:\n  - {src: t, dest: /etc/x}\n", []string{"dest", "absolute"}},
		{"template dest dotdot", head + "templates:\n  - {src: t, dest: etc/../../x}\n", []string{"dest", `".."`}},
		{"template src dotdot", head + "templates:\n  - {src: ../t, dest: x}\n", []string{"src"}},
		{"template dest twice", head + "templates:\n  - {src: a, dest: x}\n  - {src: b, dest: x}\n", []string{"two templates"}},
		{"service no start", head + "services:\n  - {name: web}\n", []string{"services[0]", "start is required"}},
		{"service bad name", head + "services:\n  - {name: 'a b', start: x}\n", []string{"name"}},
		{"service twice", head + "services:\n  - {name: a, start: x}\n  - {name: a, start: y}\n", []string{"services[1]", "two services"}},
		{"service bad restart", head + "services:\n  - {name: a, start: x, restart: sometimes}\n", []string{"restart"}},
		{"service start absolute", head + "services:\n  - {name: a, start: /bin/sh}\n", []string{"absolute"}},
		{"service port 0", head + "services:\n  - {name: a, start: x, ports: [0]}\n", []string{"services[0]", "ports: 0", "1 to 65535"}},
		{"service port too big", head + "services:\n  - {name: a, start: x, ports: [70000]}\n", []string{"ports: 70000"}},
		{"service port twice", head + "services:\n  - {name: a, start: x, ports: [80, 80]}\n", []string{"listed twice"}},
		{"service port not a number", head + "services:\n  - {name: a, start: x, ports: [http]}\n", []string{"line 5"}},
		{"service bad startup", head + "services:\n  - {name: a, start: x, ports: [80], startup: soon}\n", []string{"startup \"soon\""}},
		{"service startup negative", head + "services:\n  - {name: a, start: x, ports: [80], startup: -5s}\n", []string{"startup"}},
		{"service startup without ports", head + "services:\n  - {name: a, start: x, startup: 5s}\n", []string{"declare ports"}},
		{"console bad size", head + "services:\n  - {name: a, start: x, console: {max-size: big}}\n", []string{"max-size \"big\""}},
		{"console size too small", head + "services:\n  - {name: a, start: x, console: {max-size: 10}}\n", []string{"at least 1kB"}},
		{"console keep 0", head + "services:\n  - {name: a, start: x, console: {keep: 0}}\n", []string{"keep 0"}},
		{"console unknown field", head + "services:\n  - {name: a, start: x, console: {max_size: 1MB}}\n", []string{"max_size"}},
		{"param secret not bool", head + "params:\n  t: {type: string, secret: maybe}\n", []string{"line 5"}},
		{"too large", head + "#" + strings.Repeat("x", maxSpecSize), []string{"larger"}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseSpec([]byte(tc.yaml))
			if err == nil {
				t.Fatalf("ParseSpec() = %+v, want error", got)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("ParseSpec() error = %v, want one wrapping ErrInvalid", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("ParseSpec() error = %q, want it to contain %q", err, w)
				}
			}
		})
	}
}
