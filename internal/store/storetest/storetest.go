// Package storetest is the conformance suite every store.Store
// implementation runs: SQLite always, PostgreSQL when its test is given a
// database. One test function per rule of the contract.
package storetest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/store"
)

// Run runs the suite. open returns a new, empty store each time it is
// called and registers its Close with t.Cleanup.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, open func(t *testing.T) store.Store)
	}{
		{"PutBuildRules", testPutBuildRules},
		{"PutBuildConcurrentConflict", testPutBuildConcurrent},
		{"BuildsRoundTrip", testBuildsRoundTrip},
		{"BuildsOrder", testBuildsOrder},
		{"Manifest", testManifest},
		{"DeleteBuilds", testDeleteBuilds},
		{"Devices", testDevices},
		{"Desired", testDesired},
		{"AppendEvents", testAppendEvents},
		{"EventsFilter", testEventsFilter},
		{"EventsDefaultLimit", testEventsDefaultLimit},
		{"AppendEventsConcurrent", testAppendEventsConcurrent},
		{"EventCursorMissesNothing", testEventCursor},
		{"EventTextStorable", testEventText},
		{"CancelledContext", testCancelled},
	}
	tests = append(tests, outboxTests...)
	tests = append(tests, paramsTests...)
	tests = append(tests, trustTests...)
	tests = append(tests, commitTests...)
	tests = append(tests, documentTests...)
	tests = append(tests, rolloutTests...)
	tests = append(tests, sessionTests...)
	tests = append(tests, exportTests...)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, open) })
	}
}

var (
	ctx = context.Background()
	// t0 is not UTC on purpose: stores must keep the instant, not the zone.
	t0 = time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.FixedZone("CET", 3600))
)

// errInvalid in a table means: some error, but neither sentinel.
var errInvalid = errors.New("invalid input")

func checkErr(t *testing.T, call string, err, want error) {
	t.Helper()
	switch {
	case want == nil && err != nil:
		t.Errorf("%s = %v, want nil", call, err)
	case want == errInvalid:
		if err == nil || errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrConflict) {
			t.Errorf("%s = %v, want an invalid-input error", call, err)
		}
	case want != nil && !errors.Is(err, want):
		t.Errorf("%s = %v, want %v", call, err, want)
	}
}

// manifest returns manifest bytes unique to (coordinate, tags, variant)
// and their digest.
func manifest(coordinate string, tags []string, variant int) ([]byte, string) {
	b, _ := json.Marshal(map[string]any{"coordinate": coordinate, "tags": tags, "variant": variant})
	sum := sha256.Sum256(b)
	return b, hex.EncodeToString(sum[:])
}

// build returns a build of coordinate with tags and its manifest.
func build(coordinate string, tags []string, variant int) (api.Build, []byte) {
	m, d := manifest(coordinate, tags, variant)
	return api.Build{
		Coordinate: coordinate,
		Tags:       tags,
		Digest:     d,
		Install:    api.InstallPrefix,
		Files:      3 + variant,
		Size:       int64(1000 + variant),
		Pushed:     t0.Add(time.Duration(variant) * time.Minute),
	}, m
}

func mustPut(t *testing.T, s store.Store, b api.Build, m []byte) {
	t.Helper()
	if err := s.PutBuild(ctx, b, m); err != nil {
		t.Fatalf("PutBuild(%s %v) = %v", b.Coordinate, b.Tags, err)
	}
}

// describe lists builds as "coordinate [tags] variant-digest-prefix".
func describe(bs []api.Build) []string {
	out := []string{}
	for _, b := range bs {
		out = append(out, fmt.Sprintf("%s %v", b.Coordinate, b.Tags))
	}
	return out
}

