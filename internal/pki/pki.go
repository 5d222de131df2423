// Package pki makes and loads the certificates of drover's mutual TLS
// (DESIGN §6): one CA per fleet, server certificates, device certificates
// whose CN is the device id, and admin certificates for operator verbs.
//
// Everything is done with Go's crypto packages, so an operator needs no
// openssl. Keys are ECDSA P-256. The role of a certificate travels in its
// Subject.OrganizationalUnit ("drover-server", "drover-device",
// "drover-admin") so the server can tell a device from an admin by the
// verified chain alone.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/drover-dev/drover/internal/api"
)

// ErrExists is returned when a file Init or Issue would write is already
// there: keys are never overwritten, so a second run cannot lose a CA.
var ErrExists = errors.New("already exists; refusing to overwrite")

// Role says what a certificate may do.
type Role string

// The roles of a certificate.
const (
	RoleServer Role = "server" // the drover server; TLS server auth
	RoleDevice Role = "device" // an agent; CN is the device id
	RoleAdmin  Role = "admin"  // an operator allowed to use operator verbs
	// RoleIssuer is an issuing certificate (a CA under the fleet CA) the
	// server holds to renew device certificates. It is never a peer.
	RoleIssuer Role = "issuer"
)

// ouPrefix marks the OU that carries the role.
const ouPrefix = "drover-"

// File names inside a PKI directory.
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
)

// Default lifetimes.
const (
	caValidity     = 10 * 365 * 24 * time.Hour
	serverValidity = 365 * 24 * time.Hour
	adminValidity  = 365 * 24 * time.Hour
	deviceValidity = 5 * 365 * 24 * time.Hour
	issuerValidity = 5 * 365 * 24 * time.Hour
	// backdate lets a certificate be used at once by a machine whose clock
	// is a little behind the one that issued it.
	backdate = time.Hour
)

// IssueOptions says which certificate Issue makes.
type IssueOptions struct {
	Role Role
	// Name is the CN: the server's name, the device id or the admin name.
	// It must match ^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$ and also names the
	// files NAME.crt and NAME.key.
	Name string
	// Hosts are DNS names or IP addresses the server is reached by; only
	// for RoleServer. Name, "localhost", 127.0.0.1 and ::1 are always added.
	Hosts []string
	// Validity is the lifetime; zero means 1 year for server and admin,
	// 5 years for a device. It is cut short so as not to outlive the CA.
	Validity time.Duration
}

