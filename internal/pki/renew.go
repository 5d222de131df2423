package pki

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/drover-dev/drover/internal/atomicfile"
)

// RenewerConfig configures a Renewer.
type RenewerConfig struct {
	// CertFile and KeyFile are the agent's client certificate and key;
	// a renewal replaces both.
	CertFile, KeyFile string
	// PendingFile keeps the key of a renewal in flight (in the agent's
	// system folder), so a retry sends the same key and a crash between
	// writing the certificate and the key is finished by Recover.
	PendingFile string
	// Request sends a certificate request to the server and returns the
	// new certificate (PEM, its issuer may follow).
	Request func(ctx context.Context, csrPEM []byte) ([]byte, error)
	// Renewed, if set, is called after a renewal, e.g. to close idle
	// connections so that new ones present the new certificate.
	Renewed func()
	Logger  *slog.Logger
	Now     func() time.Time
}

// Renewer renews an agent's certificate through the server before it
// expires (after two thirds of its validity).
type Renewer struct {
	cfg RenewerConfig
	log *slog.Logger
}

// NewRenewer returns a Renewer; call Recover before the certificate is
// first used.
func NewRenewer(cfg RenewerConfig) *Renewer {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Renewer{cfg: cfg, log: cfg.Logger}
}

func (r *Renewer) current() (*x509.Certificate, error) {
	certs, err := readCerts("certificate", r.cfg.CertFile)
	if err != nil {
		return nil, err
	}
	return certs[0], nil
}

// pendingKey returns the key of the renewal in flight, or nil.
func (r *Renewer) pendingKey() (*ecdsa.PrivateKey, []byte, error) {
	data, err := os.ReadFile(r.cfg.PendingFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("renewal key: %w", pathErr(err))
	}
	k, err := parseKey(data)
	if err != nil {
		// A torn file: start the renewal again with a new key.
		_ = os.Remove(r.cfg.PendingFile)
		return nil, nil, nil
	}
	return k, data, nil
}

// Recover finishes a renewal whose new certificate was written but not
// its key.
func (r *Renewer) Recover() error {
	k, data, err := r.pendingKey()
	if err != nil || k == nil {
		return err
	}
	cert, err := r.current()
	if err != nil {
		return err
	}
	if pub, ok := cert.PublicKey.(*ecdsa.PublicKey); ok && pub.Equal(&k.PublicKey) {
		if err := atomicfile.WriteFile(r.cfg.KeyFile, data, 0o600); err != nil {
			return err
		}
		return os.Remove(r.cfg.PendingFile)
	}
	return nil
}

// RenewIfDue renews the certificate if it is due; it reports whether it
// did.
func (r *Renewer) RenewIfDue(ctx context.Context) (bool, error) {
	cur, err := r.current()
	if err != nil {
		return false, err
	}
	now := r.cfg.Now()
	if now.Before(RenewAt(cur)) {
		return false, nil
	}
	if !now.Before(cur.NotAfter) {
		return false, fmt.Errorf("certificate %s expired on %s: an expired certificate cannot renew; issue a new one with pki issue", r.cfg.CertFile, cur.NotAfter.Format(time.RFC3339))
	}
	k, keyPEM, err := r.pendingKey()
	if err != nil {
		return false, err
	}
	if k == nil {
		if k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			return false, err
		}
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return false, err
		}
		keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
		if err := atomicfile.WriteFile(r.cfg.PendingFile, keyPEM, 0o600); err != nil {
			return false, err
		}
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cur.Subject.CommonName}}, k)
	if err != nil {
		return false, fmt.Errorf("certificate request: %w", err)
	}
	certPEM, err := r.cfg.Request(ctx, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER}))
	if err != nil {
		return false, fmt.Errorf("renew certificate: %w", err)
	}
	certs, err := parseCerts(certPEM)
	if err != nil {
		return false, fmt.Errorf("renewed certificate: %w", err)
	}
	pub, ok := certs[0].PublicKey.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(&k.PublicKey) || certs[0].Subject.CommonName != cur.Subject.CommonName {
		return false, errors.New("renewed certificate: not for this key and name")
	}
	// Certificate first, then key: Recover finishes the pair after a
	// crash in between.
	if err := atomicfile.WriteFile(r.cfg.CertFile, certPEM, 0o644); err != nil {
		return false, err
	}
	if err := atomicfile.WriteFile(r.cfg.KeyFile, keyPEM, 0o600); err != nil {
		return false, err
	}
	if err := os.Remove(r.cfg.PendingFile); err != nil {
		return true, fmt.Errorf("renewal key: %w", err)
	}
	if r.cfg.Renewed != nil {
		r.cfg.Renewed()
	}
	r.log.Info("certificate renewed", "not_after", certs[0].NotAfter, "serial", certs[0].SerialNumber.Text(16))
	return true, nil
}

// Run renews the certificate whenever it is due, until ctx is done; a
// failed renewal is tried again after a short delay (the server may be
// restarting).
func (r *Renewer) Run(ctx context.Context) {
	for {
		wait := time.Minute
		cur, err := r.current()
		if err == nil {
			v := Validity(cur)
			wait = min(max(RenewAt(cur).Sub(r.cfg.Now()), 0), time.Minute)
			if _, err := r.RenewIfDue(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				r.log.Warn("certificate renewal", "err", err)
				wait = min(max(v/20, time.Second), time.Minute)
			} else if c, err := r.current(); err == nil {
				wait = min(max(RenewAt(c).Sub(r.cfg.Now()), time.Second), time.Minute)
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// ReloadingClientTLSConfig is ClientTLSConfig for a certificate that is
// renewed while the process runs: each new connection uses the files as
// they are then (a pair caught half-written keeps the one before).
func ReloadingClientTLSConfig(certFile, keyFile, caFile string) (*tls.Config, error) {
	cfg, err := ClientTLSConfig(certFile, keyFile, caFile)
	if err != nil {
		return nil, err
	}
	cur := cfg.Certificates[0]
	cfg.Certificates = nil
	var (
		mu    sync.Mutex
		stamp []byte
	)
	stampOf := func() []byte {
		var b bytes.Buffer
		for _, p := range []string{certFile, keyFile} {
			if st, err := os.Stat(p); err == nil {
				fmt.Fprintf(&b, "%d/%d;", st.ModTime().UnixNano(), st.Size())
			}
		}
		return b.Bytes()
	}
	stamp = stampOf()
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		mu.Lock()
		defer mu.Unlock()
		if s := stampOf(); !bytes.Equal(s, stamp) {
			if c, err := loadKeyPair(certFile, keyFile); err == nil {
				cur, stamp = c, s
			}
		}
		c := cur
		return &c, nil
	}
	return cfg, nil
}
