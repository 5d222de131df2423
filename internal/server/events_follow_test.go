package server

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/pki"
	"github.com/drover-dev/drover/internal/store"
)

// countingStore records the largest page of events the server read at
// once: what a follower costs it in memory.
type countingStore struct {
	store.Store
	mu      sync.Mutex
	maxRead int
}

func (c *countingStore) Events(ctx context.Context, f store.EventFilter) ([]api.Event, error) {
	evs, err := c.Store.Events(ctx, f)
	c.mu.Lock()
	c.maxRead = max(c.maxRead, len(evs))
	c.mu.Unlock()
	return evs, err
}

// smallSendBuffers makes the server's sockets accepted while small is set
// hold little unsent data, so a follower that stops reading blocks the
// server's writes soon.
type smallSendBuffers struct {
	net.Listener
	small *atomic.Bool
}

func (l smallSendBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok && l.small.Load() {
		_ = tc.SetWriteBuffer(4096)
	}
	return c, err
}

// sseReader reads a Server-Sent Events stream and keeps the id of each
// complete event (one ended by its blank line), as a browser's
// EventSource does: a half-received event has no id yet.
type sseReader struct {
	r   *bufio.Reader
	ids []int64
}

// next reads one more complete event; it returns false at the end of the
// stream or on an error.
func (s *sseReader) next() bool {
	id := int64(-1)
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			return false
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case line == "":
			if id >= 0 {
				s.ids = append(s.ids, id)
				return true
			}
		case strings.HasPrefix(line, "id: "):
			n, err := strconv.ParseInt(strings.TrimPrefix(line, "id: "), 10, 64)
			if err != nil {
				return false
			}
			id = n
		}
	}
}

func (s *sseReader) last() int64 {
	if len(s.ids) == 0 {
		return 0
	}
	return s.ids[len(s.ids)-1]
}

// TestEventsSlowFollowerDroppedAndResumes: a follower that stops reading is
// dropped once a write to it has waited FollowWriteTimeout; meanwhile the
// server answers everyone else, reads the backlog in batches however far
// behind the follower is, and a follower resuming from its last id gets
// every later event once, in order. Over HTTP/1.1 and HTTP/2 (what
// `drover events --follow` speaks).
func TestEventsSlowFollowerDroppedAndResumes(t *testing.T) {
	for _, proto := range []string{"HTTP/1.1", "HTTP/2"} {
		t.Run(proto, func(t *testing.T) {
			testSlowFollower(t, proto == "HTTP/2")
		})
	}
}