func testPutBuildRules(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	first, firstM := build("org.a:app:1.0.0", []string{"linux", "amd64"}, 0)
	later := first
	later.Pushed = t0.Add(time.Hour)
	reordered := first
	reordered.Tags = []string{"amd64", "linux", "linux"}
	other, otherM := build("org.a:app:1.0.0", []string{"amd64", "linux"}, 1)
	arm, armM := build("org.a:app:1.0.0", []string{"linux", "arm64"}, 2)
	generic, genericM := build("org.a:app:1.0.0", nil, 3)
	stolenCoord := first
	stolenCoord.Coordinate = "org.a:app:1.0.1"
	stolenTags := first
	stolenTags.Tags = []string{"linux"}
	with := func(b api.Build, f func(*api.Build)) api.Build { f(&b); return b }

	steps := []struct {
		name string
		b    api.Build
		m    []byte
		want error
	}{
		{"first push", first, firstM, nil},
		{"same build again", later, firstM, nil},
		{"same build, tags reordered and repeated", reordered, firstM, nil},
		{"other digest, same coordinate and tags", other, otherM, store.ErrConflict},
		{"same coordinate, other tags", arm, armM, nil},
		{"same coordinate, no tags", generic, genericM, nil},
		{"same digest, other coordinate", stolenCoord, firstM, store.ErrConflict},
		{"same digest, other tags", stolenTags, firstM, store.ErrConflict},
		{"coordinate without version", with(other, func(b *api.Build) { b.Coordinate = "org.a:app" }), otherM, errInvalid},
		{"version not semantic", with(other, func(b *api.Build) { b.Coordinate = "org.a:app:latest" }), otherM, errInvalid},
		{"digest not hex", with(other, func(b *api.Build) { b.Digest = "XYZ" }), otherM, errInvalid},
		{"invalid tag", with(other, func(b *api.Build) { b.Coordinate = "org.a:app:9.0.0"; b.Tags = []string{"li nux"} }), otherM, errInvalid},
		{"empty manifest", with(other, func(b *api.Build) { b.Coordinate = "org.a:app:9.0.0" }), nil, errInvalid},
	}
	for _, st := range steps {
		err := s.PutBuild(ctx, st.b, st.m)
		checkErr(t, fmt.Sprintf("%s: PutBuild(%s %v)", st.name, st.b.Coordinate, st.b.Tags), err, st.want)
	}

	got, err := s.Builds(ctx, "org.a:app")
	if err != nil {
		t.Fatalf("Builds = %v", err)
	}
	wantFirst := first
	wantFirst.Tags = []string{"amd64", "linux"}
	wantArm := arm
	wantArm.Tags = []string{"arm64", "linux"}
	wantGeneric := generic
	wantGeneric.Tags = []string{}
	want := []api.Build{wantGeneric, wantFirst, wantArm}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Builds after the pushes mismatch (-want +got):\n%s", diff)
	}
	if m, err := s.Manifest(ctx, other.Digest); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Manifest(refused build) = %q, %v, want ErrNotFound", m, err)
	}
}

func testPutBuildConcurrent(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, m := build("org.a:race:1.0.0", []string{"linux"}, i)
			errs[i] = s.PutBuild(ctx, b, m)
		}()
	}
	wg.Wait()
	ok := 0
	for i, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, store.ErrConflict):
			t.Errorf("PutBuild(variant %d) = %v, want nil or ErrConflict", i, err)
		}
	}
	if ok != 1 {
		t.Errorf("%d of %d concurrent pushes of one coordinate and tags succeeded, want 1", ok, n)
	}
	if bs, err := s.Builds(ctx, "org.a:race"); err != nil || len(bs) != 1 {
		t.Errorf("Builds = %d builds, %v, want 1, nil", len(bs), err)
	}
}

func testBuildsRoundTrip(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	b, m := build("com.example.tools:openvpn:1.2.0-beta.1+build.7", []string{"systemd", "linux", "glibc-2.36"}, 5)
	b.Install = api.InstallRoot
	mustPut(t, s, b, m)
	want := b
	want.Tags = []string{"glibc-2.36", "linux", "systemd"}
	got, err := s.Builds(ctx, "")
	if err != nil {
		t.Fatalf("Builds = %v", err)
	}
	if diff := cmp.Diff([]api.Build{want}, got); diff != "" {
		t.Errorf("Builds round trip mismatch (-want +got):\n%s", diff)
	}
}

