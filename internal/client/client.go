// Package client speaks drover's wire API (/v1, JSON over HTTPS with mTLS)
// for the command-line tool and the agent. It holds no logic beyond
// encoding requests and decoding answers and errors.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/drover-dev/drover/internal/api"
)

// Config says where the server is and how to reach it.
type Config struct {
	// Addr is the server's base URL, e.g. https://127.0.0.1:8443.
	Addr string
	// TLS carries the CA pool and the client certificate.
	TLS *tls.Config
	// Timeout bounds every request but the long-poll and streams; 0 = 30s.
	Timeout time.Duration
	// MaxConnsPerHost bounds connections; 0 = no bound.
	MaxConnsPerHost int
	// LocalAddr is the address connections are made from; nil lets the
	// system choose. A benchmark holding tens of thousands of loopback
	// connections spreads them over several 127.0.0.x addresses, each
	// with its own range of ephemeral ports.
	LocalAddr net.Addr
}

// Client is a connection pool to one server. It is safe for concurrent use.
type Client struct {
	base *url.URL
	http *http.Client
	// poll carries the device long-poll alone, over HTTP/1.1: a server
	// parks such a poll on its connection with no goroutine and few
	// bytes (an HTTP/2 stream in flight costs it tens of kB), and an
	// older server serves it as any request.
	poll    *http.Client
	timeout time.Duration
	tls     *tls.Config

	// polls counts the long-polls in flight. A device's small requests
	// (a report, its events, a read of its state) go over the poll's own
	// connection when no poll is in flight: an agent's first report and
	// read, then each heartbeat between two polls. An idle agent then
	// holds exactly one connection and handshakes once, instead of once
	// per heartbeat.
	polls atomic.Int32
}

// device returns the client for a small request of a device: the poll's
// connection (HTTP/1.1) when no poll is in flight, the shared HTTP/2
// connection while one waits.
func (c *Client) device() *http.Client {
	if c.polls.Load() == 0 {
		return c.poll
	}
	return c.http
}

// deviceJSON is doJSON over c.device().
func (c *Client) deviceJSON(ctx context.Context, method, path string, in, out any) error {
	body, ct, err := jsonRequest(in)
	if err != nil {
		return err
	}
	return c.doOn(c.device(), ctx, method, path, nil, body, ct, out, c.timeout)
}

// idleConnTimeout closes a connection that has carried no request for
// this long. An idle agent's only connection is then its long-poll's,
// which the server parks cheaply; the connection of its other requests
// (a report, a convergence, each a burst) comes and goes.
const idleConnTimeout = 2 * time.Second

// ErrUnreachable wraps transport failures (server down, network), so the
// agent can tell "try again later" from an answer; TLS failures are
// ErrTLS instead.
var ErrUnreachable = errors.New("server unreachable")

