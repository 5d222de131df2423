package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/drover-dev/drover/internal/agent"
	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/pki"
	"github.com/drover-dev/drover/internal/push"
)

// ConvergeCPUConfig configures ConvergeCPU.
type ConvergeCPUConfig struct {
	// N is the number of devices converging; 0 = 1000.
	N int
	// Drover is the drover binary run as the server; empty builds
	// ./cmd/drover.
	Drover string
	// Dir holds the work folder; empty means /dev/shm when it exists.
	Dir string
	// Timeout bounds the whole run; 0 = 5 minutes.
	Timeout time.Duration
	// Self is the command line that runs this program's floor-server
	// subcommand; empty means os.Executable().
	Self []string
	// Out receives the figures.
	Out io.Writer
}

// ConvergeCPU measures the server CPU time a device's convergence costs:
// N real agents (in this process) connected to a real `drover server`
// process are given a new desired state in one call, and the server
// process's CPU time (utime+stime) is read from then until every agent
// has reported the state applied. Every call the agents made in that
// window is recorded (method, path, bytes each way) and then sent again,
// over N connections with the same certificates, to a floor server: a
// plain Go HTTPS server with the same TLS configuration that reads each
// request and answers as many bytes as drover did. The ratio of the two
// CPU times is what drover's own work costs over moving the bytes.
func ConvergeCPU(ctx context.Context, cfg ConvergeCPUConfig) (err error) {
	if cfg.N <= 0 {
		cfg.N = 1000
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Minute
	}
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	cfg.Dir = workDir(cfg.Dir)
	if len(cfg.Self) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find this program to run the floor server: %w", err)
		}
		cfg.Self = []string{exe}
	}
	out := cfg.Out
	n := cfg.N
	if soft, _, err := RaiseOpenFiles(); err != nil {
		return err
	} else if soft < uint64(n)*2+512 {
		return fmt.Errorf("resource limit: %d agents and %d floor clients need about %d open files; the limit is %d", n, n, 2*n+512, soft)
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	bin, done, err := droverBinary(ctx, cfg.Drover)
	if err != nil {
		return err
	}
	defer done()
	dir, err := os.MkdirTemp(cfg.Dir, "drover-bench-cpu-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	pkiDir := filepath.Join(dir, "pki")
	ids, err := issueFleet(ctx, pkiDir, n)
	if err != nil {
		return err
	}
	srv, err := startServer(ctx, bin, dir, pkiDir)
	if err != nil {
		return err
	}
	defer srv.stop()
	admin, err := newClient(srv.addr, pkiDir, "bench-admin")
	if err != nil {
		return err
	}
	defer admin.Close()
	pkgPath, err := writeFleetPackage(dir)
	if err != nil {
		return err
	}
	if _, err := push.File(ctx, admin, pkgPath, nil); err != nil {
		return err
	}
	rec := &recorder{}
	recs := make([]*deviceCalls, n)
	next := 0
	fl, err := startAgents(ctx, dir, pkiDir, srv.addr, ids, func(_ *agent.Config, s agent.Server) agent.Server {
		d := &deviceCalls{rec: rec}
		recs[next] = d
		next++
		return &recordingServer{Server: s, calls: d}
	})
	defer fl.stop()
	if err != nil {
		return fl.explain(err)
	}
	if err := waitRegistered(ctx, admin, ids, fl); err != nil {
		return fl.explain(err)
	}
	before := make([]string, n)
	for i, a := range fl.agents {
		before[i], _ = a.Status()
	}
	// Let the last first-run reports and long-polls land before the clock.
	time.Sleep(time.Second)

	pid := srv.cmd.Process.Pid
	rec.on.Store(true)
	cpu0, t0 := procCPU(pid), time.Now()
	if _, _, err := setStatesBulk(ctx, admin, ids); err != nil {
		return fl.explain(err)
	}
	// The operator's call is not the devices' work: its CPU is printed
	// apart (the agents start converging while it is answered, so this
	// split is approximate by a few ms).
	cpuSet := procCPU(pid)
	if err := waitReported(ctx, fl, recs, before); err != nil {
		return fl.explain(err)
	}
	cpu1, took := procCPU(pid), time.Since(t0)
	drover := cpu1 - cpuSet
	rec.on.Store(false)

	calls, reqBytes, respBytes := 0, int64(0), int64(0)
	kinds := map[string]int{}
	for _, d := range recs {
		for _, c := range d.list() {
			calls++
			reqBytes += int64(len(c.body))
			respBytes += c.answer
			kinds[c.kind]++
		}
	}
	fmt.Fprintf(out, "converge-cpu: N=%d devices converged in %s; drover server cpu=%s (%.2fms/device) after the state set (which took cpu=%s)\n",
		n, secs(took), secs(drover), float64(drover.Microseconds())/1000/float64(n), secs(cpuSet-cpu0))
	fmt.Fprintf(out, "    calls in the window: %d (%.1f/device:", calls, float64(calls)/float64(n))
	for _, k := range []string{"report", "desired", "pack", "blob", "events", "keepalive"} {
		if kinds[k] > 0 {
			fmt.Fprintf(out, " %s=%d", k, kinds[k])
		}
	}
	fmt.Fprintf(out, "), request bytes %d, answer bytes %d (%.0f B/device)\n", reqBytes, respBytes, float64(reqBytes+respBytes)/float64(n))
	// The agents stop before the floor runs, so only the floor and its
	// clients share the cores.
	fl.stop()
	srv.stop()

	floor, err := runFloor(ctx, cfg.Self, pkiDir, ids, recs)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "    floor server (net/http, same TLS config, same calls and bytes) cpu=%s (%.2fms/device)\n",
		secs(floor), float64(floor.Microseconds())/1000/float64(n))
	ratio := 0.0
	if floor > 0 {
		ratio = float64(drover) / float64(floor)
	}
	fmt.Fprintf(out, "    drover/floor=%.2f\n", ratio)
	return nil
}