func testBuildsOrder(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	pushes := []struct {
		coord string
		tags  []string
	}{
		{"org.b:zed:1.0.0", nil},
		{"org.a:app:1.10.0", []string{"linux"}},
		{"org.a:app:1.9.0", []string{"linux"}},
		{"org.a:app:2.0.0", nil},
		{"org.a:app:1.9.0", []string{"linux", "amd64"}},
		{"org.a:app:2.0.0-rc.1", nil},
		{"org.a:app:1.9.0", nil},
		{"org.a:app:10.0.0", nil},
		{"org.a:app:1.9.1", nil},
		{"org.a:app-extra:0.1.0", nil},
	}
	for i, p := range pushes {
		b, m := build(p.coord, p.tags, i)
		mustPut(t, s, b, m)
	}
	tests := []struct {
		name string
		want []string
	}{
		{"", []string{
			"org.a:app:1.9.0 []",
			"org.a:app:1.9.0 [amd64 linux]",
			"org.a:app:1.9.0 [linux]",
			"org.a:app:1.9.1 []",
			"org.a:app:1.10.0 [linux]",
			"org.a:app:2.0.0-rc.1 []",
			"org.a:app:2.0.0 []",
			"org.a:app:10.0.0 []",
			"org.a:app-extra:0.1.0 []",
			"org.b:zed:1.0.0 []",
		}},
		{"org.a:app-extra", []string{"org.a:app-extra:0.1.0 []"}},
		{"org.b:zed", []string{"org.b:zed:1.0.0 []"}},
		{"org.c:none", []string{}},
	}
	for _, tt := range tests {
		got, err := s.Builds(ctx, tt.name)
		if err != nil {
			t.Errorf("Builds(%q) = %v", tt.name, err)
			continue
		}
		if diff := cmp.Diff(tt.want, describe(got)); diff != "" {
			t.Errorf("Builds(%q) mismatch (-want +got):\n%s", tt.name, diff)
		}
	}
	if _, err := s.Builds(ctx, "no colon"); err == nil {
		t.Errorf("Builds(%q) = nil error, want an error", "no colon")
	}
}

func testManifest(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	b, _ := build("org.a:app:1.0.0", nil, 0)
	// Bytes exactly as pushed: whitespace and key order are part of the
	// digest, so the store must not re-encode.
	m := []byte("{ \"name\":\"app\",\n  \"group\": \"org.a\" }\n")
	sum := sha256.Sum256(m)
	b.Digest = hex.EncodeToString(sum[:])
	mustPut(t, s, b, m)
	got, err := s.Manifest(ctx, b.Digest)
	if err != nil || string(got) != string(m) {
		t.Errorf("Manifest(%s) = %q, %v, want %q, nil", b.Digest, got, err, m)
	}
	_, missing := manifest("org.a:app:2.0.0", nil, 0)
	if _, err := s.Manifest(ctx, missing); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Manifest(unknown) = %v, want ErrNotFound", err)
	}
}