// New returns a client for cfg.
func New(cfg Config) (*Client, error) {
	if cfg.Addr == "" {
		return nil, fmt.Errorf("no server address: set --addr or DROVER_ADDR")
	}
	u, err := url.Parse(cfg.Addr)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("server address %q: want https://HOST:PORT", cfg.Addr)
	}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	tlsCfg, pollTLS := cfg.TLS, (*tls.Config)(nil)
	if cfg.TLS != nil {
		// Sessions resume: idle connections close soon (idleConnTimeout),
		// so an agent's next burst of requests opens a new one, and a
		// resumed handshake costs the server a key exchange rather than
		// a certificate chain to verify. The server still checks the
		// chain (validity, CA) it resumes.
		tlsCfg = cfg.TLS.Clone()
		if tlsCfg.ClientSessionCache == nil {
			tlsCfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
		}
		// The poll's connection lives long and handshakes once: no
		// resumption, whose larger hello the server would keep buffered
		// for the connection's life. The tickets the server sends on it
		// are kept for the other transport, so the connection an agent
		// opens to converge resumes too: when a whole fleet is told to
		// change at once, that is every agent handshaking at once.
		pollTLS = cfg.TLS.Clone()
		pollTLS.NextProtos = []string{"http/1.1"}
		pollTLS.ClientSessionCache = ticketsFor{tlsCfg.ClientSessionCache}
	}
	tr := &http.Transport{
		Proxy:               nil, // a fleet's mTLS endpoint is never reached through a proxy
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second, LocalAddr: cfg.LocalAddr}).DialContext,
		TLSClientConfig:     tlsCfg,
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConnsPerHost: 16,
		MaxConnsPerHost:     cfg.MaxConnsPerHost,
		IdleConnTimeout:     idleConnTimeout,
		ForceAttemptHTTP2:   true,
		// Bytes received but not yet read are lost when a connection
		// drops; a bounded window bounds what a resumed download
		// fetches twice (1 MiB is 20 MB/s at 50 ms round trips).
		HTTP2: &http.HTTP2Config{MaxReceiveBufferPerStream: 1 << 20},
	}
	pt := &http.Transport{
		Proxy:               nil,
		DialContext:         tr.DialContext,
		TLSClientConfig:     pollTLS,
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConnsPerHost: 1,
		IdleConnTimeout:     90 * time.Second,
		// A non-nil empty map: never HTTP/2.
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{},
	}
	return &Client{base: u, http: &http.Client{Transport: tr}, poll: &http.Client{Transport: pt}, timeout: timeout, tls: cfg.TLS}, nil
}

// ticketsFor is a session cache that stores the sessions its connections
// are given into another cache and never resumes one itself.
type ticketsFor struct{ tls.ClientSessionCache }

// Get finds nothing: the connection handshakes in full.
func (ticketsFor) Get(string) (*tls.ClientSessionState, bool) { return nil, false }

// Close releases idle connections.
func (c *Client) Close() {
	c.http.CloseIdleConnections()
	c.poll.CloseIdleConnections()
}

// Addr returns the server's base URL.
func (c *Client) Addr() string { return c.base.String() }

func (c *Client) url(path string, q url.Values) string {
	u := *c.base
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	if len(q) > 0 {
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// do sends a request and decodes a JSON answer into out (if not nil).
// A non-2xx answer becomes an *api.Error.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, body io.Reader, contentType string, out any, timeout time.Duration) error {
	return c.doOn(c.http, ctx, method, path, q, body, contentType, out, timeout)
}

// doOn is do over the client hc (c.http or c.poll).
func (c *Client) doOn(hc *http.Client, ctx context.Context, method, path string, q url.Values, body io.Reader, contentType string, out any, timeout time.Duration) error {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, method, c.url(path, q), body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return c.transportError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return decodeError(resp)
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
	}
	return nil
}

func (c *Client) transportError(err error) error {
	if errors.Is(err, context.Canceled) {
		return err
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	why := tlsReason(err)
	if why == "" && droppedAfterHandshake(err) {
		// With TLS 1.3 a server refuses a client certificate after the
		// client's side of the handshake is done, so the request may
		// meet a reset connection instead of the alert: ask again and
		// read the alert.
		why = c.probeTLS()
	}
	if why != "" {
		return fmt.Errorf("%w with %s: %s", ErrTLS, c.base.Host, why)
	}
	return fmt.Errorf("%w: %s: %v", ErrUnreachable, c.base.Host, err)
}

func decodeError(resp *http.Response) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var e api.Error
	if json.Unmarshal(data, &e) == nil && e.Code != "" {
		if e.RetryAfter == 0 {
			e.RetryAfter, _ = strconv.Atoi(resp.Header.Get("Retry-After"))
		}
		return &e
	}
	msg := strings.TrimSpace(string(data))
	if msg == "" {
		msg = resp.Status
	}
	return &api.Error{Code: api.CodeForStatus(resp.StatusCode), Message: msg}
}

func jsonBody(v any) (io.Reader, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return bytes.NewReader(data), nil
}

