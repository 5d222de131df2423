package pki

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/drover-dev/drover/internal/atomicfile"
)

// Files of revocation in a CA folder.
const (
	// CRLFile is the revocation list the server reads (server --crl).
	CRLFile = "crl.pem"
	// IssuedFile records every certificate the CA issued, one JSON object
	// a line, so that revoke can find a certificate by its name.
	IssuedFile = "issued.jsonl"
	// crlValidity is the NextUpdate of a CRL; the server does not require
	// freshness (it is the CA folder's list), other verifiers may.
	crlValidity = 365 * 24 * time.Hour
)

// Issued is one line of IssuedFile.
type Issued struct {
	Serial   string    `json:"serial"` // hex
	Role     Role      `json:"role"`
	Name     string    `json:"name"`
	NotAfter time.Time `json:"not_after"`
}

// recordIssued appends cert to dir's record of issued certificates.
func recordIssued(dir string, cert *x509.Certificate) error {
	role, err := RoleOf(cert)
	if err != nil {
		role = RoleIssuer
	}
	line, err := json.Marshal(Issued{Serial: cert.SerialNumber.Text(16), Role: role, Name: cert.Subject.CommonName, NotAfter: cert.NotAfter.UTC()})
	if err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(dir, IssuedFile), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("record issued certificate: %w", pathErr(err))
	}
	_, err = f.Write(append(line, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("record issued certificate: %w", err)
	}
	return nil
}

// issuedSerials returns the serials dir issued to role and name: from its
// record, and from NAME.crt for certificates older than the record.
func issuedSerials(dir string, role Role, name string) ([]*big.Int, error) {
	seen := map[string]bool{}
	var out []*big.Int
	add := func(n *big.Int) {
		if !seen[n.Text(16)] {
			seen[n.Text(16)] = true
			out = append(out, n)
		}
	}
	data, err := os.ReadFile(filepath.Join(dir, IssuedFile))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read %s: %w", IssuedFile, pathErr(err))
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		var rec Issued
		if json.Unmarshal(sc.Bytes(), &rec) != nil || rec.Role != role || rec.Name != name {
			continue
		}
		if n, ok := new(big.Int).SetString(rec.Serial, 16); ok {
			add(n)
		}
	}
	if certs, err := readCerts("certificate", filepath.Join(dir, name+".crt")); err == nil {
		if r, err := RoleOf(certs[0]); err == nil && r == role && certs[0].Subject.CommonName == name {
			add(certs[0].SerialNumber)
		}
	}
	return out, nil
}

// Revoke adds every certificate the CA in dir issued to role and name to
// dir/crl.pem, a CRL signed by the CA. Certificates the server renewed
// from one of them carry its serial as their lineage and are refused with
// it. It returns how many serials the list gained.
func Revoke(dir string, role Role, name string, now time.Time) (int, error) {
	serials, err := issuedSerials(dir, role, name)
	if err != nil {
		return 0, err
	}
	if len(serials) == 0 {
		return 0, fmt.Errorf("no certificate issued to %s %q is recorded in %s", role, name, dir)
	}
	caCert, caKey, err := loadCA(dir)
	if err != nil {
		return 0, err
	}
	path := filepath.Join(dir, CRLFile)
	tmpl := &x509.RevocationList{Number: big.NewInt(1)}
	have := map[string]bool{}
	if old, err := readCRL(path, caCert); err == nil {
		tmpl.RevokedCertificateEntries = old.RevokedCertificateEntries
		tmpl.Number = new(big.Int).Add(old.Number, big.NewInt(1))
		for _, e := range old.RevokedCertificateEntries {
			have[e.SerialNumber.Text(16)] = true
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return 0, err
	}
	added := 0
	for _, s := range serials {
		if have[s.Text(16)] {
			continue
		}
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: now.UTC()})
		added++
	}
	tmpl.ThisUpdate = now.UTC()
	tmpl.NextUpdate = now.Add(crlValidity).UTC()
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, caCert, caKey)
	if err != nil {
		return 0, fmt.Errorf("sign revocation list: %w", err)
	}
	if err := atomicfile.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), 0o644); err != nil {
		return 0, err
	}
	return added, nil
}

// readCRL reads a PEM CRL and checks the CA signed it.
func readCRL(path string, ca *x509.Certificate) (*x509.RevocationList, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseCRL(data, ca)
}

// ParseCRL parses a PEM (or DER) CRL and checks ca signed it.
func ParseCRL(data []byte, ca *x509.Certificate) (*x509.RevocationList, error) {
	der := data
	if b, _ := pem.Decode(data); b != nil {
		if b.Type != "X509 CRL" {
			return nil, fmt.Errorf("revocation list: PEM block %q, want X509 CRL", b.Type)
		}
		der = b.Bytes
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, fmt.Errorf("revocation list: %w", err)
	}
	if err := crl.CheckSignatureFrom(ca); err != nil {
		return nil, fmt.Errorf("revocation list is not signed by the CA: %w", err)
	}
	return crl, nil
}

// Revocations is the server's view of a CRL file, read again whenever
// the file changes (Run), so a revocation needs no restart.
type Revocations struct {
	path string
	ca   *x509.Certificate
	log  *slog.Logger

	mu      sync.RWMutex
	serials map[string]bool
	stamp   fileStamp
}

type fileStamp struct {
	mod  time.Time
	size int64
}

// LoadRevocations reads the CRL at path, which the CA of caFile must
// have signed.
func LoadRevocations(path, caFile string, log *slog.Logger) (*Revocations, error) {
	certs, err := readCerts("CA certificate", caFile)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Revocations{path: path, ca: certs[0], log: log}
	if err := r.Reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// Reload reads the file again if it changed since the last read. A bad
// file keeps the list read before (and is an error).
func (r *Revocations) Reload() error {
	st, err := os.Stat(r.path)
	if errors.Is(err, fs.ErrNotExist) {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.serials == nil {
			// No revocation yet: an empty list until pki revoke writes one.
			r.serials = map[string]bool{}
			return nil
		}
		return fmt.Errorf("revocation list %s is gone; the list read before stays", r.path)
	}
	if err != nil {
		return fmt.Errorf("revocation list: %w", pathErr(err))
	}
	stamp := fileStamp{st.ModTime(), st.Size()}
	r.mu.RLock()
	same := r.serials != nil && stamp == r.stamp && stamp != (fileStamp{})
	r.mu.RUnlock()
	if same {
		return nil
	}
	crl, err := readCRL(r.path, r.ca)
	if err != nil {
		return fmt.Errorf("%s: %w", r.path, err)
	}
	serials := make(map[string]bool, len(crl.RevokedCertificateEntries))
	for _, e := range crl.RevokedCertificateEntries {
		serials[e.SerialNumber.Text(16)] = true
	}
	r.mu.Lock()
	r.serials, r.stamp = serials, stamp
	r.mu.Unlock()
	r.log.Info("revocation list loaded", "path", r.path, "revoked", len(serials))
	return nil
}

// Run reloads the file every interval until ctx is done.
func (r *Revocations) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := r.Reload(); err != nil {
				r.log.Error("revocation list", "err", err)
			}
		}
	}
}

// Revoked reports whether cert is on the list, itself or through the
// certificate it was renewed from (its lineage).
func (r *Revocations) Revoked(cert *x509.Certificate) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.serials[cert.SerialNumber.Text(16)] {
		return true
	}
	lineage := Lineage(cert)
	return lineage != "" && r.serials[lineage]
}