func testDeleteBuilds(t *testing.T, open func(t *testing.T) store.Store) {
	fixture := []struct {
		coord string
		tags  []string
	}{
		{"org.a:app:1.0.0", []string{"linux", "amd64"}},
		{"org.a:app:1.0.0", []string{"linux", "arm64"}},
		{"org.a:app:1.0.0", nil},
		{"org.a:app:1.1.0", []string{"linux"}},
	}
	all := []string{
		"org.a:app:1.0.0 []",
		"org.a:app:1.0.0 [amd64 linux]",
		"org.a:app:1.0.0 [arm64 linux]",
		"org.a:app:1.1.0 [linux]",
	}
	tests := []struct {
		name       string
		coordinate string
		tags       []string
		wantN      int
		wantErr    error
		remain     []string
	}{
		{"all builds of a version", "org.a:app:1.0.0", nil, 3, nil, all[3:]},
		{"exact tags, any order", "org.a:app:1.0.0", []string{"amd64", "linux"}, 1, nil,
			[]string{all[0], all[2], all[3]}},
		{"empty tags is the untagged build", "org.a:app:1.0.0", []string{}, 1, nil, all[1:]},
		{"subset of tags matches nothing", "org.a:app:1.0.0", []string{"linux"}, 0, store.ErrNotFound, all},
		{"unknown version", "org.a:app:3.0.0", nil, 0, store.ErrNotFound, all},
		{"unknown package", "org.z:app:1.0.0", nil, 0, store.ErrNotFound, all},
		{"invalid coordinate", "org.a:app", nil, 0, errInvalid, all},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			byDesc := map[string]string{}
			for i, f := range fixture {
				b, m := build(f.coord, f.tags, i)
				mustPut(t, s, b, m)
				byDesc[fmt.Sprintf("%s %v", b.Coordinate, api.NormalizeTags(b.Tags))] = b.Digest
			}
			n, err := s.DeleteBuilds(ctx, tt.coordinate, tt.tags)
			checkErr(t, fmt.Sprintf("DeleteBuilds(%s, %#v)", tt.coordinate, tt.tags), err, tt.wantErr)
			if n != tt.wantN {
				t.Errorf("DeleteBuilds(%s, %#v) = %d, want %d", tt.coordinate, tt.tags, n, tt.wantN)
			}
			got, err := s.Builds(ctx, "")
			if err != nil {
				t.Fatalf("Builds = %v", err)
			}
			if diff := cmp.Diff(tt.remain, describe(got)); diff != "" {
				t.Errorf("builds left mismatch (-want +got):\n%s", diff)
			}
			for desc, d := range byDesc {
				_, err := s.Manifest(ctx, d)
				if kept := slices.Contains(tt.remain, desc); kept && err != nil {
					t.Errorf("Manifest(%s) of kept build = %v, want nil", desc, err)
				} else if !kept && !errors.Is(err, store.ErrNotFound) {
					t.Errorf("Manifest(%s) of deleted build = %v, want ErrNotFound", desc, err)
				}
			}
		})
	}
}

func device(id string, seen time.Time) api.Device {
	return api.Device{
		ID:        id,
		Tags:      []string{"linux", "amd64", "systemd"},
		Labels:    map[string]string{"site": "berlin"},
		Facts:     map[string]string{"os": "linux", "arch": "amd64"},
		Installed: []api.InstalledApp{{Name: "org.a:app", Version: "1.0.0", Tags: []string{}, Digest: "d1", Install: api.InstallPrefix, Previous: "0.9.0"}},
		LastSeen:  seen,
		Applied:   "applied-digest",
		Desired:   "desired-digest",
		Converged: true,
		Error:     "",
		Health:    "ok",
		Init:      []api.InitRecord{{Group: "edge", Name: "org.a:join", Version: "1.0.0", Digest: "d2", Run: "bin/join", Done: seen}},
	}
}

func testDevices(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	if got, err := s.Devices(ctx); err != nil || len(got) != 0 {
		t.Errorf("Devices(empty store) = %v, %v, want none, nil", got, err)
	}
	if _, err := s.Device(ctx, "dev-1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Device(unknown) = %v, want ErrNotFound", err)
	}
	d1 := device("dev-1", t0)
	for _, d := range []api.Device{d1, device("dev-2", t0), device("dev-0", t0)} {
		if err := putDevice(s, d); err != nil {
			t.Fatalf("putDevice(%s) = %v", d.ID, err)
		}
	}
	got, err := s.Device(ctx, "dev-1")
	if err != nil {
		t.Fatalf("Device(dev-1) = %v", err)
	}
	if diff := cmp.Diff(d1, got); diff != "" {
		t.Errorf("Device round trip mismatch (-want +got):\n%s", diff)
	}

	// A report replaces the whole record: what it lacks is gone.
	d1b := api.Device{ID: "dev-1", Tags: []string{"linux"}, LastSeen: t0.Add(5 * time.Second), Error: "unpack: disk full"}
	if err := putDevice(s, d1b); err != nil {
		t.Fatalf("putDevice(update) = %v", err)
	}
	got, err = s.Device(ctx, "dev-1")
	if err != nil {
		t.Fatalf("Device(dev-1) = %v", err)
	}
	if diff := cmp.Diff(d1b, got, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("Device after update mismatch (-want +got):\n%s", diff)
	}

	all, err := s.Devices(ctx)
	if err != nil {
		t.Fatalf("Devices = %v", err)
	}
	var ids []string
	for _, d := range all {
		ids = append(ids, d.ID)
	}
	if diff := cmp.Diff([]string{"dev-0", "dev-1", "dev-2"}, ids); diff != "" {
		t.Errorf("Devices order mismatch (-want +got):\n%s", diff)
	}
	checkErr(t, "Commit(device with an empty id)", putDevice(s, api.Device{}), errInvalid)
}

