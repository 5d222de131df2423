package pki

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func issue(t *testing.T, dir string, role Role, name string, validity time.Duration) *x509.Certificate {
	t.Helper()
	certPath, _, err := Issue(dir, IssueOptions{Role: role, Name: name, Validity: validity}, testNow)
	if err != nil {
		t.Fatal(err)
	}
	return readCert(t, certPath)
}

func TestRevokeFindsIssuedCertificates(t *testing.T) {
	dir := newCA(t)
	d1 := issue(t, dir, RoleDevice, "d1", 0)
	issue(t, dir, RoleDevice, "d2", 0)
	admin := issue(t, dir, RoleAdmin, "ops", 0)
	crlPath := filepath.Join(dir, CRLFile)
	revs, err := LoadRevocations(crlPath, filepath.Join(dir, CACertFile), nil)
	if err != nil {
		t.Fatalf("LoadRevocations before any revocation: %v", err)
	}
	if revs.Revoked(d1) {
		t.Fatal("revoked before any revocation")
	}
	for _, tt := range []struct {
		role    Role
		name    string
		added   int
		wantErr string
	}{
		{RoleDevice, "d1", 1, ""},
		{RoleDevice, "d1", 0, ""}, // again: nothing new
		{RoleDevice, "nobody", 0, "no certificate issued"},
	} {
		n, err := Revoke(dir, tt.role, tt.name, testNow)
		if (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) || n != tt.added {
			t.Errorf("Revoke(%s %s) = %d, %v; want %d, %q", tt.role, tt.name, n, err, tt.added, tt.wantErr)
		}
	}
	if err := revs.Reload(); err != nil {
		t.Fatal(err)
	}
	if !revs.Revoked(d1) || revs.Revoked(admin) {
		t.Errorf("after revoking device d1: d1 revoked %v, admin ops revoked %v; want true, false", revs.Revoked(d1), revs.Revoked(admin))
	}
	// The list is a CRL the CA signed.
	ca := readCert(t, filepath.Join(dir, CACertFile))
	data, _ := os.ReadFile(crlPath)
	crl, err := ParseCRL(data, ca)
	if err != nil || len(crl.RevokedCertificateEntries) != 1 || crl.Number.Int64() != 2 {
		t.Fatalf("crl.pem: %v, %v", crl, err)
	}
	// A list not signed by the CA is refused and the old one stays.
	other := newCA(t)
	issue(t, other, RoleDevice, "x", 0)
	if _, err := Revoke(other, RoleDevice, "x", testNow); err != nil {
		t.Fatal(err)
	}
	forged, _ := os.ReadFile(filepath.Join(other, CRLFile))
	if err := os.WriteFile(crlPath, append(forged, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := revs.Reload(); err == nil {
		t.Error("Reload of a CRL signed by another CA succeeded")
	}
	if !revs.Revoked(d1) {
		t.Error("a bad CRL file dropped the revocations read before")
	}
}

func csr(t *testing.T, cn string) ([]byte, *ecdsa.PrivateKey) {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), k
}

func TestIssuerRenew(t *testing.T) {
	dir := newCA(t)
	issue(t, dir, RoleIssuer, "iss", 0)
	is, err := LoadIssuer(filepath.Join(dir, "iss.crt"), filepath.Join(dir, "iss.key"), filepath.Join(dir, CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LoadIssuer(filepath.Join(dir, "iss.crt"), filepath.Join(dir, "iss.key"), filepath.Join(newCA(t), CACertFile)); err == nil {
		t.Error("LoadIssuer accepted an issuer of another CA")
	}
	dev := issue(t, dir, RoleDevice, "d1", 90*24*time.Hour)
	admin := issue(t, dir, RoleAdmin, "ops", 0)
	good, _ := csr(t, "d1")
	for _, tt := range []struct {
		name string
		csr  []byte
		cur  *x509.Certificate
	}{
		{"other name", func() []byte { b, _ := csr(t, "d2"); return b }(), dev},
		{"admin", func() []byte { b, _ := csr(t, "ops"); return b }(), admin},
		{"not PEM", []byte("hello"), dev},
	} {
		if _, err := is.Renew(tt.csr, tt.cur, testNow); !errors.Is(err, ErrRenew) {
			t.Errorf("%s: Renew = %v, want ErrRenew", tt.name, err)
		}
	}
	out, err := is.Renew(good, dev, testNow.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	certs, err := parseCerts(out)
	if err != nil || len(certs) != 2 {
		t.Fatalf("Renew gave %d certificates, %v", len(certs), err)
	}
	n := certs[0]
	if r, _ := RoleOf(n); r != RoleDevice || n.Subject.CommonName != "d1" || Lineage(n) != dev.SerialNumber.Text(16) {
		t.Errorf("renewed: role %s CN %s lineage %s; want device d1 lineage %s", r, n.Subject.CommonName, Lineage(n), dev.SerialNumber.Text(16))
	}
	if got, want := Validity(n), Validity(dev); got != want {
		t.Errorf("renewed validity %v, want %v as before", got, want)
	}
	// The server accepts it through the issuer.
	pool := x509.NewCertPool()
	pool.AddCert(readCert(t, filepath.Join(dir, CACertFile)))
	pool.AddCert(is.Cert)
	if _, err := n.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: testNow.Add(2 * time.Hour), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("renewed certificate does not verify: %v", err)
	}
	// A renewal of the renewal keeps the first lineage.
	again, _ := is.Renew(good, n, testNow.Add(2*time.Hour))
	c2, _ := parseCerts(again)
	if Lineage(c2[0]) != dev.SerialNumber.Text(16) {
		t.Errorf("second renewal lineage %s, want %s", Lineage(c2[0]), dev.SerialNumber.Text(16))
	}
}

func TestRenewerCrashBetweenCertAndKey(t *testing.T) {
	dir := newCA(t)
	issue(t, dir, RoleIssuer, "iss", 0)
	is, err := LoadIssuer(filepath.Join(dir, "iss.crt"), filepath.Join(dir, "iss.key"), filepath.Join(dir, CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	dev := issue(t, dir, RoleDevice, "d1", 90*time.Minute)
	certFile, keyFile := filepath.Join(dir, "d1.crt"), filepath.Join(dir, "d1.key")
	now := testNow
	calls := 0
	r := NewRenewer(RenewerConfig{CertFile: certFile, KeyFile: keyFile, PendingFile: filepath.Join(dir, "renew.key"),
		Now: func() time.Time { return now },
		Request: func(_ context.Context, csr []byte) ([]byte, error) {
			calls++
			if calls == 1 {
				return nil, errors.New("server restarting")
			}
			return is.Renew(csr, dev, now)
		}})
	if did, err := r.RenewIfDue(context.Background()); did || err != nil || calls != 0 {
		t.Fatalf("fresh certificate: RenewIfDue = %v, %v after %d calls; want nothing done", did, err, calls)
	}
	now = RenewAt(dev).Add(time.Second)
	if _, err := r.RenewIfDue(context.Background()); err == nil {
		t.Fatal("RenewIfDue with the server away succeeded")
	}
	pending, err := os.ReadFile(filepath.Join(dir, "renew.key"))
	if err != nil {
		t.Fatalf("no pending key kept for the retry: %v", err)
	}
	if did, err := r.RenewIfDue(context.Background()); !did || err != nil {
		t.Fatalf("retry: %v, %v", did, err)
	}
	if key, _ := os.ReadFile(keyFile); string(key) != string(pending) {
		t.Error("the retry did not use the key kept from the first try")
	}
	if _, err := ReloadingClientTLSConfig(certFile, keyFile, filepath.Join(dir, CACertFile)); err != nil {
		t.Errorf("renewed pair does not load: %v", err)
	}
	// A crash after the certificate was written but not the key.
	newKey, _ := os.ReadFile(keyFile)
	if err := os.WriteFile(filepath.Join(dir, "renew.key"), newKey, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, []byte("old key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := r.Recover(); err != nil {
		t.Fatal(err)
	}
	if key, _ := os.ReadFile(keyFile); string(key) != string(newKey) {
		t.Error("Recover did not finish the pair")
	}
	if _, err := os.Stat(filepath.Join(dir, "renew.key")); !os.IsNotExist(err) {
		t.Errorf("pending key left after Recover: %v", err)
	}
	// An expired certificate does not renew.
	now = readCert(t, certFile).NotAfter.Add(time.Hour)
	if _, err := r.RenewIfDue(context.Background()); err == nil {
		t.Error("RenewIfDue of an expired certificate succeeded")
	}
}

func FuzzRenew(f *testing.F) {
	dir := filepath.Join(f.TempDir(), "pki")
	if err := Init(dir, testNow); err != nil {
		f.Fatal(err)
	}
	if _, _, err := Issue(dir, IssueOptions{Role: RoleIssuer, Name: "iss"}, testNow); err != nil {
		f.Fatal(err)
	}
	certPath, _, err := Issue(dir, IssueOptions{Role: RoleDevice, Name: "d1"}, testNow)
	if err != nil {
		f.Fatal(err)
	}
	is, err := LoadIssuer(filepath.Join(dir, "iss.crt"), filepath.Join(dir, "iss.key"), filepath.Join(dir, CACertFile))
	if err != nil {
		f.Fatal(err)
	}
	certs, _ := readCerts("certificate", certPath)
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "d1"}}, k)
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := is.Renew(data, certs[0], testNow)
		if err != nil {
			return
		}
		c, err := parseCerts(out)
		if err != nil || c[0].Subject.CommonName != "d1" {
			t.Fatalf("Renew accepted a request and gave %v, %v", c, err)
		}
	})
}

func FuzzParseCRL(f *testing.F) {
	dir := filepath.Join(f.TempDir(), "pki")
	if err := Init(dir, testNow); err != nil {
		f.Fatal(err)
	}
	if _, _, err := Issue(dir, IssueOptions{Role: RoleDevice, Name: "d1"}, testNow); err != nil {
		f.Fatal(err)
	}
	if _, err := Revoke(dir, RoleDevice, "d1", testNow); err != nil {
		f.Fatal(err)
	}
	good, _ := os.ReadFile(filepath.Join(dir, CRLFile))
	ca, _ := readCerts("CA certificate", filepath.Join(dir, CACertFile))
	f.Add(good)
	f.Add([]byte("-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = ParseCRL(data, ca[0])
	})
}