func (c *Client) doJSON(ctx context.Context, method, path string, q url.Values, in, out any) error {
	body, ct, err := jsonRequest(in)
	if err != nil {
		return err
	}
	return c.do(ctx, method, path, q, body, ct, out, c.timeout)
}

// jsonRequest is the body and content type of a request carrying in
// (none when in is nil).
func jsonRequest(in any) (io.Reader, string, error) {
	if in == nil {
		return nil, "", nil
	}
	b, err := jsonBody(in)
	if err != nil {
		return nil, "", err
	}
	return b, "application/json", nil
}

func esc(s string) string { return url.PathEscape(s) }

// Report sends a device's report and returns the current desired digest.
func (c *Client) Report(ctx context.Context, id string, r api.Report) (api.ReportResponse, error) {
	var out api.ReportResponse
	err := c.deviceJSON(ctx, http.MethodPost, "/v1/devices/"+esc(id)+"/report", r, &out)
	return out, err
}

// Desired returns the device's resolved desired state. With wait > 0 it
// is a long-poll: the server answers when the state's digest differs from
// after, or after wait (or its own poll timeout, when shorter) with the
// same state. An agent waits as long as its heartbeat period, so that the
// poll ends when a report is due and the report goes over the poll's
// connection (an older server ignores the bound and answers after its own
// timeout).
func (c *Client) Desired(ctx context.Context, id, after string, wait time.Duration) (*api.Resolved, error) {
	q := url.Values{}
	if after != "" {
		q.Set("after", after)
	}
	timeout, hc := c.timeout, c.device()
	if wait > 0 {
		q.Set("wait", "1")
		q.Set("timeout", wait.String())
		// The server answers after wait (an older one after its own
		// timeout, a minute by default); a poll that outlives both by far
		// rides a connection that died without a word (a NAT dropping it):
		// give up on it and poll again on a new one.
		timeout = max(wait, time.Minute) + 30*time.Second
		hc = c.poll
		c.polls.Add(1)
		defer c.polls.Add(-1)
	}
	var out api.Resolved
	err := c.doOn(hc, ctx, http.MethodGet, "/v1/devices/"+esc(id)+"/desired", q, nil, "", &out, timeout)
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// PostEvents stores events from a device.
func (c *Client) PostEvents(ctx context.Context, id string, evs []api.Event) error {
	return c.deviceJSON(ctx, http.MethodPost, "/v1/devices/"+esc(id)+"/events", evs, nil)
}

// Blob opens a blob's content. The caller closes it and must verify the
// digest (blob.Store.Put does).
func (c *Client) Blob(ctx context.Context, digest string) (io.ReadCloser, int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url("/v1/blobs/"+esc(digest), nil), nil)
	if err != nil {
		return nil, 0, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, 0, c.transportError(err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, 0, decodeError(resp)
	}
	return resp.Body, resp.ContentLength, nil
}

// Missing returns which of digests the server lacks.
func (c *Client) Missing(ctx context.Context, digests []string) ([]string, error) {
	var out api.MissingResponse
	err := c.doJSON(ctx, http.MethodPost, "/v1/blobs/missing", nil, api.MissingRequest{Digests: digests}, &out)
	return out.Missing, err
}

// PutBlob uploads one blob of size bytes; the server verifies its digest.
func (c *Client) PutBlob(ctx context.Context, digest string, size int64, r io.Reader) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, c.url("/v1/blobs/"+esc(digest), nil), r)
	if err != nil {
		return err
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := c.http.Do(req)
	if err != nil {
		return c.transportError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return decodeError(resp)
	}
	return nil
}

// PushManifest registers a build whose blobs are all uploaded.
func (c *Client) PushManifest(ctx context.Context, manifestJSON []byte) (api.Build, error) {
	var out api.Build
	err := c.do(ctx, http.MethodPost, "/v1/packages", nil, bytes.NewReader(manifestJSON), "application/json", &out, c.timeout)
	return out, err
}

