// Package screenshot makes the pictures of the fleet page in docs/ui/: a
// real server in this process (internal/localfleet) with a small fleet of
// reporting devices, their events and some packages, shown in a real
// headless Chromium at 1400×900.
package screenshot

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/localfleet"
)

// Config says where Chromium is and where the pictures go.
type Config struct {
	Chromium string // the browser binary
	Out      string // folder for the PNG files
	Log      io.Writer
}

// Page is one picture: a file name and the path on the server.
type Page struct {
	File, Path string
	// Wait is a CSS selector that is visible once the page is ready.
	Wait string
}

// Pages are the pictures Take makes.
var Pages = []Page{
	{"summary.png", "/ui/", ".cards"},
	{"devices.png", "/ui/devices", "table.devices"},
	{"device.png", "/ui/devices/web-03", "h1"},
	{"events.png", "/ui/events?min=low", "#live-state.on"},
	{"rollouts.png", "/ui/rollouts", "table"},
	{"rollout.png", "/ui/rollouts/web-tools", "#phase"},
	{"packages.png", "/ui/packages", "h1"},
}

// Take fills a fleet and writes one PNG per page to cfg.Out.
func Take(ctx context.Context, cfg Config) error {
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return err
	}
	f, err := localfleet.Start(ctx, "")
	if err != nil {
		return err
	}
	defer f.Close()
	if err := fill(ctx, f); err != nil {
		return fmt.Errorf("fill the fleet: %w", err)
	}
	login, err := f.LoginURL(ctx)
	if err != nil {
		return err
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(cfg.Chromium), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.Flag("ignore-certificate-errors", true), // the fleet's own CA
		chromedp.Flag("hide-scrollbars", true),
		chromedp.WindowSize(1400, 900))
	actx, cancel := chromedp.NewExecAllocator(ctx, opts...)
	defer cancel()
	bctx, cancelB := chromedp.NewContext(actx)
	defer cancelB()
	if err := chromedp.Run(bctx, chromedp.Navigate(login), chromedp.WaitVisible(".cards")); err != nil {
		return fmt.Errorf("log in: %w", err)
	}
	for _, p := range Pages {
		var png []byte
		tctx, cancel := context.WithTimeout(bctx, 30*time.Second)
		err := chromedp.Run(tctx, chromedp.Navigate(f.URL+p.Path), chromedp.WaitVisible(p.Wait),
			chromedp.Sleep(300*time.Millisecond), // the live feed's first events, the fonts
			chromedp.CaptureScreenshot(&png))
		cancel()
		if err != nil {
			return fmt.Errorf("%s: %w", p.Path, err)
		}
		if err := os.WriteFile(filepath.Join(cfg.Out, p.File), png, 0o644); err != nil {
			return err
		}
		fmt.Fprintf(cfg.Log, "wrote %s (%s)\n", filepath.Join(cfg.Out, p.File), p.Path)
	}
	return nil
}

// dev is one device of the pictured fleet.
type dev struct {
	id, role, region string
	arch             string
	trouble          string
}

// fill pushes packages and makes devices report, fail and log as a small
// real fleet does.
func fill(ctx context.Context, f *localfleet.Fleet) error {
	builds := map[string]string{} // coordinate -> manifest digest
	for _, b := range []struct {
		name, version string
		tags          []string
		mode          string
	}{
		{"web", "1.2.0", []string{"linux"}, api.InstallPrefix},
		{"web", "1.3.0", []string{"linux"}, api.InstallPrefix},
		{"web", "1.3.0", []string{"arm64", "linux"}, api.InstallPrefix},
		{"agent-tools", "0.9.1", nil, api.InstallRoot},
		{"edge-proxy", "2.0.0", []string{"amd64", "linux"}, api.InstallPrefix},
	} {
		d, err := push(ctx, f, b.name, b.version, b.tags, b.mode)
		if err != nil {
			return err
		}
		builds["com.example:"+b.name+":"+b.version] = d
	}
	var devs []dev
	for i := range 9 {
		devs = append(devs, dev{fmt.Sprintf("web-%02d", i+1), "web", []string{"eu-west", "us-east", "ap-south"}[i%3], "amd64", ""})
	}
	for i := range 4 {
		devs = append(devs, dev{fmt.Sprintf("edge-%02d", i+1), "edge", "eu-west", "arm64", ""})
	}
	devs = append(devs, dev{"db-01", "db", "eu-west", "amd64", ""}, dev{"db-02", "db", "us-east", "amd64", ""})
	devs[2].trouble = "unhealthy"
	devs[5].trouble = "error"
	devs[10].trouble = "pending"
	for _, d := range devs {
		cl, err := f.Device(d.id)
		if err != nil {
			return err
		}
		rep := api.Report{
			Tags:   []string{"linux", d.arch, "debian", "debian-12", "glibc-2.36", "systemd"},
			Labels: map[string]string{"env": "prod", "role": d.role, "region": d.region},
			Installed: []api.InstalledApp{{Name: "com.example:web", Version: "1.2.0", Tags: []string{},
				Digest: builds["com.example:web:1.2.0"], Install: api.InstallPrefix}},
			Health: &api.HealthReport{Status: api.HealthHealthy},
			Services: []api.ServiceState{{Coordinate: "web.prod", Package: "com.example:web", Version: "1.2.0",
				Service: "web", State: api.ServiceRunning, PID: 4100, Health: api.ServiceHealthy, Since: time.Now().Add(-3 * time.Hour)}},
			AgentVersion: "0.1.0",
		}
		switch d.trouble {
		case "unhealthy":
			rep.Services[0].Health = api.ServiceUnhealthy
			rep.Services[0].Restarts = 3
			rep.Services[0].HealthOutput = "exit status 1: GET /healthz: connection refused"
		case "error":
			rep.Error = "step upgrade com.example:web 1.2.0 -> 1.3.0: postinst: exit status 2: cannot write /var/lib/web/cache"
		}
		if _, err := f.Admin.SetState(ctx, api.DesiredState{ID: d.id, Apps: []api.DesiredApp{{Name: "com.example:web", Version: "1.2.0", Tags: []string{}}}}); err != nil {
			return err
		}
		// A first report gives the server the device's tags; the state
		// resolved for them is what the device then converges to.
		if _, err := cl.Report(ctx, d.id, rep); err != nil {
			return err
		}
		res, err := cl.Desired(ctx, d.id, "", 0)
		if err != nil {
			return err
		}
		if d.trouble != "pending" && d.trouble != "error" {
			rep.Applied = res.Digest
		}
		if _, err := cl.Report(ctx, d.id, rep); err != nil {
			return err
		}
		var evs []api.Event
		switch d.trouble {
		case "unhealthy":
			evs = append(evs, api.Event{Kind: api.KindLog, Level: api.LevelWarn, Message: "health check failing: GET /healthz refused"})
		case "error":
			evs = append(evs, api.Event{Kind: api.KindStepFailed, Level: api.LevelError, Package: "com.example:web",
				Message: "upgrade com.example:web 1.2.0 -> 1.3.0: postinst: exit status 2"})
		default:
			evs = append(evs, api.Event{Kind: api.KindLog, Priority: api.PriorityLow, Message: "cache warmed in 1.8s"})
		}
		if err := cl.PostEvents(ctx, d.id, evs); err != nil {
			return err
		}
	}
	return rollouts(ctx, f, devs)
}

