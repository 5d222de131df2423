package plan

import (
	"reflect"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/api"
)

func TestPendingInit(t *testing.T) {
	at := time.Date(2026, 12, 2, 1, 0, 0, 0, time.UTC)
	join := api.ResolvedInit{Group: "edge", Name: "com.example:join", Version: "1.0.0", Digest: "d1", Run: "bin/join"}
	rec := api.InitRecord{Group: "edge", Name: "com.example:join", Version: "1.0.0", Digest: "d1", Run: "bin/join", Done: at}
	with := func(f func(*api.ResolvedInit)) api.ResolvedInit { e := join; f(&e); return e }
	other := with(func(e *api.ResolvedInit) { e.Name = "com.example:other" })
	for _, c := range []struct {
		name string
		init []api.ResolvedInit
		done []api.InitRecord
		want []api.ResolvedInit
	}{
		{"never ran", []api.ResolvedInit{join}, nil, []api.ResolvedInit{join}},
		{"ran", []api.ResolvedInit{join}, []api.InitRecord{rec}, nil},
		{"new build", []api.ResolvedInit{with(func(e *api.ResolvedInit) { e.Digest = "d2"; e.Version = "1.1.0" })}, []api.InitRecord{rec},
			[]api.ResolvedInit{with(func(e *api.ResolvedInit) { e.Digest = "d2"; e.Version = "1.1.0" })}},
		{"new run", []api.ResolvedInit{with(func(e *api.ResolvedInit) { e.Run = "bin/join2" })}, []api.InitRecord{rec},
			[]api.ResolvedInit{with(func(e *api.ResolvedInit) { e.Run = "bin/join2" })}},
		{"same build in another group", []api.ResolvedInit{with(func(e *api.ResolvedInit) { e.Group = "core" })}, []api.InitRecord{rec},
			[]api.ResolvedInit{with(func(e *api.ResolvedInit) { e.Group = "core" })}},
		{"version alone is not identity", []api.ResolvedInit{with(func(e *api.ResolvedInit) { e.Version = "1.0.0+rebuilt" })}, []api.InitRecord{rec}, nil},
		{"order kept, done ones skipped", []api.ResolvedInit{other, join, with(func(e *api.ResolvedInit) { e.Name = "com.example:third" })}, []api.InitRecord{rec},
			[]api.ResolvedInit{other, with(func(e *api.ResolvedInit) { e.Name = "com.example:third" })}},
		{"nothing to run", nil, []api.InitRecord{rec}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := PendingInit(c.init, c.done); !reflect.DeepEqual(got, c.want) {
				t.Errorf("PendingInit = %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestRecordInit(t *testing.T) {
	at := time.Date(2026, 12, 2, 1, 0, 0, 0, time.UTC)
	a := api.InitRecord{Group: "edge", Name: "com.example:join", Digest: "d1", Run: "bin/join", Done: at}
	b := api.InitRecord{Group: "core", Name: "com.example:join", Digest: "d1", Run: "bin/join", Done: at}
	a2 := a
	a2.Digest, a2.Done = "d2", at.Add(time.Hour)
	for _, c := range []struct {
		name string
		done []api.InitRecord
		r    api.InitRecord
		want []api.InitRecord
	}{
		{"first", nil, a, []api.InitRecord{a}},
		{"another group kept", []api.InitRecord{b}, a, []api.InitRecord{b, a}},
		{"new content replaces the entry's record", []api.InitRecord{a, b}, a2, []api.InitRecord{b, a2}},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := append([]api.InitRecord(nil), c.done...)
			if got := RecordInit(c.done, c.r); !reflect.DeepEqual(got, c.want) {
				t.Errorf("RecordInit = %+v, want %+v", got, c.want)
			}
			if !reflect.DeepEqual(before, c.done) {
				t.Errorf("RecordInit changed its input: %+v", c.done)
			}
		})
	}
}
