package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"

	"github.com/drover-dev/drover/internal/api"
)

func TestReadSSE(t *testing.T) {
	in := ": drover events\n\nid: 1\nevent: log\ndata: {\"id\":1,\"kind\":\"log\",\"message\":\"a\"}\n\n: ping\n\nid: 2\ndata: {\"id\":2,\ndata: \"kind\":\"x\"}\n\n"
	var got []int64
	any, err := readSSE(strings.NewReader(in), func(ev api.Event) error { got = append(got, ev.ID); return nil })
	if err != nil || !any || fmt.Sprint(got) != "[1 2]" {
		t.Errorf("readSSE = %v, %v, %v; want [1 2]", got, any, err)
	}
	_, err = readSSE(strings.NewReader("event: error\ndata: {\"error\":\"boom\"}\n\n"), func(api.Event) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Errorf("readSSE of an error event = %v", err)
	}
	stop := errors.New("stop")
	_, err = readSSE(strings.NewReader(in), func(api.Event) error { return stop })
	var ce callbackError
	if !errors.As(err, &ce) || ce.err != stop {
		t.Errorf("readSSE with a failing callback = %v, want it marked", err)
	}
}

func FuzzReadSSE(f *testing.F) {
	f.Add("id: 1\nevent: log\ndata: {\"id\":1}\n\n")
	f.Add(": ping\n\n")
	f.Add("event: error\ndata: x\n\n")
	f.Add("data: {\n\n")
	f.Fuzz(func(t *testing.T, in string) {
		_, _ = readSSE(strings.NewReader(in), func(api.Event) error { return nil })
	})
}

func TestTLSReason(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want string
	}{
		{x509.UnknownAuthorityError{}, "unknown authority"},
		{x509.HostnameError{Certificate: &x509.Certificate{}, Host: "h"}, "not for this address"},
		{x509.CertificateInvalidError{Cert: &x509.Certificate{}, Reason: x509.Expired}, "expired"},
		{tls.AlertError(44), "revoked"},
		{tls.AlertError(45), "expired"},
		{tls.AlertError(48), "another CA"},
		{tls.AlertError(42), "bad certificate"},
		{tls.AlertError(116), "needs a client certificate"},
		{errors.New("read: remote error: tls: certificate revoked"), "revoked"},
		{tls.RecordHeaderError{}, "does not speak TLS"},
		{errors.New("connection refused"), ""},
	} {
		got := tlsReason(fmt.Errorf("wrapped: %w", tt.err))
		if tt.want == "" && got != "" || !strings.Contains(got, tt.want) {
			t.Errorf("tlsReason(%v) = %q, want it to say %q", tt.err, got, tt.want)
		}
	}
}

func TestDroppedAfterHandshake(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, false},
		{&net.DNSError{Err: "no such host", Name: "x"}, false},
		{context.DeadlineExceeded, false},
		{&net.OpError{Op: "write", Err: syscall.ECONNRESET}, true},
		{errors.New("http2: client conn could not be established"), true},
		{io.EOF, true},
	} {
		if got := droppedAfterHandshake(fmt.Errorf("x: %w", tt.err)); got != tt.want {
			t.Errorf("droppedAfterHandshake(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}
