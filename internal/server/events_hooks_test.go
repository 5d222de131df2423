package server

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/client"
	"github.com/drover-dev/drover/internal/pki"
)

// TestEventsIgnoredHookWarnsOnce: a file in a server hook directory that
// never runs is one hook warning event, however many events list it.
func TestEventsIgnoredHookWarnsOnce(t *testing.T) {
	hooks := filepath.Join(t.TempDir(), "hooks")
	for name, mode := range map[string]os.FileMode{"notify.sh": 0o755, "20-noexec": 0o644} {
		p := filepath.Join(hooks, "log-post.d", name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("#!/bin/sh\nexit 0\n"), mode); err != nil {
			t.Fatal(err)
		}
	}
	fx := newServed(t)
	_, addr, _ := fx.start(Config{Events: EventsConfig{HookDir: hooks}}, nil)
	dev := fx.client(pki.RoleDevice, "d1", addr)
	admin := fx.client(pki.RoleAdmin, "ops", addr)
	ctx := context.Background()
	for range 3 {
		if err := dev.PostEvents(ctx, "d1", []api.Event{{Kind: "log", Message: "hello"}}); err != nil {
			t.Fatal(err)
		}
	}
	evs, err := admin.Events(ctx, client.EventQuery{Kind: KindHook})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, ev := range evs {
		var p struct{ Hook, Ignored string }
		if err := json.Unmarshal(ev.Payload, &p); err != nil || ev.Level != api.LevelWarn || p.Ignored == "" {
			t.Errorf("hook event %s %q %s: want a warning naming an ignored file", ev.Level, ev.Message, ev.Payload)
			continue
		}
		got[filepath.Base(p.Hook)]++
	}
	if len(got) != 2 || got["notify.sh"] != 1 || got["20-noexec"] != 1 {
		t.Errorf("hook warnings by file = %v, want notify.sh and 20-noexec once each", got)
	}
}