func testDesired(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	if _, err := s.Desired(ctx, "dev-1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Desired(unset) = %v, want ErrNotFound", err)
	}
	want := api.DesiredState{
		ID: "dev-1",
		Apps: []api.DesiredApp{
			{Name: "org.a:app", Version: "^1.2", Tags: []string{"debug"}, Instance: "blue",
				Params: map[string]any{"port": float64(8081), "mode": "safe"}, Purge: true},
			{Name: "org.a:core", Tags: []string{}},
		},
	}
	if err := setDesired(s, want); err != nil {
		t.Fatalf("setDesired = %v", err)
	}
	got, err := s.Desired(ctx, "dev-1")
	if err != nil || !cmp.Equal(want, got) {
		t.Errorf("Desired = %+v, %v, want %+v, nil\n%s", got, err, want, cmp.Diff(want, got))
	}
	replaced := api.DesiredState{ID: "dev-1", Apps: []api.DesiredApp{{Name: "org.a:core", Version: "2.0.0", Tags: []string{}}}}
	if err := setDesired(s, replaced); err != nil {
		t.Fatalf("setDesired(replace) = %v", err)
	}
	got, err = s.Desired(ctx, "dev-1")
	if diff := cmp.Diff(replaced, got); err != nil || diff != "" {
		t.Errorf("Desired after replace = %v, mismatch (-want +got):\n%s", err, diff)
	}
	if _, err := s.Desired(ctx, "dev-2"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Desired(other device) = %v, want ErrNotFound", err)
	}
	checkErr(t, "Commit(desired state with an empty id)", setDesired(s, api.DesiredState{}), errInvalid)
}

func ids(evs []api.Event) []int64 {
	out := []int64{}
	for _, e := range evs {
		out = append(out, e.ID)
	}
	return out
}

func testAppendEvents(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	if got, err := s.AppendEvents(ctx, nil); err != nil || len(got) != 0 {
		t.Errorf("AppendEvents(nil) = %v, %v, want none, nil", got, err)
	}
	in := []api.Event{
		{ID: 999, Time: t0, Device: "dev-1", Kind: api.KindPlan, Message: "3 steps",
			Payload: json.RawMessage(`{"steps":3}`)},
		{Time: t0.Add(time.Second), Device: "dev-1", Kind: api.KindStepFailed, Level: api.LevelError,
			Package: "org.a:app:1.0.0", Message: "postinst exited 1"},
		{Time: t0.Add(2 * time.Second), Kind: api.KindLog, Level: api.LevelWarn, Priority: api.PriorityLow, Message: "disk 90% full"},
	}
	first, err := s.AppendEvents(ctx, in)
	if err != nil {
		t.Fatalf("AppendEvents = %v", err)
	}
	if len(first) != len(in) {
		t.Fatalf("AppendEvents returned %d events, want %d", len(first), len(in))
	}
	want := slices.Clone(in)
	want[0].Level, want[0].Priority = api.LevelInfo, api.PriorityMedium
	want[1].Priority = api.PriorityHigh
	for i := range want {
		want[i].ID = first[i].ID
		if first[i].ID <= 0 || (i > 0 && first[i].ID <= first[i-1].ID) {
			t.Errorf("AppendEvents IDs = %v, want positive and increasing", ids(first))
		}
	}
	if diff := cmp.Diff(want, first); diff != "" {
		t.Errorf("AppendEvents result mismatch (-want +got):\n%s", diff)
	}
	stored, err := s.Events(ctx, store.EventFilter{})
	if err != nil {
		t.Fatalf("Events = %v", err)
	}
	if diff := cmp.Diff(want, stored); diff != "" {
		t.Errorf("Events mismatch (-want +got):\n%s", diff)
	}

	second, err := s.AppendEvents(ctx, []api.Event{{Time: t0, Kind: api.KindConverged}})
	if err != nil {
		t.Fatalf("AppendEvents(second) = %v", err)
	}
	if second[0].ID <= first[len(first)-1].ID {
		t.Errorf("second batch ID %d, want greater than %d", second[0].ID, first[len(first)-1].ID)
	}

	// A bad event anywhere refuses the whole batch.
	bad := [][]api.Event{
		{{Time: t0, Kind: api.KindLog}, {Time: t0, Kind: api.KindLog, Level: "fatal"}},
		{{Time: t0, Kind: api.KindLog}, {Time: t0, Kind: api.KindLog, Priority: "urgent"}},
		{{Time: t0, Kind: api.KindLog}, {Time: t0}},
		{{Time: t0, Kind: api.KindLog, Payload: json.RawMessage(`{not json`)}},
	}
	for _, b := range bad {
		if _, err := s.AppendEvents(ctx, b); err == nil {
			t.Errorf("AppendEvents(%+v) = nil error, want an error", b[len(b)-1])
		}
	}
	stored, err = s.Events(ctx, store.EventFilter{})
	if err != nil || len(stored) != len(in)+1 {
		t.Errorf("after refused batches Events = %d events, %v, want %d, nil", len(stored), err, len(in)+1)
	}
}