// recorder turns recording on for every device at once.
type recorder struct{ on atomic.Bool }

// call is one recorded wire call.
type call struct {
	kind, method, path string
	body               []byte
	answer             int64
}

// deviceCalls are one device's recorded calls, in order, and the applied
// digest of its last answered report.
type deviceCalls struct {
	rec         *recorder
	mu          sync.Mutex
	calls       []call
	lastApplied string
}

func (d *deviceCalls) add(c call) {
	if !d.rec.on.Load() {
		return
	}
	d.mu.Lock()
	d.calls = append(d.calls, c)
	d.mu.Unlock()
}

func (d *deviceCalls) list() []call {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]call(nil), d.calls...)
}

func (d *deviceCalls) applied() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.lastApplied
}

// recordingServer is an agent's server that records each call it
// answers with the bytes that went each way (JSON bodies as the client
// encodes them; streams as read).
type recordingServer struct {
	agent.Server
	calls *deviceCalls
}

func jsonLen(v any) int64 {
	b, _ := json.Marshal(v)
	return int64(len(b)) + 1 // json.Encoder's newline
}

func jsonBytes(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

func (s *recordingServer) Report(ctx context.Context, id string, r api.Report) (api.ReportResponse, error) {
	resp, err := s.Server.Report(ctx, id, r)
	if err == nil {
		s.calls.add(call{kind: "report", method: http.MethodPost, path: "/v1/devices/" + id + "/report", body: jsonBytes(r), answer: jsonLen(resp)})
		s.calls.mu.Lock()
		s.calls.lastApplied = r.Applied
		s.calls.mu.Unlock()
	}
	return resp, err
}

func (s *recordingServer) Desired(ctx context.Context, id, after string, wait time.Duration) (*api.Resolved, error) {
	res, err := s.Server.Desired(ctx, id, after, wait)
	if err == nil {
		q := "?after=" + after
		if wait > 0 {
			q += "&wait=1&timeout=" + wait.String()
		}
		s.calls.add(call{kind: "desired", method: http.MethodGet, path: "/v1/devices/" + id + "/desired" + q, answer: jsonLen(res)})
	}
	return res, err
}

func (s *recordingServer) PostEvents(ctx context.Context, id string, evs []api.Event) error {
	err := s.Server.PostEvents(ctx, id, evs)
	if err == nil {
		s.calls.add(call{kind: "events", method: http.MethodPost, path: "/v1/devices/" + id + "/events", body: jsonBytes(evs)})
	}
	return err
}

func (s *recordingServer) Keepalive(ctx context.Context, id string, req api.KeepaliveRequest) (api.KeepaliveResponse, error) {
	resp, err := s.Server.Keepalive(ctx, id, req)
	if err == nil {
		s.calls.add(call{kind: "keepalive", method: http.MethodPost, path: "/v1/devices/" + id + "/keepalive", body: jsonBytes(req), answer: jsonLen(resp)})
	}
	return resp, err
}

func (s *recordingServer) BlobRange(ctx context.Context, digest string, offset int64, compressed bool) (io.ReadCloser, string, bool, error) {
	body, enc, partial, err := s.Server.BlobRange(ctx, digest, offset, compressed)
	if err != nil {
		return body, enc, partial, err
	}
	return &countingBody{ReadCloser: body, done: func(n int64) {
		s.calls.add(call{kind: "blob", method: http.MethodGet, path: "/v1/blobs/" + digest, answer: n})
	}}, enc, partial, nil
}

func (s *recordingServer) Pack(ctx context.Context, req api.PackRequest, offset int64, etag string) (io.ReadCloser, string, bool, error) {
	body, tag, partial, err := s.Server.Pack(ctx, req, offset, etag)
	if err != nil {
		return body, tag, partial, err
	}
	reqBody := jsonBytes(req)
	return &countingBody{ReadCloser: body, done: func(n int64) {
		s.calls.add(call{kind: "pack", method: http.MethodPost, path: "/v1/blobs/pack", body: reqBody, answer: n})
	}}, tag, partial, nil
}

// countingBody counts the bytes read from a stream and reports them once,
// when it is closed.
type countingBody struct {
	io.ReadCloser
	n    int64
	once sync.Once
	done func(int64)
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	return n, err
}

func (b *countingBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(func() { b.done(b.n) })
	return err
}

// waitReported waits until every agent has applied a state other than
// before and its report saying so has been answered.
func waitReported(ctx context.Context, fl *fleet, recs []*deviceCalls, before []string) error {
	for {
		done := 0
		for i, a := range fl.agents {
			if applied, _ := a.Status(); applied != before[i] && recs[i].applied() == applied {
				done++
			}
		}
		if done == len(fl.agents) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d of %d devices reported the new state: %w", done, len(fl.agents), ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

var floorAddrRe = regexp.MustCompile(`^addr=(https://\S+)$`)

// runFloor starts the floor server process, connects one client per
// device (its own certificate and TLS connection, as the agents had
// before the clock started), then sends every device's recorded calls,
// all devices at once and each device's in order, and returns the CPU
// time the floor process used for them.
func runFloor(ctx context.Context, self []string, pkiDir string, ids []string, recs []*deviceCalls) (time.Duration, error) {
	args := append(append([]string{}, self[1:]...), "floor-server", "-pki", pkiDir)
	cmd := exec.Command(self[0], args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return 0, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start floor server: %w", err)
	}
	defer func() {
		_ = stdin.Close()
		_ = cmd.Wait()
	}()
	sc := bufio.NewScanner(stdout)
	addr := ""
	for sc.Scan() {
		if m := floorAddrRe.FindStringSubmatch(sc.Text()); m != nil {
			addr = m[1]
			break
		}
	}
	if addr == "" {
		return 0, errors.New("floor server gave no address")
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()

	clients := make([]*http.Client, len(ids))
	defer func() {
		for _, c := range clients {
			if c != nil {
				c.CloseIdleConnections()
			}
		}
	}()
	ca := filepath.Join(pkiDir, pki.CACertFile)
	err = parallel(ctx, 32, len(ids), func(i int) error {
		tlsCfg, err := pki.ClientTLSConfig(filepath.Join(pkiDir, ids[i]+".crt"), filepath.Join(pkiDir, ids[i]+".key"), ca)
		if err != nil {
			return err
		}
		// The agent's transport (internal/client): HTTP/2, sessions
		// resumed. Its connection was idle before the state set and had
		// closed, so each device's calls start with a resumed handshake,
		// here as with drover.
		tlsCfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
		clients[i] = &http.Client{Transport: &http.Transport{
			Proxy:             nil,
			DialContext:       (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSClientConfig:   tlsCfg,
			ForceAttemptHTTP2: true,
			HTTP2:             &http.HTTP2Config{MaxReceiveBufferPerStream: 1 << 20},
		}}
		return floorCall(ctx, clients[i], addr, call{method: http.MethodGet, path: "/connect"})
	})
	if err != nil {
		return 0, fmt.Errorf("floor: connect: %w", err)
	}
	for _, c := range clients {
		c.CloseIdleConnections()
	}
	pid := cmd.Process.Pid
	cpu0 := procCPU(pid)
	err = parallel(ctx, len(ids), len(ids), func(i int) error {
		for _, c := range recs[i].list() {
			if err := floorCall(ctx, clients[i], addr, c); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("floor: %w", err)
	}
	return procCPU(pid) - cpu0, nil
}

// floorAnswerHeader tells the floor server how many bytes to answer.
const floorAnswerHeader = "Bench-Answer-Bytes"

func floorCall(ctx context.Context, c *http.Client, addr string, cl call) error {
	var body io.Reader
	if cl.body != nil {
		body = bytes.NewReader(cl.body)
	}
	req, err := http.NewRequestWithContext(ctx, cl.method, addr+cl.path, body)
	if err != nil {
		return err
	}
	if cl.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set(floorAnswerHeader, strconv.FormatInt(cl.answer, 10))
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("floor answered %s", resp.Status)
	}
	return nil
}

// FloorServerConfig configures FloorServer.
type FloorServerConfig struct {
	// PKI is the folder with localhost.crt/.key and the CA.
	PKI string
	// In ends the server when it is closed; Out gets "addr=URL".
	In  io.Reader
	Out io.Writer
}

// FloorServer is the floor of ConvergeCPU: net/http over TLS with drover's
// own server TLS configuration (pki.ServerTLSConfig), HTTP/2 as
// negotiated, that reads each request's body and answers the number of
// bytes the request asks for, as JSON would go out. It runs until In is
// closed or ctx ends.
func FloorServer(ctx context.Context, cfg FloorServerConfig) error {
	tlsCfg, err := pki.ServerTLSConfig(filepath.Join(cfg.PKI, "localhost.crt"), filepath.Join(cfg.PKI, "localhost.key"), filepath.Join(cfg.PKI, pki.CACertFile))
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	filler := bytes.Repeat([]byte("x"), 64<<10)
	hs := &http.Server{
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
				http.Error(w, "a client certificate is required", http.StatusUnauthorized)
				return
			}
			_, _ = io.Copy(io.Discard, r.Body)
			n, _ := strconv.ParseInt(r.Header.Get(floorAnswerHeader), 10, 64)
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
			for n > 0 {
				k := min(n, int64(len(filler)))
				if _, err := w.Write(filler[:k]); err != nil {
					return
				}
				n -= k
			}
		}),
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if cfg.In != nil {
		go func() {
			_, _ = io.Copy(io.Discard, cfg.In)
			cancel()
		}()
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.ServeTLS(ln, "", "") }()
	fmt.Fprintf(cfg.Out, "addr=https://%s\n", ln.Addr())
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	_ = hs.Close()
	<-errc
	return nil
}
