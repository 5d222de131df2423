package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"time"
)

// Issuer is an issuing certificate and its key (pki issue --issuer),
// held by the server to renew device certificates without the CA key.
type Issuer struct {
	Cert *x509.Certificate
	key  crypto.Signer
}

// LoadIssuer reads an issuer's certificate and key and checks the fleet
// CA of caFile signed it.
func LoadIssuer(certFile, keyFile, caFile string) (*Issuer, error) {
	pair, err := loadKeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("issuer certificate %s: %w", certFile, err)
	}
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("issuer certificate %s: not an issuing certificate (make one with pki issue --issuer)", certFile)
	}
	cas, err := readCerts("CA certificate", caFile)
	if err != nil {
		return nil, err
	}
	if err := cert.CheckSignatureFrom(cas[0]); err != nil {
		return nil, fmt.Errorf("issuer certificate %s is not signed by the CA %s: %w", certFile, caFile, err)
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("issuer key %s: not a signing key", keyFile)
	}
	return &Issuer{Cert: cert, key: signer}, nil
}

// TrustIssuer makes a server configuration accept client certificates the
// issuer signed: the issuer is a trust anchor beside the fleet CA (it was
// checked to be the CA's in LoadIssuer).
func TrustIssuer(cfg *tls.Config, is *Issuer) {
	cfg.ClientCAs.AddCert(is.Cert)
}

// Lineage is the serial (hex) of the certificate the CA issued that cert
// was renewed from, "" for a certificate the CA issued itself. Revoking
// that serial revokes every renewal of it.
func Lineage(cert *x509.Certificate) string { return cert.Subject.SerialNumber }

// ErrRenew marks a renewal request that is refused (not an outage).
var ErrRenew = errors.New("renewal refused")

// Renew signs a new certificate for the key of csrPEM, for the device
// whose current (verified, unexpired, unrevoked) certificate is cur: same
// name and role, same lifetime, the same lineage. It returns the new
// certificate and the issuer's, PEM.
func (is *Issuer) Renew(csrPEM []byte, cur *x509.Certificate, now time.Time) ([]byte, error) {
	b, _ := pem.Decode(csrPEM)
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("%w: not a PEM certificate request", ErrRenew)
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRenew, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: request signature: %v", ErrRenew, err)
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey, ed25519.PublicKey:
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, fmt.Errorf("%w: RSA key of %d bits, want at least 2048", ErrRenew, k.N.BitLen())
		}
	default:
		return nil, fmt.Errorf("%w: unsupported key type %T", ErrRenew, csr.PublicKey)
	}
	if csr.Subject.CommonName != cur.Subject.CommonName {
		return nil, fmt.Errorf("%w: the request is for %q, the certificate is %q's", ErrRenew, csr.Subject.CommonName, cur.Subject.CommonName)
	}
	role, err := RoleOf(cur)
	if err != nil || role != RoleDevice {
		return nil, fmt.Errorf("%w: only device certificates renew", ErrRenew)
	}
	life := min(Validity(cur), deviceValidity)
	lineage := Lineage(cur)
	if lineage == "" {
		lineage = cur.SerialNumber.Text(16)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			CommonName: cur.Subject.CommonName, Organization: []string{"drover"},
			OrganizationalUnit: []string{ouPrefix + string(RoleDevice)}, SerialNumber: lineage,
		},
		NotBefore:             now.Add(-backdateFor(life)),
		NotAfter:              now.Add(life),
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if tmpl.NotAfter.After(is.Cert.NotAfter) {
		tmpl.NotAfter = is.Cert.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, is.Cert, csr.PublicKey, is.key)
	if err != nil {
		return nil, fmt.Errorf("sign renewed certificate: %w", err)
	}
	out := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: is.Cert.Raw})...), nil
}
