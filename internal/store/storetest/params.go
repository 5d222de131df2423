package storetest

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/drover-dev/drover/internal/store"
)

// paramsTests are the cases of the Params contract, run by Run.
var paramsTests = []struct {
	name string
	fn   func(t *testing.T, open func(t *testing.T) store.Store)
}{
	{"ParamValues", testParamValues},
	{"ParamDevices", testParamDevices},
}

func testParamDevices(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	if ids, err := s.ParamDevices(ctx); err != nil || ids == nil || len(ids) != 0 {
		t.Errorf("ParamDevices(none) = %v, %v, want an empty non-nil list", ids, err)
	}
	for _, dev := range []string{"", "dev-b", "dev-a", "dev-b"} {
		pkg := "org.a:app"
		if dev == "dev-b" {
			pkg = "org.a:other" + dev
		}
		if err := s.SetParamValues(ctx, dev, pkg, map[string]any{"port": float64(1)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SetParamValues(ctx, "dev-c", "org.a:app", map[string]any{"x": "y"}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetParamValues(ctx, "dev-c", "org.a:app", map[string]any{}); err != nil { // removes them
		t.Fatal(err)
	}
	ids, err := s.ParamDevices(ctx)
	if err != nil || strings.Join(ids, ",") != "dev-a,dev-b" {
		t.Errorf("ParamDevices = %v, %v, want [dev-a dev-b] (not the fleet, not a device whose values were removed)", ids, err)
	}
}

func testParamValues(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	const pkg = "com.example:web"
	got, err := s.ParamValues(ctx, "", pkg)
	if err != nil || got == nil || len(got) != 0 {
		t.Fatalf("ParamValues(fleet) of nothing = %v, %v, want empty map", got, err)
	}
	fleet := map[string]any{"port": float64(81), "mode": "safe", "hosts": []any{"a", "b"}}
	dev := map[string]any{"port": float64(82)}
	if err := s.SetParamValues(ctx, "", pkg, fleet); err != nil {
		t.Fatal(err)
	}
	if err := s.SetParamValues(ctx, "d1", pkg, dev); err != nil {
		t.Fatal(err)
	}
	if err := s.SetParamValues(ctx, "d1", "com.example:db", map[string]any{"size": "big"}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		device string
		want   map[string]any
	}{{"", fleet}, {"d1", dev}, {"d2", map[string]any{}}} {
		got, err := s.ParamValues(ctx, tt.device, pkg)
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(tt.want, got); d != "" {
			t.Errorf("ParamValues(%q) mismatch (-want +got):\n%s", tt.device, d)
		}
	}
	all, err := s.AllParamValues(ctx, "d1")
	if err != nil {
		t.Fatal(err)
	}
	wantAll := map[string]map[string]any{pkg: dev, "com.example:db": {"size": "big"}}
	if d := cmp.Diff(wantAll, all); d != "" {
		t.Errorf("AllParamValues(d1) mismatch (-want +got):\n%s", d)
	}
	// Replacing, then removing with an empty map.
	if err := s.SetParamValues(ctx, "", pkg, map[string]any{"mode": "fast"}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.ParamValues(ctx, "", pkg); !cmp.Equal(got, map[string]any{"mode": "fast"}) {
		t.Errorf("ParamValues after replace = %v, want mode=fast only", got)
	}
	if err := s.SetParamValues(ctx, "", pkg, map[string]any{}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.ParamValues(ctx, "", pkg); len(got) != 0 {
		t.Errorf("ParamValues after removal = %v, want empty", got)
	}
	if err := s.SetParamValues(ctx, "", "not a package", fleet); err == nil {
		t.Errorf("SetParamValues(bad package) = nil, want an error")
	}
}
