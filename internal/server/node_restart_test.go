package server

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/client"
	"github.com/drover-dev/drover/internal/pki"
)

// TestNodeTerminationResumesAfterRestart: terminations held by a timed
// keepalive go ahead after a server restart without any report from the
// device (a machine that has gone bad may never report again): at once
// when the keepalive lapsed while the server was down, when it lapses
// otherwise; one still held stays held.
func TestNodeTerminationResumesAfterRestart(t *testing.T) {
	fx := newServed(t)
	dir := t.TempDir()
	ran := filepath.Join(dir, "terminated")
	hook := filepath.Join(dir, "terminate")
	if err := os.WriteFile(hook, []byte("#!/bin/sh\ncat >/dev/null\necho \"$1\" >> '"+ran+"'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	keepalives := map[string]api.KeepaliveRequest{
		"lapsed":  {Seconds: 600},      // lapses while the server is down
		"soon":    {Seconds: 3600 + 1}, // lapses a second after the restart
		"later":   {Seconds: 2 * 3600}, // still holds after it
		"forever": {Forever: true},
	}
	certs := map[string]*client.Config{}
	for id := range keepalives {
		certs[id] = &client.Config{TLS: fx.clientTLS(pki.RoleDevice, id)}
	}
	adminTLS := fx.clientTLS(pki.RoleAdmin, "ops")
	at := func(cfg client.Config, addr string) *client.Client {
		cfg.Addr = addr
		cl, err := client.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
		return cl
	}
	report := func(cl *client.Client, id, health string) {
		t.Helper()
		if _, err := cl.Report(ctx, id, api.Report{Installed: []api.InstalledApp{}, Health: &api.HealthReport{Status: health}}); err != nil {
			t.Fatalf("report %s: %v", id, err)
		}
	}

	// Before the restart: each device asks to be terminated under its
	// keepalive.
	_, addr1, stop1 := fx.start(Config{TerminationHook: hook}, nil)
	for id, ka := range keepalives {
		cl := at(*certs[id], addr1)
		report(cl, id, api.HealthHealthy)
		if _, err := cl.Keepalive(ctx, id, ka); err != nil {
			t.Fatalf("keepalive %s: %v", id, err)
		}
		report(cl, id, api.HealthTerminate)
	}
	admin1 := at(client.Config{TLS: adminTLS}, addr1)
	for id := range keepalives {
		d, err := admin1.Device(ctx, id)
		if err != nil || d.Termination == nil || d.Termination.State != api.TerminationRequested || !d.Termination.Delayed {
			t.Fatalf("device %s before the restart: termination %+v (%v), want requested and delayed", id, d.Termination, err)
		}
	}
	stop1()

	// An hour later, as far as the server's clock goes; no device reports.
	_, addr2, _ := fx.start(Config{TerminationHook: hook, Now: func() time.Time { return time.Now().Add(time.Hour) }}, nil)
	admin := at(client.Config{TLS: adminTLS}, addr2)
	state := func(id string) string {
		d, err := admin.Device(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if d.Termination == nil {
			return ""
		}
		return d.Termination.State
	}
	waitUntil(t, 5*time.Second, "lapsed keepalive: terminated after the restart", func() bool {
		return state("lapsed") == api.TerminationTerminated
	})
	waitUntil(t, 5*time.Second, "keepalive lapsing after the restart: terminated", func() bool {
		return state("soon") == api.TerminationTerminated
	})
	for _, id := range []string{"later", "forever"} {
		if got := state(id); got != api.TerminationRequested {
			t.Errorf("device %s under a keepalive that still holds: termination %q, want %q", id, got, api.TerminationRequested)
		}
	}
	b, err := os.ReadFile(ran)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Fields(string(b))
	slices.Sort(got)
	if !slices.Equal(got, []string{"lapsed", "soon"}) {
		t.Errorf("termination hook ran for %v, want once for each of [lapsed soon]", got)
	}
}
