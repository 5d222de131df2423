package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"
)

// ErrTLS marks a failure of the TLS handshake: the server's certificate
// is not trusted, or the server refused this client's certificate.
// Retrying does not help until a certificate or --ca-cert changes.
var ErrTLS = errors.New("TLS failure")

// IsTLSError reports whether err is a TLS failure (ErrTLS).
func IsTLSError(err error) bool { return errors.Is(err, ErrTLS) }

// tlsReason says what is wrong when err is a TLS failure, and "" when it
// is not one.
func tlsReason(err error) string {
	var (
		ua  x509.UnknownAuthorityError
		he  x509.HostnameError
		ci  x509.CertificateInvalidError
		ae  tls.AlertError
		rhe tls.RecordHeaderError
		cve *tls.CertificateVerificationError
	)
	switch {
	case errors.As(err, &ua):
		return "the server's certificate is signed by an unknown authority: is --ca-cert (DROVER_CACERT) the fleet's CA?"
	case errors.As(err, &he):
		return fmt.Sprintf("the server's certificate is not for this address: %v", he.Error())
	case errors.As(err, &ci):
		if ci.Reason == x509.Expired {
			return "the server's certificate has expired or is not valid yet: " + ci.Error()
		}
		return "the server's certificate is not valid: " + ci.Error()
	case errors.As(err, &cve):
		return "the server's certificate is not trusted: " + cve.Err.Error()
	case errors.As(err, &rhe):
		return "the server does not speak TLS at this address"
	case errors.As(err, &ae):
		return alertReason(ae)
	}
	// Some alerts reach the client as text only.
	msg := err.Error()
	if i := strings.Index(msg, "remote error: tls: "); i >= 0 {
		return alertText(strings.TrimPrefix(msg[i:], "remote error: tls: "))
	}
	return ""
}

// The TLS alerts a server sends about a client certificate (RFC 8446 §6.2).
const (
	alertBadCertificate     = 42
	alertCertificateRevoked = 44
	alertCertificateExpired = 45
	alertCertificateUnknown = 46
	alertUnknownCA          = 48
	alertCertificateNeeded  = 116
)

func alertReason(a tls.AlertError) string {
	switch a {
	case alertBadCertificate, alertCertificateUnknown:
		return "the server refused this client certificate (bad certificate): is it issued by the fleet's CA, for this role?"
	case alertCertificateRevoked:
		return "the server refused this client certificate: it is revoked"
	case alertCertificateExpired:
		return "the server refused this client certificate: it has expired"
	case alertUnknownCA:
		return "the server refused this client certificate: it is signed by an authority the server does not know (another CA?)"
	case alertCertificateNeeded:
		return "the server needs a client certificate: give --client-cert and --client-key"
	}
	return "the server refused the TLS handshake: " + a.Error()
}

func alertText(s string) string {
	switch {
	case strings.Contains(s, "revoked"):
		return alertReason(alertCertificateRevoked)
	case strings.Contains(s, "expired"):
		return alertReason(alertCertificateExpired)
	case strings.Contains(s, "unknown certificate authority"):
		return alertReason(alertUnknownCA)
	case strings.Contains(s, "certificate required"):
		return alertReason(alertCertificateNeeded)
	case strings.Contains(s, "bad certificate"), strings.Contains(s, "unknown certificate"):
		return alertReason(alertBadCertificate)
	}
	return "the server refused the TLS handshake: " + s
}

// droppedAfterHandshake reports whether err is a failure after the
// connection was made (reset, closed, an HTTP/2 connection that could not
// be set up), which is how a refused client certificate can look under
// TLS 1.3; a failure to connect at all (refused, no route, no such host,
// timeout) is not.
func droppedAfterHandshake(err error) bool {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		return false
	}
	var de *net.DNSError
	if errors.As(err, &de) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return false
	}
	return true
}

// probeTLS makes one TLS connection to the server and waits briefly for
// what it sends first: an alert (its reason is returned) or anything
// else ("": TLS is fine).
func (c *Client) probeTLS() string {
	if c.tls == nil || c.base.Scheme != "https" {
		return ""
	}
	cfg := c.tls.Clone()
	cfg.NextProtos = []string{"h2", "http/1.1"}
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: cfg}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", hostPort(c.base))
	if err != nil {
		return tlsReason(err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	var b [1]byte
	if _, err := conn.Read(b[:]); err != nil {
		return tlsReason(err)
	}
	return ""
}

func hostPort(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	return net.JoinHostPort(u.Hostname(), "443")
}