func testEventsFilter(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	in := []api.Event{
		{Device: "dev-a", Kind: api.KindPlan, Priority: api.PriorityLow},    // 0
		{Device: "dev-b", Kind: api.KindPlan, Priority: api.PriorityMedium}, // 1
		{Device: "dev-a", Kind: api.KindLog, Priority: api.PriorityHigh},    // 2
		{Device: "dev-a", Kind: api.KindStepFailed, Level: api.LevelError},  // 3: high by default
		{Device: "dev-b", Kind: api.KindLog, Priority: api.PriorityLow},     // 4
		{Kind: api.KindPackage}, // 5: medium by default
	}
	for i := range in {
		in[i].Time = t0.Add(time.Duration(i) * time.Second)
		in[i].Message = fmt.Sprintf("event %d", i)
	}
	got, err := s.AppendEvents(ctx, in)
	if err != nil {
		t.Fatalf("AppendEvents = %v", err)
	}
	id := ids(got)
	pick := func(idx ...int) []int64 {
		out := []int64{}
		for _, i := range idx {
			out = append(out, id[i])
		}
		return out
	}
	tests := []struct {
		name string
		f    store.EventFilter
		want []int64
	}{
		{"all", store.EventFilter{}, pick(0, 1, 2, 3, 4, 5)},
		{"after", store.EventFilter{After: id[2]}, pick(3, 4, 5)},
		{"after the last", store.EventFilter{After: id[5]}, pick()},
		{"device", store.EventFilter{Device: "dev-a"}, pick(0, 2, 3)},
		{"unknown device", store.EventFilter{Device: "dev-z"}, pick()},
		{"kind", store.EventFilter{Kind: api.KindLog}, pick(2, 4)},
		{"min low", store.EventFilter{MinPriority: api.PriorityLow}, pick(0, 1, 2, 3, 4, 5)},
		{"min medium", store.EventFilter{MinPriority: api.PriorityMedium}, pick(1, 2, 3, 5)},
		{"min high", store.EventFilter{MinPriority: api.PriorityHigh}, pick(2, 3)},
		{"device and priority", store.EventFilter{Device: "dev-b", MinPriority: api.PriorityMedium}, pick(1)},
		{"device and kind", store.EventFilter{Device: "dev-a", Kind: api.KindPlan}, pick(0)},
		{"limit", store.EventFilter{Limit: 2}, pick(0, 1)},
		{"after and limit", store.EventFilter{After: id[1], Limit: 2}, pick(2, 3)},
		{"filters then limit", store.EventFilter{Device: "dev-b", Limit: 1, After: id[1]}, pick(4)},
		{"last", store.EventFilter{Limit: 2, Last: true}, pick(len(id)-2, len(id)-1)},
		{"last of a device", store.EventFilter{Device: "dev-b", Limit: 1, Last: true}, pick(4)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			evs, err := s.Events(ctx, tt.f)
			if err != nil {
				t.Fatalf("Events(%+v) = %v", tt.f, err)
			}
			if diff := cmp.Diff(tt.want, ids(evs)); diff != "" {
				t.Errorf("Events(%+v) IDs mismatch (-want +got):\n%s", tt.f, diff)
			}
		})
	}
	if _, err := s.Events(ctx, store.EventFilter{MinPriority: "urgent"}); err == nil {
		t.Errorf("Events(MinPriority urgent) = nil error, want an error")
	}
}

