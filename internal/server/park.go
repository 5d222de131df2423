package server

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// A long-poll over HTTP/1.1 waits parked: its connection is taken from
// net/http (hijacked) and no goroutine waits for it; the hub or a timer
// answers it, and the connection goes back to net/http for its next
// request. An idle agent then costs the server its TLS connection and a
// few hundred bytes, not the goroutines, buffers and stream state net/http
// keeps for a request in flight. Agents long-poll over HTTP/1.1 for this
// (internal/client); a long-poll over HTTP/2 (older agents) waits in its
// handler as before.

// parkWriteTimeout bounds writing a parked poll's answer.
const parkWriteTimeout = 10 * time.Second

// parking holds the parked long-polls of a serving server.
type parking struct {
	mu      sync.Mutex
	ln      *handshakeListener // nil: parking is off
	ctx     context.Context    // for resolutions outside any request
	parked  map[*parkedPoll]struct{}
	closing bool
}

// start turns parking on for connections of ln.
func (pk *parking) start(ctx context.Context, ln *handshakeListener) {
	pk.mu.Lock()
	defer pk.mu.Unlock()
	pk.ln, pk.ctx, pk.parked, pk.closing = ln, context.WithoutCancel(ctx), map[*parkedPoll]struct{}{}, false
}

// stop answers every parked poll with the current state and closes its
// connection: the server is stopping.
func (pk *parking) stop() {
	pk.mu.Lock()
	pk.closing = true
	ps := make([]*parkedPoll, 0, len(pk.parked))
	for p := range pk.parked {
		ps = append(ps, p)
	}
	pk.mu.Unlock()
	for _, p := range ps {
		p.wake(true)
	}
}

// parkedCount is how many polls are parked.
func (s *Server) parkedCount() int {
	s.parking.mu.Lock()
	defer s.parking.mu.Unlock()
	return len(s.parking.parked)
}

// parkedPoll is one parked long-poll.
type parkedPoll struct {
	s         *Server
	conn      net.Conn
	id, after string
	keep      bool // serve the connection's next request once answered

	mu    sync.Mutex
	done  bool
	timer *time.Timer
	stop  func() // of the hub watch
}

// park takes the connection of r, a long-poll that must wait until
// deadline, and parks it. It returns false, having changed nothing, when
// the request cannot be parked (HTTP/2, a connection net/http did not get
// from this server's listener): the caller then waits as before.
func (s *Server) park(w http.ResponseWriter, r *http.Request, id, after string, deadline time.Time) bool {
	pk := &s.parking
	pk.mu.Lock()
	on := pk.ln != nil && !pk.closing
	pk.mu.Unlock()
	if !on || r.ProtoMajor != 1 || r.TLS == nil {
		return false
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return false
	}
	// Bytes already read past this request (a pipelining client) would
	// be lost to net/http: answer, then close.
	keep := !r.Close && brw.Reader.Buffered() == 0
	_ = conn.SetDeadline(time.Time{})
	p := &parkedPoll{s: s, conn: conn, id: id, after: after, keep: keep}
	pk.mu.Lock()
	if pk.closing {
		pk.mu.Unlock()
		p.keep = false
		p.answer(s.res.get(pk.ctx, id))
		return true
	}
	pk.parked[p] = struct{}{}
	pk.mu.Unlock()
	p.mu.Lock()
	p.timer = time.AfterFunc(time.Until(deadline), func() { p.wake(true) })
	p.mu.Unlock()
	// The state may have changed since the handler looked.
	p.wake(false)
	return true
}

// wake looks at the device's state again: the poll is answered when it
// changed, when its time is up (timeout) or when the server stops;
// otherwise it stays parked, watching the hub again.
func (p *parkedPoll) wake(timeout bool) {
	pk := &p.s.parking
	p.mu.Lock()
	if p.done {
		p.mu.Unlock()
		return
	}
	if p.stop != nil {
		p.stop()
	}
	// Watch before looking, so no change between the two is missed.
	p.stop = p.s.hub.watch(p.id, func() { p.wake(false) })
	res, err := p.s.res.get(pk.ctx, p.id)
	pk.mu.Lock()
	closing := pk.closing
	pk.mu.Unlock()
	if err == nil && !timeout && !closing && res.r.Digest == p.after {
		p.mu.Unlock()
		return
	}
	p.done = true
	p.stop()
	p.timer.Stop()
	p.mu.Unlock()
	pk.mu.Lock()
	delete(pk.parked, p)
	if pk.closing {
		p.keep = false
	}
	pk.mu.Unlock()
	p.answer(res, err)
}

// answer writes the poll's HTTP/1.1 answer (the resolved state, as
// writeJSON would) and gives the connection back to net/http, or closes
// it.
func (p *parkedPoll) answer(res *resolution, err error) {
	if err != nil {
		p.s.log.Error("internal error", "method", http.MethodGet, "path", "/v1/devices/"+p.id+"/desired", "err", err)
		_ = p.conn.Close()
		return
	}
	body, err := json.Marshal(res.r)
	if err != nil {
		_ = p.conn.Close()
		return
	}
	var b bytes.Buffer
	b.Grow(len(body) + 160)
	b.WriteString("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nDate: ")
	b.WriteString(time.Now().UTC().Format(http.TimeFormat))
	b.WriteString("\r\nContent-Length: ")
	b.WriteString(strconv.Itoa(len(body) + 1))
	if !p.keep {
		b.WriteString("\r\nConnection: close")
	}
	b.WriteString("\r\n\r\n")
	b.Write(body)
	b.WriteByte('\n')
	_ = p.conn.SetWriteDeadline(time.Now().Add(parkWriteTimeout))
	_, err = p.conn.Write(b.Bytes())
	_ = p.conn.SetWriteDeadline(time.Time{})
	if err != nil || !p.keep {
		_ = p.conn.Close()
		return
	}
	p.s.parking.mu.Lock()
	ln := p.s.parking.ln
	p.s.parking.mu.Unlock()
	ln.inject(p.conn)
}
