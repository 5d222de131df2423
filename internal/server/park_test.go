package server

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/client"
	"github.com/drover-dev/drover/internal/pki"
)

// TestParkedPoll: an agent's long-poll (HTTP/1.1, internal/client) waits
// parked, stays parked through a change that is not its own, is answered
// by a change of its state or by its timeout, and its connection serves
// the next poll.
func TestParkedPoll(t *testing.T) {
	tests := []struct {
		name    string
		timeout time.Duration
		change  bool // set the device's state while it waits
		rounds  int
	}{
		{name: "answered by a change", timeout: time.Minute, change: true, rounds: 1},
		{name: "answered by the timeout, twice on one connection", timeout: 300 * time.Millisecond, rounds: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fx := newServed(t)
			srv, addr, ln := fx.startCounting(Config{PollTimeout: tt.timeout})
			dev := fx.client(pki.RoleDevice, "dev-1", addr)
			admin := fx.client(pki.RoleAdmin, "admin", addr)
			ctx := context.Background()
			accepted := ln.n.Load()
			if _, err := dev.Report(ctx, "dev-1", api.Report{Facts: map[string]string{}, Installed: []api.InstalledApp{}}); err != nil {
				t.Fatal(err)
			}
			first, err := dev.Desired(ctx, "dev-1", "", 0)
			if err != nil {
				t.Fatal(err)
			}
			for round := range tt.rounds {
				type answer struct {
					res *api.Resolved
					err error
				}
				got := make(chan answer, 1)
				after := first.Digest
				go func() {
					res, err := dev.Desired(ctx, "dev-1", after, time.Minute)
					got <- answer{res, err}
				}()
				waitUntil(t, 5*time.Second, "poll parked", func() bool { return srv.parkedCount() == 1 })
				srv.hub.notifyAll() // nothing changed for dev-1: it stays parked
				want := after
				if tt.change {
					res, err := admin.SetState(ctx, api.DesiredState{ID: "dev-1", Apps: []api.DesiredApp{}})
					if err != nil {
						t.Fatal(err)
					}
					if res.Digest == after {
						t.Fatalf("round %d: state set kept digest %s", round, after)
					}
					want = res.Digest
				}
				select {
				case a := <-got:
					if a.err != nil {
						t.Fatalf("round %d: poll: %v", round, a.err)
					}
					if a.res.Digest != want {
						t.Fatalf("round %d: poll answered %s, want %s", round, a.res.Digest, want)
					}
					first = a.res
				case <-time.After(10 * time.Second):
					t.Fatalf("round %d: parked poll not answered", round)
				}
				if n := srv.parkedCount(); n != 0 {
					t.Fatalf("round %d: %d polls still parked after the answer", round, n)
				}
			}
			want := int64(1) // the device's: its report, its read, its polls
			if tt.change {
				want++ // the admin's
			}
			if n := ln.n.Load() - accepted; n != want {
				t.Fatalf("%d new connections, want %d", n, want)
			}
		})
	}
}

// TestParkedPollServerStops: stopping the server answers its parked polls
// and Serve returns.
func TestParkedPollServerStops(t *testing.T) {
	fx := newServed(t)
	srv, addr, stop := fx.start(Config{PollTimeout: time.Minute}, nil)
	dev := fx.client(pki.RoleDevice, "dev-1", addr)
	ctx := context.Background()
	first, err := dev.Desired(ctx, "dev-1", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *api.Resolved, 1)
	go func() {
		res, _ := dev.Desired(ctx, "dev-1", first.Digest, time.Minute)
		got <- res
	}()
	waitUntil(t, 5*time.Second, "poll parked", func() bool { return srv.parkedCount() == 1 })
	stop() // fails the test if Serve does not return
	select {
	case res := <-got:
		if res == nil || res.Digest != first.Digest {
			t.Fatalf("poll answered %+v at stop, want the current state %s", res, first.Digest)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("parked poll not answered at stop")
	}
}

// TestHTTP2PollWaitsInHandler: a long-poll over HTTP/2 (agents before
// parking) is not parked and is answered by a change as before.
func TestHTTP2PollWaitsInHandler(t *testing.T) {
	fx := newServed(t)
	srv, addr, _ := fx.start(Config{PollTimeout: time.Minute}, nil)
	admin := fx.client(pki.RoleAdmin, "admin", addr)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: fx.clientTLS(pki.RoleDevice, "dev-1"), ForceAttemptHTTP2: true}}
	t.Cleanup(hc.CloseIdleConnections)
	get := func(q string) (*api.Resolved, string) {
		resp, err := hc.Get(addr + "/v1/devices/dev-1/desired" + q)
		if err != nil {
			t.Error(err)
			return nil, ""
		}
		defer resp.Body.Close()
		var res api.Resolved
		if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
			t.Error(err)
		}
		return &res, resp.Proto
	}
	first, proto := get("")
	if proto != "HTTP/2.0" {
		t.Fatalf("answered over %s, want HTTP/2.0", proto)
	}
	got := make(chan *api.Resolved, 1)
	go func() {
		res, _ := get("?wait=1&after=" + first.Digest)
		got <- res
	}()
	waitUntil(t, 5*time.Second, "poll waiting in its handler", func() bool {
		srv.hub.mu.Lock()
		defer srv.hub.mu.Unlock()
		_, ok := srv.hub.chans["dev-1"]
		return ok
	})
	if n := srv.parkedCount(); n != 0 {
		t.Fatalf("%d polls parked, want none over HTTP/2", n)
	}
	res, err := admin.SetState(context.Background(), api.DesiredState{ID: "dev-1", Apps: []api.DesiredApp{}})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-got:
		if r == nil || r.Digest != res.Digest {
			t.Fatalf("poll answered %+v, want %s", r, res.Digest)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("HTTP/2 poll not answered")
	}
}