func testEventsDefaultLimit(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	n := store.DefaultEventLimit + 5
	evs := make([]api.Event, n)
	for i := range evs {
		evs[i] = api.Event{Time: t0, Kind: api.KindLog, Message: fmt.Sprint(i)}
	}
	if _, err := s.AppendEvents(ctx, evs); err != nil {
		t.Fatalf("AppendEvents = %v", err)
	}
	page, err := s.Events(ctx, store.EventFilter{})
	if err != nil || len(page) != store.DefaultEventLimit {
		t.Fatalf("Events(Limit 0) = %d events, %v, want %d, nil", len(page), err, store.DefaultEventLimit)
	}
	rest, err := s.Events(ctx, store.EventFilter{After: page[len(page)-1].ID})
	if err != nil || len(rest) != 5 || rest[0].Message != fmt.Sprint(store.DefaultEventLimit) {
		t.Errorf("Events(after first page) = %d events, %v, want the last 5", len(rest), err)
	}
	if all, err := s.Events(ctx, store.EventFilter{Limit: n + 10}); err != nil || len(all) != n {
		t.Errorf("Events(Limit %d) = %d events, %v, want %d", n+10, len(all), err, n)
	}
}

func testAppendEventsConcurrent(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	const writers, batches, size = 8, 10, 3
	results := make([][][]api.Event, writers)
	errs := make(chan error, writers*batches)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range batches {
				evs := make([]api.Event, size)
				for e := range evs {
					evs[e] = api.Event{Time: t0, Device: fmt.Sprintf("dev-%d", w), Kind: api.KindLog,
						Message: fmt.Sprintf("%d/%d/%d", w, b, e)}
				}
				got, err := s.AppendEvents(ctx, evs)
				if err != nil {
					errs <- err
					return
				}
				results[w] = append(results[w], got)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent AppendEvents = %v", err)
	}
	assigned := map[int64]string{}
	for w := range writers {
		var last int64
		for _, batch := range results[w] {
			for _, e := range batch {
				if e.ID <= last {
					t.Errorf("writer %d got ID %d after %d, want increasing", w, e.ID, last)
				}
				last = e.ID
				if prev, dup := assigned[e.ID]; dup {
					t.Errorf("ID %d assigned to %q and %q", e.ID, prev, e.Message)
				}
				assigned[e.ID] = e.Message
			}
		}
	}
	stored, err := s.Events(ctx, store.EventFilter{})
	if err != nil {
		t.Fatalf("Events = %v", err)
	}
	if len(stored) != writers*batches*size {
		t.Fatalf("Events = %d events, want %d", len(stored), writers*batches*size)
	}
	for i, e := range stored {
		if i > 0 && e.ID <= stored[i-1].ID {
			t.Errorf("Events IDs not increasing: %d after %d", e.ID, stored[i-1].ID)
		}
		if assigned[e.ID] != e.Message {
			t.Errorf("stored event %d has message %q, AppendEvents returned %q", e.ID, e.Message, assigned[e.ID])
		}
	}
}