// Packages lists builds, of one package (group:name) or all.
func (c *Client) Packages(ctx context.Context, name string) ([]api.Build, error) {
	q := url.Values{}
	if name != "" {
		q.Set("name", name)
	}
	var out []api.Build
	err := c.doJSON(ctx, http.MethodGet, "/v1/packages", q, nil, &out)
	return out, err
}

// DeletePackage removes the builds of a coordinate (only the one with
// exactly tags, when tags is not nil) and returns how many went.
func (c *Client) DeletePackage(ctx context.Context, coordinate string, tags []string) (int, error) {
	q := url.Values{}
	if tags != nil {
		q.Set("tags", strings.Join(tags, ","))
	}
	var out struct {
		Deleted int `json:"deleted"`
	}
	err := c.doJSON(ctx, http.MethodDelete, "/v1/packages/"+esc(coordinate), q, nil, &out)
	return out.Deleted, err
}

// Devices lists every device.
func (c *Client) Devices(ctx context.Context) ([]api.Device, error) {
	var out []api.Device
	err := c.doJSON(ctx, http.MethodGet, "/v1/devices", nil, nil, &out)
	return out, err
}

// Device returns one device.
func (c *Client) Device(ctx context.Context, id string) (api.Device, error) {
	var out api.Device
	err := c.doJSON(ctx, http.MethodGet, "/v1/devices/"+esc(id), nil, nil, &out)
	return out, err
}

// State returns a device's declared desired state.
func (c *Client) State(ctx context.Context, id string) (api.DesiredState, error) {
	var out api.DesiredState
	err := c.doJSON(ctx, http.MethodGet, "/v1/devices/"+esc(id)+"/state", nil, nil, &out)
	return out, err
}

// SetState declares a device's desired state; the server refuses one it
// cannot resolve.
func (c *Client) SetState(ctx context.Context, s api.DesiredState) (*api.Resolved, error) {
	var out api.Resolved
	err := c.doJSON(ctx, http.MethodPut, "/v1/devices/"+esc(s.ID)+"/state", nil, s, &out)
	return &out, err
}

// SetStates declares the desired states of many devices at once; the
// server stores all of them or none.
func (c *Client) SetStates(ctx context.Context, sts []api.DesiredState) ([]api.Resolved, error) {
	var out []api.Resolved
	err := c.doJSON(ctx, http.MethodPut, "/v1/states", nil, sts, &out)
	return out, err
}

// EventQuery filters stored events.
type EventQuery struct {
	After int64
	// Since keeps events stored at or after it; zero = no bound.
	Since       time.Time
	Device      string
	Kind        string
	MinPriority string
	Limit       int
	// Wait makes the server hold the request until an event newer than
	// After exists (or its poll timeout passes).
	Wait bool
}

// Events returns stored events matching q, oldest first.
func (c *Client) Events(ctx context.Context, q EventQuery) ([]api.Event, error) {
	v := q.values()
	timeout := c.timeout
	if q.Wait {
		v.Set("wait", "1")
		timeout = 0
	}
	var out []api.Event
	err := c.do(ctx, http.MethodGet, "/v1/events", v, nil, "", &out, timeout)
	return out, err
}

// maxTrustFile bounds one TUF metadata file read from the server.
const maxTrustFile = 16 << 20

// TrustMetadata returns a TUF metadata file the server serves under
// /v1/trust/ ("timestamp.json", "2.root.json", "bins-3a.json"); a missing
// one is an *api.Error with ENOTFOUND.
func (c *Client) TrustMetadata(ctx context.Context, name string) ([]byte, error) {
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url("/v1/trust/"+esc(name), nil), nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, c.transportError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, decodeError(resp)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxTrustFile+1))
	if err != nil {
		return nil, fmt.Errorf("get trust metadata %s: %w", name, err)
	}
	if len(data) > maxTrustFile {
		return nil, fmt.Errorf("get trust metadata %s: over %d bytes", name, maxTrustFile)
	}
	return data, nil
}

