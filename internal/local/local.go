// Package local is the agent's node-local API: HTTP over the unix socket
// <home>/system/agent.sock (Jetpack's node-local commands). The socket's
// mode (0660) is the access control: root and the agent's group.
package local

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/drover-dev/drover/internal/api"
)

// SocketPath returns the socket of the agent whose home is home.
func SocketPath(home string) string { return filepath.Join(home, "system", "agent.sock") }

// ErrAgentDown means no agent answers on the socket.
var ErrAgentDown = errors.New("the drover agent is not running")

// Listen listens on the socket at path with mode 0660. A stale socket left
// by a crashed agent is replaced; one that another agent still answers on
// is an error.
//
// The socket is made in a private (0700) folder beside path, given its
// mode there, and only then renamed into place: under a permissive umask
// it is never reachable with a wider mode, even for an instant.
func Listen(path string) (net.Listener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("another agent is running on %s", path)
	}
	private, err := os.MkdirTemp(dir, ".sock-")
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	defer os.RemoveAll(private)
	tmp := filepath.Join(private, "s")
	ln, err := net.Listen("unix", tmp)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	ul := ln.(*net.UnixListener)
	// The listener would unlink its first name on Close; it lives on
	// under path, which unixListener removes itself.
	ul.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o660); err != nil {
		ln.Close()
		return nil, err
	}
	if err := os.Rename(tmp, path); err != nil {
		ln.Close()
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	return &unixListener{UnixListener: ul, path: path}, nil
}

// unixListener removes its socket file when closed.
type unixListener struct {
	*net.UnixListener
	path string
}

// Close stops listening and removes the socket file.
func (l *unixListener) Close() error {
	err := l.UnixListener.Close()
	_ = os.Remove(l.path)
	return err
}

// Serve answers h on ln until ctx is done.
func Serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = hs.Shutdown(sctx)
	<-errc
	return nil
}

// Client talks to the local agent.
type Client struct {
	path string
	http *http.Client
}

// NewClient returns a client of the agent whose home is home.
func NewClient(home string) *Client {
	path := SocketPath(home)
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}
	return &Client{path: path, http: &http.Client{Transport: tr}}
}

func (c *Client) request(ctx context.Context, method, path string, in any) (*http.Response, error) {
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://agent"+path, body)
	if err != nil {
		return nil, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("%w (no agent answers on %s)", ErrAgentDown, c.path)
		}
		return nil, fmt.Errorf("reach the agent on %s: %w", c.path, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		var e api.Error
		if json.Unmarshal(data, &e) == nil && e.Code != "" {
			return nil, &e
		}
		return nil, &api.Error{Code: api.CodeForStatus(resp.StatusCode), Message: string(bytes.TrimSpace(data))}
	}
	return resp, nil
}

// Do sends in as JSON (if not nil) and decodes the answer into out (if
// not nil).
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	resp, err := c.request(ctx, method, path, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// Stream sends in and calls fn with each JSON line of the answer, for
// verbs that report as they go (converge).
func (c *Client) Stream(ctx context.Context, method, path string, in any, fn func(line json.RawMessage) error) error {
	resp, err := c.request(ctx, method, path, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		if err := fn(json.RawMessage(sc.Bytes())); err != nil {
			return err
		}
	}
	return sc.Err()
}

// WriteJSON answers v as JSON.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// WriteError answers err as the API error type.
func WriteError(w http.ResponseWriter, err error) {
	var e *api.Error
	if !errors.As(err, &e) {
		e = api.Errorf(api.EINTERNAL, err.Error())
	}
	WriteJSON(w, api.HTTPStatus(e.Code), e)
}

// StreamWriter writes JSON lines, flushed one by one.
type StreamWriter struct {
	w   http.ResponseWriter
	enc *json.Encoder
}

// NewStreamWriter starts a JSON-lines answer.
func NewStreamWriter(w http.ResponseWriter) *StreamWriter {
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	return &StreamWriter{w: w, enc: json.NewEncoder(w)}
}

// Send writes one line.
func (s *StreamWriter) Send(v any) error {
	if err := s.enc.Encode(v); err != nil {
		return err
	}
	if f, ok := s.w.(http.Flusher); ok {
		f.Flush()
	}
	return nil
}