// testEventCursor: a reader that pages with After while writers append
// sees every event once. An ID that became visible after a higher one
// (committed out of order) would be stepped over for good.
func testEventCursor(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	const writers, batches = 4, 25
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range batches {
				evs := []api.Event{{Time: t0, Kind: api.KindLog, Message: fmt.Sprintf("%d/%d/0", w, b)},
					{Time: t0, Kind: api.KindLog, Message: fmt.Sprintf("%d/%d/1", w, b)}}
				if _, err := s.AppendEvents(ctx, evs); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	seen := map[int64]bool{}
	var after int64
	read := func() {
		evs, err := s.Events(ctx, store.EventFilter{After: after})
		if err != nil {
			t.Fatalf("Events(after %d) = %v", after, err)
		}
		for _, e := range evs {
			seen[e.ID] = true
			after = e.ID
		}
	}
	for done := false; !done; {
		select {
		case <-finished:
			done = true
		default:
		}
		read()
	}
	close(errs)
	for err := range errs {
		t.Fatalf("AppendEvents = %v", err)
	}
	read() // what was committed after the last read while writing
	all, err := s.Events(ctx, store.EventFilter{Limit: writers * batches * 2})
	if err != nil {
		t.Fatal(err)
	}
	var missed []int64
	for _, e := range all {
		if !seen[e.ID] {
			missed = append(missed, e.ID)
		}
	}
	if len(all) != writers*batches*2 || len(missed) > 0 {
		t.Errorf("%d events stored, want %d; the paging reader missed %v", len(all), writers*batches*2, missed)
	}
}

// testEventText: a message with a NUL or a byte that is not UTF-8 is
// stored with U+FFFD in its place, by every store alike.
func testEventText(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	got, err := s.AppendEvents(ctx, []api.Event{{Time: t0, Kind: api.KindLog, Package: "org.a:app\x00", Message: "disk\x00full \xff\xfe ok ünïcode"}})
	if err != nil {
		t.Fatalf("AppendEvents = %v", err)
	}
	stored, err := s.Events(ctx, store.EventFilter{})
	if err != nil || len(stored) != 1 {
		t.Fatalf("Events = %v, %v", stored, err)
	}
	for _, e := range []api.Event{got[0], stored[0]} {
		if e.Message != "disk\uFFFDfull \uFFFD ok ünïcode" || e.Package != "org.a:app\uFFFD" {
			t.Errorf("event text = %q, %q, want U+FFFD for the NUL and the bad bytes", e.Package, e.Message)
		}
	}
}

func testCancelled(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := commitCtx(cctx, s, store.Write{Device: ptr(device("dev-1", t0))}); !errors.Is(err, context.Canceled) {
		t.Errorf("Commit(cancelled) = %v, want context.Canceled", err)
	}
	if _, err := s.AppendEvents(cctx, []api.Event{{Time: t0, Kind: api.KindLog}}); !errors.Is(err, context.Canceled) {
		t.Errorf("AppendEvents(cancelled) = %v, want context.Canceled", err)
	}
	b, m := build("org.a:app:1.0.0", nil, 0)
	if err := s.PutBuild(cctx, b, m); !errors.Is(err, context.Canceled) {
		t.Errorf("PutBuild(cancelled) = %v, want context.Canceled", err)
	}
	if _, err := s.Events(cctx, store.EventFilter{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Events(cancelled) = %v, want context.Canceled", err)
	}
	if _, err := s.Device(ctx, "dev-1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Device after cancelled put = %v, want ErrNotFound", err)
	}
	if evs, err := s.Events(ctx, store.EventFilter{}); err != nil || len(evs) != 0 {
		t.Errorf("Events after cancelled append = %d, %v, want none", len(evs), err)
	}
	if bs, err := s.Builds(ctx, ""); err != nil || len(bs) != 0 {
		t.Errorf("Builds after cancelled put = %d, %v, want none", len(bs), err)
	}
}

// putDevice writes a device record alone.
func putDevice(s store.Store, d api.Device) error {
	_, err := s.Commit(ctx, store.Write{Device: &d})
	return err
}

// setDesired writes one desired state alone.
func setDesired(s store.Store, st api.DesiredState) error {
	_, err := s.Commit(ctx, store.Write{Desired: []api.DesiredState{st}})
	return err
}

func commitCtx(c context.Context, s store.Store, w store.Write) error {
	_, err := s.Commit(c, w)
	return err
}

func ptr[T any](v T) *T { return &v }
