package ui

import (
	"context"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/store"
)

func TestSessions(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	mem := &memSessions{m: map[string]store.Session{}}
	s := newSessions(clock, 8*time.Hour, mem, t.Logf)

	tok, exp, err := s.token(ctx, "alice", 10*time.Minute)
	if err != nil || !exp.Equal(now.Add(10*time.Minute)) {
		t.Errorf("token expires %v, %v, want in 10m", exp, err)
	}
	now = now.Add(10*time.Minute + time.Second)
	if _, _, ok := s.redeem(ctx, tok); ok {
		t.Fatal("redeem of an expired token = ok, want refused")
	}

	tok, _, _ = s.token(ctx, "alice", 10*time.Minute)
	cookie, sess, ok := s.redeem(ctx, tok)
	if !ok || sess.user != "alice" || sess.csrf == "" {
		t.Fatalf("redeem = %+v, %v, want alice's session with a CSRF token", sess, ok)
	}
	if _, _, ok := s.redeem(ctx, tok); ok {
		t.Error("second redeem of a token = ok, want refused: it works once")
	}
	if _, ok := s.get(ctx, tok); ok {
		t.Error("get(login token) = ok: a token is not a session cookie")
	}
	if got, ok := s.get(ctx, cookie); !ok || got.user != "alice" {
		t.Errorf("get(cookie) = %+v, %v, want alice", got, ok)
	}
	for k := range mem.m {
		if k == cookie || k == tok {
			t.Error("a secret is kept as it is, not hashed")
		}
	}
	now = now.Add(8*time.Hour - time.Second)
	if _, ok := s.get(ctx, cookie); !ok {
		t.Error("session gone before 8h")
	}
	now = now.Add(time.Second)
	if _, ok := s.get(ctx, cookie); ok {
		t.Error("session alive after 8h")
	}

	// Issuing tokens in a loop cannot grow memory without bound.
	for range 3 * maxPending {
		if _, _, err := s.token(ctx, "mallory", time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(mem.m); n > maxPending {
		t.Errorf("%d tokens kept, want at most %d", n, maxPending)
	}
}

func TestDeviceStatus(t *testing.T) {
	tests := []struct {
		name string
		d    api.Device
		want string
	}{
		{"converged", api.Device{Desired: "x", Applied: "x", Converged: true, Health: api.HealthHealthy}, statusConverged},
		{"pending", api.Device{Desired: "x"}, statusPending},
		{"no state", api.Device{}, statusUnset},
		{"error", api.Device{Desired: "x", Error: "no fitting build"}, statusError},
		{"unhealthy checks", api.Device{Desired: "x", Converged: true, Health: api.HealthUnknown}, statusUnhealthy},
		{"unhealthy service", api.Device{Desired: "x", Converged: true,
			Services: []api.ServiceState{{State: api.ServiceRunning, Health: api.ServiceUnhealthy}}}, statusUnhealthy},
		{"failed service", api.Device{Desired: "x", Converged: true,
			Services: []api.ServiceState{{State: api.ServiceFailed}}}, statusUnhealthy},
		{"unreachable service", api.Device{Desired: "x", Converged: true,
			Services: []api.ServiceState{{State: api.ServiceRunning, Network: api.ServiceUnreachable}}}, statusUnhealthy},
		{"terminating", api.Device{Desired: "x", Error: "e", Termination: &api.Termination{State: api.TerminationRequested}}, statusTerminating},
		{"hook failed is not terminating", api.Device{Desired: "x", Converged: true,
			Termination: &api.Termination{State: api.TerminationHookFailed}, Health: api.HealthTerminate}, statusUnhealthy},
	}
	for _, tt := range tests {
		if got := deviceStatus(tt.d); got != tt.want {
			t.Errorf("%s: deviceStatus = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestTextMatch(t *testing.T) {
	d := api.Device{ID: "web-07", Labels: map[string]string{"env": "prod"}, Tags: []string{"linux", "arm64"}}
	tests := []struct {
		q    string
		want bool
	}{
		{"", true}, {"web", true}, {"WEB-07", true}, {"env=prod", true}, {"arm64 prod", true},
		{"env=dev", false}, {"web amd64", false},
	}
	for _, tt := range tests {
		m, err := TextMatch(tt.q)
		if err != nil {
			t.Fatal(err)
		}
		if got := m(d); got != tt.want {
			t.Errorf("TextMatch(%q)(web-07) = %v, want %v", tt.q, got, tt.want)
		}
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1536: "1.5 KiB", 5 << 20: "5.0 MiB", 3 << 30: "3.0 GiB"} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
