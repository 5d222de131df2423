package postgres_test

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/store"
	"github.com/drover-dev/drover/internal/store/postgres/pgtest"
)

// BenchmarkPutDevice measures the report path, as the SQLite store's
// benchmark of the same name: one upsert of a typical device record,
// cycling through 5,000 devices.
func BenchmarkPutDevice(b *testing.B) {
	s := pgtest.Open(b)
	d := api.Device{
		Tags:   []string{"linux", "amd64", "glibc-2.36", "systemd", "debian", "debian-12"},
		Labels: map[string]string{"site": "berlin", "rack": "r12"},
		Facts:  map[string]string{"os": "linux", "arch": "amd64", "hostname": "node"},
		Installed: []api.InstalledApp{
			{Name: "com.example:openvpn", Version: "1.2.0", Tags: []string{"linux"}, Install: api.InstallPrefix},
			{Name: "com.example:core", Version: "2.0.1", Tags: []string{}, Install: api.InstallRoot},
		},
		Converged: true,
		Health:    "ok",
	}
	t0 := time.Now()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		d.ID = fmt.Sprintf("device-%04d", i%5000)
		d.LastSeen = t0.Add(time.Duration(i) * time.Millisecond)
		if _, err := s.Commit(context.Background(), store.Write{Device: &d}); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkAppendEvents measures one report's events: a batch of three,
// in the event writers' turn.
func BenchmarkAppendEvents(b *testing.B) {
	s := pgtest.Open(b)
	evs := []api.Event{
		{Device: "device-0001", Kind: api.KindLog, Message: "one"},
		{Device: "device-0001", Kind: api.KindLog, Message: "two"},
		{Device: "device-0001", Kind: api.KindConverged, Message: "three"},
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.AppendEvents(context.Background(), evs); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCommitParallel measures the converging fleet's write: 64
// goroutines at once each commit a device's record with two events, as
// the SQLite store's benchmark of the same name. It reports commits/s:
// the store's throughput, not one writer's latency.
func BenchmarkCommitParallel(b *testing.B) {
	s := pgtest.Open(b)
	var n atomic.Int64
	t0 := time.Now()
	b.SetParallelism(64 / runtime.GOMAXPROCS(0))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			d := api.Device{ID: fmt.Sprintf("device-%04d", i%5000), LastSeen: t0.Add(time.Duration(i)), Health: "ok"}
			w := store.Write{Device: &d, Events: []api.Event{
				{Device: d.ID, Kind: api.KindLog, Message: "installed"},
				{Device: d.ID, Kind: api.KindConverged, Message: "converged"},
			}}
			if _, err := s.Commit(context.Background(), w); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commits/s")
}