// startCounting is start with the server's listener counting the
// connections it accepts.
func (fx *served) startCounting(cfg Config) (*Server, string, *countingListener) {
	ln := &countingListener{}
	srv, addr, _ := fx.start(cfg, func(inner net.Listener) net.Listener {
		ln.Listener = inner
		return ln
	})
	return srv, addr, ln
}

// countingListener counts the connections it accepts.
type countingListener struct {
	net.Listener
	n atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// agentStart does what an agent does first: a report, then a read of its
// desired state, which it returns.
func agentStart(t *testing.T, dev *client.Client, id string, rep api.Report) *api.Resolved {
	t.Helper()
	ctx := context.Background()
	if _, err := dev.Report(ctx, id, rep); err != nil {
		t.Fatal(err)
	}
	first, err := dev.Desired(ctx, id, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	return first
}

// TestPollEndsForHeartbeat: a long-poll that asks for a shorter wait
// (?timeout=) is answered then, unchanged, and an agent's first report
// and read, its polls and the heartbeats between them (a report, events)
// all travel over one connection, round after round.
func TestPollEndsForHeartbeat(t *testing.T) {
	fx := newServed(t)
	srv, addr, ln := fx.startCounting(Config{PollTimeout: time.Minute})
	dev := fx.client(pki.RoleDevice, "dev-1", addr)
	ctx := context.Background()
	accepted := ln.n.Load()
	rep := api.Report{Facts: map[string]string{}, Installed: []api.InstalledApp{}}
	first := agentStart(t, dev, "dev-1", rep)
	for round := range 3 {
		start := time.Now()
		res, err := dev.Desired(ctx, "dev-1", first.Digest, time.Second)
		if err != nil {
			t.Fatalf("round %d: poll: %v", round, err)
		}
		if took := time.Since(start); res.Digest != first.Digest || took > 20*time.Second {
			t.Fatalf("round %d: poll answered %s after %v, want %s after its 1s (the server's timeout is a minute)", round, res.Digest, took, first.Digest)
		}
		if _, err := dev.Report(ctx, "dev-1", rep); err != nil {
			t.Fatalf("round %d: report: %v", round, err)
		}
		if err := dev.PostEvents(ctx, "dev-1", []api.Event{{Kind: api.KindLog, Level: api.LevelInfo, Message: "beat"}}); err != nil {
			t.Fatalf("round %d: events: %v", round, err)
		}
	}
	if n := ln.n.Load() - accepted; n != 1 {
		t.Fatalf("%d connections for a start, three polls and their heartbeats, want 1", n)
	}
	if n := srv.tlsCounts.done.Load(); n != ln.n.Load() {
		t.Fatalf("handshakes metric %d, want %d (every connection accepted)", n, ln.n.Load())
	}
}

// TestConvergeConnectionResumes: the connection an agent opens while its
// long-poll is waiting (to converge: manifests, blobs, reports) resumes
// the TLS session of the poll's connection instead of a full handshake.
func TestConvergeConnectionResumes(t *testing.T) {
	fx := newServed(t)
	srv, addr, _ := fx.start(Config{PollTimeout: time.Minute}, nil)
	dev := fx.client(pki.RoleDevice, "dev-1", addr)
	ctx := context.Background()
	rep := api.Report{Facts: map[string]string{}, Installed: []api.InstalledApp{}}
	first := agentStart(t, dev, "dev-1", rep)
	polled := make(chan error, 1)
	go func() {
		_, err := dev.Desired(ctx, "dev-1", first.Digest, 2*time.Second)
		polled <- err
	}()
	waitUntil(t, 5*time.Second, "the poll is parked", func() bool { return srv.parkedCount() == 1 })
	// The poll's connection is busy: this goes over a second one.
	if _, err := dev.Report(ctx, "dev-1", rep); err != nil {
		t.Fatal(err)
	}
	if err := <-polled; err != nil {
		t.Fatal(err)
	}
	if done, resumed := srv.tlsCounts.done.Load(), srv.tlsCounts.resumed.Load(); done != 2 || resumed != 1 {
		t.Fatalf("%d handshakes, %d resumed; want 2, the second resumed", done, resumed)
	}
}

// TestPollTimeoutRefused: a long-poll's bound must be a positive duration;
// one that is not is refused and nothing waits.
func TestPollTimeoutRefused(t *testing.T) {
	fx := newServed(t)
	srv, addr, _ := fx.start(Config{PollTimeout: time.Minute}, nil)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: fx.clientTLS(pki.RoleDevice, "dev-1")}}
	t.Cleanup(hc.CloseIdleConnections)
	for _, bad := range []string{"soon", "0s", "-5s", "30"} {
		resp, err := hc.Get(addr + "/v1/devices/dev-1/desired?wait=1&after=x&timeout=" + bad)
		if err != nil {
			t.Fatal(err)
		}
		var e api.Error
		_ = json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || e.Code != api.EINVALID {
			t.Errorf("timeout=%s: %s %+v, want 400 %s", bad, resp.Status, e, api.EINVALID)
		}
	}
	if n := srv.parkedCount(); n != 0 {
		t.Fatalf("%d polls parked after refusals", n)
	}
}