// Init creates dir (mode 0700) if needed and a new CA in it: dir/ca.crt and
// dir/ca.key (ECDSA P-256, valid 10 years from now). It refuses with
// ErrExists if either file is already there.
func Init(dir string, now time.Time) error {
	if dir == "" {
		return errors.New("pki directory: empty path")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create pki directory %s: %w", dir, pathErr(err))
	}
	certPath := filepath.Join(dir, CACertFile)
	keyPath := filepath.Join(dir, CAKeyFile)
	for _, p := range []string{keyPath, certPath} {
		if err := refuseExisting(p); err != nil {
			return err
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "drover CA", Organization: []string{"drover"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(caValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		// The CA signs leaf certificates only, never another CA.
		MaxPathLenZero: true,
		KeyUsage:       x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("create CA certificate: %w", err)
	}
	return writePair(certPath, keyPath, der, key)
}

// Issue makes a certificate signed by the CA in dir and writes it to
// dir/NAME.crt and its key to dir/NAME.key (mode 0600). It refuses with
// ErrExists to overwrite either file, and writes nothing when opt is
// invalid.
func Issue(dir string, opt IssueOptions, now time.Time) (certPath, keyPath string, err error) {
	if !api.ValidDeviceID(opt.Name) { // the name becomes a file name and a device id
		return "", "", fmt.Errorf("name %q: want 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit", opt.Name)
	}
	if opt.Name == "ca" {
		return "", "", fmt.Errorf("name %q: reserved for the CA's own files", opt.Name)
	}
	if opt.Validity < 0 {
		return "", "", fmt.Errorf("validity %v: must not be negative", opt.Validity)
	}
	tmpl := &x509.Certificate{
		Subject: pkix.Name{
			CommonName:         opt.Name,
			Organization:       []string{"drover"},
			OrganizationalUnit: []string{ouPrefix + string(opt.Role)},
		},
		NotBefore:             now.Add(-backdate),
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
	}
	validity := opt.Validity
	switch opt.Role {
	case RoleServer:
		if validity == 0 {
			validity = serverValidity
		}
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		if err := addHosts(tmpl, opt.Name, opt.Hosts); err != nil {
			return "", "", err
		}
	case RoleDevice, RoleAdmin:
		if validity == 0 {
			validity = deviceValidity
			if opt.Role == RoleAdmin {
				validity = adminValidity
			}
		}
		if len(opt.Hosts) > 0 {
			return "", "", fmt.Errorf("hosts %v: only a server certificate has hosts", opt.Hosts)
		}
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	case RoleIssuer:
		if validity == 0 {
			validity = issuerValidity
		}
		if len(opt.Hosts) > 0 {
			return "", "", fmt.Errorf("hosts %v: only a server certificate has hosts", opt.Hosts)
		}
		// No drover role: an issuer signs device certificates and is
		// never accepted as a peer.
		tmpl.Subject.OrganizationalUnit = nil
		tmpl.IsCA = true
		tmpl.MaxPathLenZero = true
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature
	default:
		return "", "", fmt.Errorf("role %q: want %s, %s, %s or %s", opt.Role, RoleServer, RoleDevice, RoleAdmin, RoleIssuer)
	}
	tmpl.NotBefore = now.Add(-backdateFor(validity))
	tmpl.NotAfter = now.Add(validity)

	caCert, caKey, err := loadCA(dir)
	if err != nil {
		return "", "", err
	}
	// A certificate that outlives its CA would be refused by some
	// verifiers after the CA expires anyway; say so in its dates.
	if tmpl.NotAfter.After(caCert.NotAfter) {
		tmpl.NotAfter = caCert.NotAfter
	}
	if !now.Before(caCert.NotAfter) {
		return "", "", fmt.Errorf("CA certificate %s expired on %s", filepath.Join(dir, CACertFile), caCert.NotAfter.Format(time.DateOnly))
	}

	certPath = filepath.Join(dir, opt.Name+".crt")
	keyPath = filepath.Join(dir, opt.Name+".key")
	for _, p := range []string{keyPath, certPath} {
		if err := refuseExisting(p); err != nil {
			return "", "", err
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("generate key: %w", err)
	}
	if tmpl.SerialNumber, err = newSerial(); err != nil {
		return "", "", err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return "", "", fmt.Errorf("create certificate %s: %w", opt.Name, err)
	}
	if err := writePair(certPath, keyPath, der, key); err != nil {
		return "", "", err
	}
	if err := recordIssued(dir, tmpl); err != nil {
		return "", "", err
	}
	return certPath, keyPath, nil
}

// addHosts puts name, the given hosts and the loopback names into the
// server certificate's SANs, once each, in that order.
func addHosts(tmpl *x509.Certificate, name string, hosts []string) error {
	all := append([]string{name}, hosts...)
	all = append(all, "localhost", "127.0.0.1", "::1")
	seenDNS := map[string]bool{}
	seenIP := map[string]bool{}
	for _, h := range all {
		h = strings.TrimSpace(h)
		if ip := net.ParseIP(h); ip != nil {
			if !seenIP[ip.String()] {
				seenIP[ip.String()] = true
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			}
			continue
		}
		if !validDNSName(h) {
			return fmt.Errorf("host %q: not a DNS name or IP address", h)
		}
		h = strings.ToLower(h)
		if !seenDNS[h] {
			seenDNS[h] = true
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return nil
}

// validDNSName accepts host names and a leading "*." wildcard.
func validDNSName(h string) bool {
	h = strings.TrimPrefix(h, "*.")
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// backdateFor is how far before its issue a certificate of this validity
// starts: an hour, or half the validity of a shorter one.
func backdateFor(validity time.Duration) time.Duration { return min(backdate, validity/2) }

// Validity is the lifetime a certificate was issued with, from its dates
// (the inverse of the backdating of Issue and Renew).
func Validity(cert *x509.Certificate) time.Duration {
	span := cert.NotAfter.Sub(cert.NotBefore)
	if span >= 3*backdate {
		return span - backdate
	}
	return span * 2 / 3
}

// RenewAt is when a certificate is due for renewal: after two thirds of
// its validity.
func RenewAt(cert *x509.Certificate) time.Time {
	v := Validity(cert)
	return cert.NotAfter.Add(-v / 3)
}

// RoleOf returns the role a drover certificate carries in its OU. A
// certificate with no drover role, an unknown one or more than one is an
// error.
func RoleOf(cert *x509.Certificate) (Role, error) {
	if cert == nil {
		return "", errors.New("certificate role: no certificate")
	}
	var found []Role
	for _, ou := range cert.Subject.OrganizationalUnit {
		if r, ok := strings.CutPrefix(ou, ouPrefix); ok {
			found = append(found, Role(r))
		}
	}
	switch {
	case len(found) == 0:
		return "", fmt.Errorf("certificate %q: no drover role (OU %s...)", cert.Subject.CommonName, ouPrefix)
	case len(found) > 1:
		return "", fmt.Errorf("certificate %q: more than one drover role %v", cert.Subject.CommonName, found)
	}
	switch r := found[0]; r {
	case RoleServer, RoleDevice, RoleAdmin:
		return r, nil
	default:
		return "", fmt.Errorf("certificate %q: unknown drover role %q", cert.Subject.CommonName, r)
	}
}

// newSerial returns a random 128-bit serial number, as RFC 5280 advises
// (unpredictable, positive, at most 20 bytes).
func newSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("generate serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// loadCA reads the CA certificate and key from dir.
func loadCA(dir string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	certPath := filepath.Join(dir, CACertFile)
	keyPath := filepath.Join(dir, CAKeyFile)
	certs, err := readCerts("CA certificate", certPath)
	if err != nil {
		return nil, nil, err
	}
	cert := certs[0]
	if !cert.IsCA {
		return nil, nil, fmt.Errorf("CA certificate %s: not a CA certificate", certPath)
	}
	keyPEM, err := readFile("CA key", keyPath)
	if err != nil {
		return nil, nil, err
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("parse CA key %s: %w", keyPath, err)
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(&key.PublicKey) {
		return nil, nil, fmt.Errorf("CA key %s does not match CA certificate %s", keyPath, certPath)
	}
	return cert, key, nil
}
