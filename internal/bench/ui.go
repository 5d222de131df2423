package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"time"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/client"
	"github.com/drover-dev/drover/internal/localfleet"
	"github.com/drover-dev/drover/internal/pki"
	"github.com/drover-dev/drover/internal/store"
)

// UIConfig sets up the fleet page benchmark.
type UIConfig struct {
	Devices int           // devices in the store
	Rate    int           // events per second for the live feed
	Feed    time.Duration // how long the live feed runs
	Runs    int           // timed requests per page
	Dir     string        // where the store goes (default: temp)
	Out     io.Writer
}

// UI measures the fleet page with cfg.Devices devices in a real SQLite
// store behind a real server over TLS on loopback: the time to serve the
// devices page's first screen and the summary (cold, the page's device
// cache expired, and warm), then a live feed of cfg.Rate events a second
// followed over SSE, with the server's heap before and after.
func UI(ctx context.Context, cfg UIConfig) error {
	f, err := localfleet.Start(ctx, cfg.Dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := fillDevices(ctx, f.Store, cfg.Devices, time.Now()); err != nil {
		return err
	}
	br, err := f.Browser(ctx)
	if err != nil {
		return err
	}
	get := func(path string) (time.Duration, error) {
		start := time.Now()
		resp, err := br.Get(f.URL + path)
		if err != nil {
			return 0, err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("GET %s: %s", path, resp.Status)
		}
		return time.Since(start), err
	}
	fmt.Fprintf(cfg.Out, "fleet page, %d devices in SQLite, %d runs each (median, max):\n", cfg.Devices, cfg.Runs)
	for _, page := range []struct{ name, path string }{
		{"summary", "/ui/"},
		{"devices, first screen", "/ui/devices"},
		{"devices, filtered", "/ui/devices?q=role%3Ddb"},
	} {
		var cold, warm []time.Duration
		for range cfg.Runs {
			time.Sleep(1100 * time.Millisecond) // past the page's one-second device cache
			c, err := get(page.path)
			if err != nil {
				return err
			}
			w, err := get(page.path)
			if err != nil {
				return err
			}
			cold, warm = append(cold, c), append(warm, w)
		}
		fmt.Fprintf(cfg.Out, "  %-22s cold %s (max %s), warm %s (max %s)\n", page.name,
			ms1(median(cold)), ms1(maxOf(cold)), ms1(median(warm)), ms1(maxOf(warm)))
	}
	// Events come in as agents send them, from many devices: one device's
	// certificate may send only so many a minute.
	var senders []*client.Client
	for i := range 50 {
		cl, err := f.Client(pki.RoleDevice, fmt.Sprintf("dev-%05d", i))
		if err != nil {
			return err
		}
		senders = append(senders, cl)
	}
	return uiFeed(ctx, cfg, senders, br, f.URL)
}

// uiFeed sends cfg.Rate events a second for cfg.Feed through the API while
// the page's live stream is followed, and reports how far the follower lagged and the
// heap before and after.
func uiFeed(ctx context.Context, cfg UIConfig, senders []*client.Client, br *http.Client, base string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/ui/events/stream?min=low", nil)
	if err != nil {
		return err
	}
	resp, err := br.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("follow the page's live feed: %s", resp.Status)
	}
	got := make(chan int, 1)
	go func() {
		n := 0
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "data: ") {
				n++
			}
		}
		got <- n
	}()
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapInuse
	}
	before := heap()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	per := max(cfg.Rate/100, 1)
	sent := 0
	var peak uint64
	end := time.Now().Add(cfg.Feed)
	for time.Now().Before(end) {
		<-tick.C
		dev := (sent / per) % len(senders)
		id := fmt.Sprintf("dev-%05d", dev)
		evs := make([]api.Event, per)
		for i := range evs {
			evs[i] = api.Event{Kind: api.KindLog, Message: fmt.Sprintf("bench event %d", sent), Priority: api.PriorityMedium}
			sent++
		}
		if err := senders[dev].PostEvents(ctx, id, evs); err != nil {
			return err
		}
		if sent%(cfg.Rate*5) < per {
			peak = max(peak, heap())
		}
	}
	time.Sleep(time.Second) // let the follower drain
	after := heap()
	cancel()
	n := <-got
	fmt.Fprintf(cfg.Out, "live feed: %d events in %s (%d/s), follower received %d; server heap %s before, %s at most during, %s after\n",
		sent, cfg.Feed, cfg.Rate, n, mib(before), mib(max(peak, after)), mib(after))
	return nil
}

// fillDevices stores n devices with labels, tags, an installed app and a
// service, as reports leave them.
func fillDevices(ctx context.Context, st store.Store, n int, now time.Time) error {
	for i := range n {
		role := []string{"web", "db", "edge"}[i%3]
		d := api.Device{ID: fmt.Sprintf("dev-%05d", i), Tags: []string{"linux", "amd64", "glibc-2.36", "systemd"},
			Labels:    map[string]string{"env": "prod", "role": role, "region": fmt.Sprintf("r%d", i%5)},
			Installed: []api.InstalledApp{{Name: "com.example:web", Version: "1.2.0", Tags: []string{}, Digest: strings.Repeat("a", 64)}},
			LastSeen:  now.Add(-time.Duration(i%300) * time.Second), Applied: strings.Repeat("b", 64), Health: api.HealthHealthy,
			Services: []api.ServiceState{{Coordinate: "web", Package: "com.example:web", Service: "web", State: api.ServiceRunning, Health: api.ServiceHealthy}}}
		if _, err := st.Commit(ctx, store.Write{Device: &d}); err != nil {
			return err
		}
	}
	return nil
}

func maxOf(ds []time.Duration) time.Duration {
	var m time.Duration
	for _, d := range ds {
		m = max(m, d)
	}
	return m
}

func ms1(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000) }

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