// PutTrustMetadata uploads signed targets metadata (bins) by role name.
func (c *Client) PutTrustMetadata(ctx context.Context, roles map[string][]byte) error {
	return c.doJSON(ctx, http.MethodPut, "/v1/trust/targets", nil, api.TrustUpload{Roles: roles}, nil)
}

// RenewCertificate sends a device's certificate request and returns its
// new certificate (PEM).
func (c *Client) RenewCertificate(ctx context.Context, id string, csrPEM []byte) ([]byte, error) {
	var out api.RenewResponse
	if err := c.doJSON(ctx, http.MethodPost, "/v1/devices/"+esc(id)+"/certificate", nil, api.RenewRequest{CSR: string(csrPEM)}, &out); err != nil {
		return nil, err
	}
	return []byte(out.Certificate), nil
}

// UILogin asks for a one-time login URL of the fleet page, valid for ttl
// (0 = the server's default).
func (c *Client) UILogin(ctx context.Context, ttl time.Duration) (api.UILogin, error) {
	var out api.UILogin
	err := c.doJSON(ctx, http.MethodPost, "/v1/ui/login", nil, api.UILoginRequest{TTL: api.Duration(ttl)}, &out)
	return out, err
}

// BlobRange opens a blob's content from byte offset on (a resumed
// download). With compressed, it asks for the zstd form, and the answer's
// encoding says what came: "zstd" or "" (the blob itself; an older server
// or a blob that does not compress). The offset counts bytes of that
// form. partial is false when the server sent the whole form from the
// start despite the offset. The caller closes body and verifies the
// digest.
func (c *Client) BlobRange(ctx context.Context, digest string, offset int64, compressed bool) (body io.ReadCloser, encoding string, partial bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url("/v1/blobs/"+esc(digest), nil), nil)
	if err != nil {
		return nil, "", false, err
	}
	if compressed {
		// Set by hand, the transport leaves the body as it came.
		req.Header.Set("Accept-Encoding", "zstd")
	}
	if offset > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(offset, 10)+"-")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, "", false, c.transportError(err)
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPartialContent {
		defer resp.Body.Close()
		return nil, "", false, decodeError(resp)
	}
	enc := resp.Header.Get("Content-Encoding")
	if enc != "" && enc != "zstd" {
		resp.Body.Close()
		return nil, "", false, fmt.Errorf("blob %s: unknown content encoding %q", digest, enc)
	}
	return resp.Body, enc, resp.StatusCode == http.StatusPartialContent, nil
}

// Pack opens a pack stream (package transfer) of the blobs req names. A
// server without the call answers an *api.Error with code ENOTFOUND. With
// offset > 0 and the etag of an earlier answer to the same request, it
// asks for the rest of that answer from byte offset on (a resumed
// download); partial says whether that is what came. The caller closes
// the stream and verifies every blob.
func (c *Client) Pack(ctx context.Context, req api.PackRequest, offset int64, etag string) (body io.ReadCloser, tag string, partial bool, err error) {
	data, err := jsonBody(req)
	if err != nil {
		return nil, "", false, err
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url("/v1/blobs/pack", nil), data)
	if err != nil {
		return nil, "", false, err
	}
	hr.Header.Set("Content-Type", "application/json")
	if offset > 0 && etag != "" {
		hr.Header.Set("Range", "bytes="+strconv.FormatInt(offset, 10)+"-")
		hr.Header.Set("If-Range", etag)
	}
	resp, err := c.http.Do(hr)
	if err != nil {
		return nil, "", false, c.transportError(err)
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPartialContent {
		defer resp.Body.Close()
		return nil, "", false, decodeError(resp)
	}
	return resp.Body, resp.Header.Get("ETag"), resp.StatusCode == http.StatusPartialContent, nil
}