// rollouts starts two: web 1.3.0 to the web devices, whose first wave has
// converged and soaks, and edge-proxy to the edge devices, paused by an
// operator.
func rollouts(ctx context.Context, f *localfleet.Fleet, devs []dev) error {
	spec := func(name, pkg, version, prefix string) api.RolloutSpec {
		sp := api.RolloutSpec{Name: name, Waves: []string{"1", "50%", "100%"}, Soak: api.Duration(time.Hour),
			WaveTimeout: api.Duration(time.Hour), MaxFailures: "0", OnFailure: api.OnFailurePause}
		for _, d := range devs {
			if d.role == prefix {
				sp.Documents = append(sp.Documents, api.Document{Kind: api.DocDevice, ID: d.id,
					Apps: []api.DesiredApp{{Name: "com.example:web", Version: "1.2.0", Tags: []string{}}, {Name: pkg, Version: version, Tags: []string{}}}})
			}
		}
		return sp
	}
	if _, err := f.Admin.StartRollout(ctx, spec("web-tools", "com.example:agent-tools", "0.9.1", "web")); err != nil {
		return err
	}
	// The first wave's device converges and stays healthy: the wave soaks.
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		ro, err := f.Admin.Rollout(ctx, "web-tools")
		if err != nil {
			return err
		}
		if len(ro.Stages) > 0 && !ro.Stages[0].Soaking.IsZero() {
			break
		}
		for _, rd := range ro.Devices {
			if rd.Outcome != api.OutcomeUpdating {
				continue
			}
			if err := converge(ctx, f, rd.ID); err != nil {
				return err
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, err := f.Admin.StartRollout(ctx, spec("edge-tools", "com.example:agent-tools", "0.9.1", "edge")); err != nil {
		return err
	}
	_, err := f.Admin.PauseRollout(ctx, "edge-tools")
	return err
}

// converge reports device id as having applied its current desired state,
// healthy, with what it now runs.
func converge(ctx context.Context, f *localfleet.Fleet, id string) error {
	cl := f.Devices[id]
	res, err := cl.Desired(ctx, id, "", 0)
	if err != nil {
		return err
	}
	d, err := f.Admin.Device(ctx, id)
	if err != nil {
		return err
	}
	rep := api.Report{Tags: d.Tags, Labels: d.Labels, Applied: res.Digest, Health: &api.HealthReport{Status: api.HealthHealthy},
		Services: d.Services, AgentVersion: "0.1.0"}
	for _, a := range res.Apps {
		rep.Installed = append(rep.Installed, api.InstalledApp{Name: a.Name, Version: a.Version, Tags: []string{}, Digest: a.Digest})
	}
	_, err = cl.Report(ctx, id, rep)
	return err
}

// push uploads a build with one file and returns its manifest digest.
func push(ctx context.Context, f *localfleet.Fleet, name, version string, tags []string, mode string) (string, error) {
	content := []byte(fmt.Sprintf("#!/bin/sh\necho %s %s\n", name, version))
	sum := sha256.Sum256(content)
	digest := hex.EncodeToString(sum[:])
	path := "bin/" + name
	if mode == api.InstallRoot {
		path = "usr/local/bin/" + name
	}
	m := api.Manifest{Group: "com.example", Name: name, Version: version, Tags: tags, Install: mode,
		Files: []api.File{{Path: path, Type: api.TypeFile, Mode: 0o755, Size: int64(len(content)), Digest: digest}}}
	if m.Tags == nil {
		m.Tags = []string{}
	}
	data, err := json.Marshal(m)
	if err != nil {
		return "", err
	}
	if err := f.Admin.PutBlob(ctx, digest, int64(len(content)), bytes.NewReader(content)); err != nil {
		return "", err
	}
	b, err := f.Admin.PushManifest(ctx, data)
	if err != nil {
		return "", err
	}
	return b.Digest, nil
}
