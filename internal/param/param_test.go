package param

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/drover-dev/drover/internal/api"
)

func f64(v float64) *float64 { return &v }

var decls = map[string]api.Param{
	"port":  {Type: TypeInt, Default: int64(8080), Min: f64(1), Max: f64(65535), Description: "listen port"},
	"mode":  {Type: TypeString, Default: "fast", Allowed: []any{"fast", "safe"}},
	"token": {Type: TypeString, Required: true, Description: "API token"},
	"ratio": {Type: TypeFloat, Default: 0.5, Min: f64(0), Max: f64(1)},
	"debug": {Type: TypeBool, Default: false},
	"hosts": {Type: TypeList},
}

func TestResolvePrecedence(t *testing.T) {
	tok := map[string]any{"token": "t"}
	tests := []struct {
		name   string
		layers []Layer
		want   map[string]any
	}{
		{"defaults only", []Layer{{"entry", tok}},
			map[string]any{"port": int64(8080), "mode": "fast", "token": "t", "ratio": 0.5, "debug": false}},
		{"fleet over default", []Layer{{"fleet", map[string]any{"port": 81, "token": "f"}}},
			map[string]any{"port": int64(81), "mode": "fast", "token": "f", "ratio": 0.5, "debug": false}},
		{"device over fleet", []Layer{{"fleet", map[string]any{"port": 81, "token": "f"}}, {"device", map[string]any{"port": 82}}},
			map[string]any{"port": int64(82), "mode": "fast", "token": "f", "ratio": 0.5, "debug": false}},
		{"entry over device", []Layer{{"fleet", map[string]any{"port": 81}}, {"device", map[string]any{"port": 82, "token": "d"}}, {"entry", map[string]any{"port": 83}}},
			map[string]any{"port": int64(83), "mode": "fast", "token": "d", "ratio": 0.5, "debug": false}},
		{"JSON numbers", []Layer{{"entry", map[string]any{"port": float64(9000), "ratio": float64(1), "token": "t"}}},
			map[string]any{"port": int64(9000), "mode": "fast", "token": "t", "ratio": 1.0, "debug": false}},
		{"command-line strings", []Layer{{"command line", map[string]any{"port": "9001", "debug": "true", "hosts": "a, b", "token": "t"}}},
			map[string]any{"port": int64(9001), "mode": "fast", "token": "t", "ratio": 0.5, "debug": true, "hosts": []any{"a", "b"}}},
		{"YAML list", []Layer{{"entry", map[string]any{"hosts": []any{"x", 1}, "token": "t"}}},
			map[string]any{"port": int64(8080), "mode": "fast", "token": "t", "ratio": 0.5, "debug": false, "hosts": []any{"x", int64(1)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Resolve(decls, tt.layers...)
			if err != nil {
				t.Fatalf("Resolve() error %v", err)
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("Resolve() mismatch (-want +got):\n%s", d)
			}
		})
	}
}

func TestResolveErrors(t *testing.T) {
	tests := []struct {
		name    string
		layers  []Layer
		param   string
		kind    error
		message string
	}{
		{"missing required", nil, "token", ErrMissing, "parameter token: required parameter has no value (API token)"},
		{"above max", []Layer{{"device", map[string]any{"token": "t", "port": 70000}}}, "port", ErrInvalid, "parameter port (device value): invalid value: 70000 is above max 65535"},
		{"below min", []Layer{{"entry", map[string]any{"token": "t", "port": 0}}}, "port", ErrInvalid, "below min"},
		{"wrong type", []Layer{{"fleet", map[string]any{"token": "t", "port": "eighty"}}}, "port", ErrInvalid, `parameter port (fleet value): invalid value: "eighty" is not an int`},
		{"fraction for int", []Layer{{"entry", map[string]any{"token": "t", "port": 80.5}}}, "port", ErrInvalid, "is not an int"},
		{"not allowed", []Layer{{"entry", map[string]any{"token": "t", "mode": "slow"}}}, "mode", ErrInvalid, "slow is not one of the allowed values (fast, safe)"},
		{"undeclared", []Layer{{"entry", map[string]any{"token": "t", "colour": "red"}}}, "colour", ErrUndeclared, "undeclared parameter"},
		{"bool", []Layer{{"entry", map[string]any{"token": "t", "debug": "maybe"}}}, "debug", ErrInvalid, "not a bool"},
		{"string for string only", []Layer{{"entry", map[string]any{"token": 5}}}, "token", ErrInvalid, "5 is not a string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Resolve(decls, tt.layers...)
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("Resolve() = %v, want an *Error", err)
			}
			if pe.Param != tt.param || !errors.Is(err, tt.kind) {
				t.Errorf("Resolve() = %v (param %s), want param %s, %v", err, pe.Param, tt.param, tt.kind)
			}
			if !strings.Contains(err.Error(), tt.message) {
				t.Errorf("Resolve() = %q, want it to contain %q", err, tt.message)
			}
		})
	}
}

func TestCheckDecl(t *testing.T) {
	tests := []struct {
		name string
		p    api.Param
		bad  string
	}{
		{"ok", api.Param{Type: TypeInt, Default: float64(3), Min: f64(1)}, ""},
		{"bad type", api.Param{Type: "date"}, "type"},
		{"min on string", api.Param{Type: TypeString, Min: f64(1)}, "min and max"},
		{"default out of bounds", api.Param{Type: TypeInt, Default: 0, Min: f64(1)}, "default"},
		{"required with default", api.Param{Type: TypeInt, Default: 1, Required: true}, "required"},
		{"default not allowed", api.Param{Type: TypeString, Default: "x", Allowed: []any{"y"}}, "allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := CheckDecl("p", tt.p)
			if tt.bad == "" {
				if err != nil || got.Default != int64(3) {
					t.Errorf("CheckDecl() = %v, %v, want default int64(3)", got, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.bad) {
				t.Errorf("CheckDecl() error = %v, want one about %q", err, tt.bad)
			}
		})
	}
}

func TestStringsAndDigest(t *testing.T) {
	got := Strings(map[string]any{"a": int64(1), "b": 2.5, "c": []any{"x", int64(2)}, "d": true, "e": float64(7)})
	want := map[string]string{"a": "1", "b": "2.5", "c": "x,2", "d": "true", "e": "7"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("Strings() mismatch (-want +got):\n%s", d)
	}
	if Digest(nil) != "" {
		t.Errorf("Digest(nil) = %q, want empty", Digest(nil))
	}
	if Digest(want) == Digest(map[string]string{"a": "2"}) {
		t.Errorf("Digest of different values is the same")
	}
}

func TestRender(t *testing.T) {
	d := Data{Params: map[string]any{"port": int64(8080)}, Device: Device{ID: "dev1", Labels: map[string]string{"env": "prod"}},
		Package: Package{Name: "com.example:web", Version: "1.0.0"}, Instance: "blue"}
	out, err := Render("t", []byte("{{.Device.ID}} {{.Device.Labels.env}} {{.Package.Version}} {{.Instance}} {{.Params.port}}"), d)
	if err != nil || string(out) != "dev1 prod 1.0.0 blue 8080" {
		t.Errorf("Render() = %q, %v", out, err)
	}
	for _, src := range []string{"{{.Params.nope}}", "{{.Device.Labels.region}}", "{{.Nope}}", "{{"} {
		if _, err := Render("t", []byte(src), d); err == nil {
			t.Errorf("Render(%q) = nil error, want one", src)
		}
	}
}
