package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/drover-dev/drover/internal/api"
)

// chromium starts a headless Chromium from DROVER_TEST_CHROMIUM and returns
// a browser context; the test skips, naming the variable, without it.
func chromium(t *testing.T) context.Context {
	t.Helper()
	path := os.Getenv("DROVER_TEST_CHROMIUM")
	if path == "" {
		t.Skip("DROVER_TEST_CHROMIUM is not set: give the path of a Chromium binary to test the fleet page")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // root in CI
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		// The server's certificate is signed by the test's own fleet CA.
		chromedp.Flag("ignore-certificate-errors", true),
		chromedp.UserDataDir(profileDir(t)),
		chromedp.WindowSize(1400, 900),
	)
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	bctx, cancelB := chromedp.NewContext(actx)
	t.Cleanup(cancelB)
	if err := chromedp.Run(bctx); err != nil {
		t.Fatalf("start chromium %s: %v", path, err)
	}
	return bctx
}

// profileDir is a folder for Chromium's profile, removed once the test
// and its browser have ended. Chromium's helper processes outlive the
// browser process that chromedp stops by a moment and still write into
// the profile (Default/), so a single removal, as t.TempDir's, can find
// the folder not yet empty: the removal is tried again for a while.
func profileDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "drover-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	// Registered before the browser's own cleanups, so it runs after them.
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for {
			err := os.RemoveAll(dir)
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("remove Chromium's profile: %v", err)
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	return dir
}

// run runs browser actions with a deadline.
func runIn(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Run(ctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// TestFleetPageInChromium logs in through a one-time URL in a real
// browser, sees the devices and a live event, checks that markup a device
// writes stays text, sees a rollout paused by its gate and resumes it with
// the page's button.
func TestFleetPageInChromium(t *testing.T) {
	b := chromium(t)
	f := newFleet(t)
	a := f.newAgent("page-a", "--labels", "env=prod,role=web", "--health-interval", "200ms")
	killServices(t, filepath.Join(f.dir, "agents", "page-a", "runtime"))
	a.start()
	f.waitFor("page-a", "first report", func(d deviceJSON) bool { return true })

	url := strings.TrimSpace(f.op("ui", "url", "--ttl", "2m"))
	if !strings.HasPrefix(url, f.addr+"/ui/login?token=") {
		t.Fatalf("drover ui url = %q, want %s/ui/login?token=...", url, f.addr)
	}
	var summary string
	runIn(t, b, "log in", chromedp.Navigate(url), chromedp.WaitVisible(`.cards`), chromedp.Text(`main`, &summary))
	if !strings.Contains(summary, "devices") {
		t.Fatalf("summary after login = %q", summary)
	}

	// A device that joins later appears on the devices page by itself.
	var row string
	runIn(t, b, "devices", chromedp.Navigate(f.addr+"/ui/devices"), chromedp.WaitVisible(`a[href="/ui/devices/page-a"]`))
	late := f.newAgent("page-b", "--labels", "env=dev")
	late.start()
	runIn(t, b, "a device appears live", chromedp.WaitVisible(`a[href="/ui/devices/page-b"]`),
		chromedp.Text(`table.devices`, &row))
	if !strings.Contains(row, "env=prod") || !strings.Contains(row, "env=dev") {
		t.Errorf("devices table = %q, want both devices with their labels", row)
	}

	// Events arrive live; a device's markup is shown as text.
	var state string
	runIn(t, b, "events page", chromedp.Navigate(f.addr+"/ui/events"), chromedp.WaitVisible(`#live-state.on`),
		chromedp.Text(`#live-state`, &state))
	evil := `<img src=x onerror="document.title='owned'">hello from page-a`
	if r := a.node("log", evil, "--priority", "high"); r.code != 0 {
		t.Fatalf("drover log = %d: %s", r.code, r.stderr)
	}
	var feed, title string
	var imgs int
	runIn(t, b, "live event", chromedp.WaitVisible(`//td[contains(., "hello from page-a")]`, chromedp.BySearch),
		chromedp.Text(`#feed-rows`, &feed), chromedp.Title(&title),
		chromedp.Evaluate(`document.querySelectorAll("#feed-rows img").length`, &imgs))
	if !strings.Contains(feed, `<img src=x onerror=`) || imgs != 0 || title == "owned" {
		t.Errorf("feed shows the message as markup (imgs %d, title %q): %q", imgs, title, feed)
	}

	// A rollout paused by its gate shows the gate's reason; Resume goes on.
	f.pushSources(map[string]pkgSource{"app-1.0.0": rolloutSource("1.0.0", false), "app-1.1.0": rolloutSource("1.1.0", false)})
	doc := func(version string) string {
		path := filepath.Join(f.dir, "page-"+version+".yaml")
		body := "id: page-a\napps:\n  - {name: com.example:app, version: " + version + "}\n"
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	f.op("state", "set", "-f", doc("1.0.0"))
	f.waitConverged("page-a", "com.example:app=1.0.0")
	gate := filepath.Join(f.dir, "data", "hooks", "rollout-gate.d")
	if err := os.MkdirAll(gate, 0o755); err != nil {
		t.Fatal(err)
	}
	freeze := filepath.Join(gate, "freeze")
	if err := os.WriteFile(freeze, []byte("#!/bin/sh\necho 'change freeze: <b>no</b> deploys' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	f.op("rollout", "start", "-f", doc("1.1.0"), "--name", "page-up", "--waves", "100%", "--soak", "1s", "--wave-timeout", "60s")
	f.waitRollout("page-up", "paused by its gate", func(v rolloutView) bool { return v.Phase == api.RolloutPaused })
	var phase, reason string
	runIn(t, b, "rollout paused", chromedp.Navigate(f.addr+"/ui/rollouts"), chromedp.Click(`a[href="/ui/rollouts/page-up"]`),
		chromedp.WaitVisible(`#phase`), chromedp.Text(`#phase`, &phase), chromedp.Text(`#reason`, &reason))
	if phase != api.RolloutPaused || !strings.Contains(reason, "change freeze: <b>no</b> deploys") {
		t.Errorf("rollout page: phase %q, reason %q; want paused with the gate's words as text", phase, reason)
	}
	if err := os.Remove(freeze); err != nil {
		t.Fatal(err)
	}
	runIn(t, b, "resume", chromedp.Click(`button[data-action="resume"]`),
		chromedp.WaitVisible(`//span[@id="phase"][contains(., "done")]`, chromedp.BySearch))
	if v := f.rollout("page-up"); v.Phase != api.RolloutDone {
		t.Errorf("after Resume on the page: rollout %+v, want done", v)
	}
	f.waitConverged("page-a", "com.example:app=1.1.0")

	// Logging out ends the session.
	var bye string
	runIn(t, b, "log out", chromedp.Navigate(f.addr+"/ui/"), chromedp.Click(`form.logout button`), chromedp.WaitVisible(`.notice`),
		chromedp.Text(`.notice`, &bye))
	if !strings.Contains(bye, "logged out") {
		t.Errorf("after clicking Log out: %q, want the logged-out notice", bye)
	}
	var again string
	runIn(t, b, "after logout", chromedp.Navigate(f.addr+"/ui/devices"), chromedp.Text(`main`, &again))
	if !strings.Contains(again, "drover ui url") {
		t.Errorf("devices page after logout = %q, want the login notice", again)
	}
}