func testSlowFollower(t *testing.T, h2 bool) {
	fx := newServed(t)
	cs := &countingStore{Store: fx.st}
	fx.st = cs
	small := &atomic.Bool{}
	small.Store(true)
	srv, addr, _ := fx.start(Config{Events: EventsConfig{FollowWriteTimeout: 500 * time.Millisecond}},
		func(ln net.Listener) net.Listener { return smallSendBuffers{ln, small} })
	admin := fx.client(pki.RoleAdmin, "ops", addr)
	dev := fx.client(pki.RoleDevice, "d1", addr)
	opsTr := &http.Transport{TLSClientConfig: fx.clientTLS(pki.RoleAdmin, "metrics")}
	defer opsTr.CloseIdleConnections()
	ops := &http.Client{Transport: opsTr, Timeout: 5 * time.Second}
	ctx := context.Background()

	// A backlog of many batches and more than any connection buffers
	// (HTTP/2 lets 4 MiB wait in the client's window).
	msg := strings.Repeat("x", 2500)
	var backlog []api.Event
	for i := range 2400 {
		backlog = append(backlog, api.Event{Device: "d1", Kind: "log", Message: fmt.Sprintf("%d %s", i, msg)})
	}
	if err := srv.emit(ctx, backlog...); err != nil {
		t.Fatal(err)
	}

	tlsCfg := fx.clientTLS(pki.RoleAdmin, "follower")
	// The stalled follower's socket holds little too; the resumed one is
	// an ordinary client.
	slow := &http.Transport{TLSClientConfig: tlsCfg, ForceAttemptHTTP2: h2,
		DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, a)
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetReadBuffer(4096)
			}
			return c, err
		}}
	defer slow.CloseIdleConnections()
	fast := &http.Transport{TLSClientConfig: tlsCfg, ForceAttemptHTTP2: h2}
	defer fast.CloseIdleConnections()
	follow := func(ctx context.Context, tr *http.Transport, lastID int64) *http.Response {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, addr+"/v1/events?follow=1", nil)
		if err != nil {
			t.Fatal(err)
		}
		if lastID > 0 {
			req.Header.Set("Last-Event-ID", strconv.FormatInt(lastID, 10))
		}
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK || (resp.ProtoMajor == 2) != h2 {
			t.Fatalf("follow: %s over %s, want 200 over HTTP/%v", resp.Status, resp.Proto, map[bool]int{false: 1, true: 2}[h2])
		}
		return resp
	}

	fctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	resp := follow(fctx, slow, 0)
	defer resp.Body.Close()
	first := &sseReader{r: bufio.NewReader(resp.Body)}
	for range 10 {
		if !first.next() {
			t.Fatalf("follower got %d events, want 10 before it stalls", len(first.ids))
		}
	}
	// From here on the follower reads nothing.

	// Everyone else is still answered, promptly.
	for i := range 3 {
		start := time.Now()
		if err := dev.PostEvents(ctx, "d1", []api.Event{{Kind: "log", Message: fmt.Sprintf("during the stall %d", i)}}); err != nil {
			t.Fatalf("post events while a follower stalls: %v", err)
		}
		if _, err := admin.Devices(ctx); err != nil {
			t.Fatalf("list devices while a follower stalls: %v", err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("requests took %v while a follower stalls", d)
		}
	}

	// The stalled follower is dropped after the deadline (the default
	// 10s would be too late here), and the metrics say so.
	waitUntil(t, 8*time.Second, "slow follower dropped", func() bool {
		m := metrics(t, ops, addr)
		return strings.Contains(m, "\ndrover_event_followers_dropped_total 1\n") && strings.Contains(m, "\ndrover_event_followers 0\n")
	})
	// The follower hears of it and resumes from the last event it got.
	// (What was still in flight is read again: reading it out of a tiny
	// TCP window after the drop only takes time.)
	resp.Body.Close()
	cs.mu.Lock()
	maxRead := cs.maxRead
	cs.mu.Unlock()
	if maxRead > followBatch {
		t.Errorf("the server read %d events at once for a follower %d behind, want at most a batch of %d", maxRead, len(backlog), followBatch)
	}

	// Later events, then a resume from the last id it got.
	if err := dev.PostEvents(ctx, "d1", []api.Event{{Kind: "log", Message: "after the drop 1"}, {Kind: "log", Message: "after the drop 2"}}); err != nil {
		t.Fatal(err)
	}
	all, err := fx.st.Events(ctx, store.EventFilter{Limit: 100000})
	if err != nil {
		t.Fatal(err)
	}
	want := make([]int64, len(all))
	for i, ev := range all {
		want[i] = ev.ID
	}
	small.Store(false)
	resp2 := follow(fctx, fast, first.last())
	defer resp2.Body.Close()
	second := &sseReader{r: bufio.NewReader(resp2.Body)}
	for second.last() < want[len(want)-1] && second.next() {
	}
	got := append(slices.Clone(first.ids), second.ids...)
	if !slices.Equal(got, want) {
		t.Errorf("ids before the drop and after the resume (%d+%d) = %v...%v, want every stored id once, in order (%d): %v...%v",
			len(first.ids), len(second.ids), head(got), tailIDs(got), len(want), head(want), tailIDs(want))
	}
}

func head(ids []int64) []int64    { return ids[:min(len(ids), 5)] }
func tailIDs(ids []int64) []int64 { return ids[max(0, len(ids)-5):] }

// metrics scrapes the server's /metrics as an operator would.
func metrics(t *testing.T, hc *http.Client, addr string) string {
	t.Helper()
	resp, err := hc.Get(addr + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s, %v", resp.Status, err)
	}
	return string(b)
}

// TestEventsIdleFollowStaysUp: an idle follower is sent heartbeats and
// kept however long the gaps between sends are against the write
// timeout (a send's deadline must not outlive the send), and still gets
// the next event. Over HTTP/1.1 and HTTP/2.
func TestEventsIdleFollowStaysUp(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(map[bool]string{false: "HTTP/1.1", true: "HTTP/2"}[h2], func(t *testing.T) {
			fx := newServed(t)
			// Gaps between sends of 3x the write timeout: with the
			// deadline of one send left set, the first heartbeat fails.
			srv, addr, _ := fx.start(Config{Events: EventsConfig{
				FollowWriteTimeout: 100 * time.Millisecond, FollowHeartbeat: 300 * time.Millisecond}}, nil)
			tr := &http.Transport{TLSClientConfig: fx.clientTLS(pki.RoleAdmin, "follower"), ForceAttemptHTTP2: h2}
			defer tr.CloseIdleConnections()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, addr+"/v1/events?follow=1", nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if (resp.ProtoMajor == 2) != h2 {
				t.Fatalf("follow over %s", resp.Proto)
			}
			r := bufio.NewReader(resp.Body)
			for pings := 0; pings < 5; {
				line, err := r.ReadString('\n')
				if err != nil {
					t.Fatalf("idle stream ended after %d heartbeats: %v", pings, err)
				}
				if line == ": ping\n" {
					pings++
				}
			}
			if err := srv.emit(ctx, api.Event{Device: "d1", Kind: "log", Message: "after the idle time"}); err != nil {
				t.Fatal(err)
			}
			s := &sseReader{r: r}
			if !s.next() {
				t.Fatal("no event after the idle time: stream ended")
			}
		})
	}
}
