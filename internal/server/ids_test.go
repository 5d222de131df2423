package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/client"
	"github.com/drover-dev/drover/internal/pki"
)

// forgedClient is a device client whose certificate the fleet CA signed
// with a common name pki.Issue would refuse (as a CA used by other tools
// might): the server must still refuse the name.
func (ts *testServer) forgedClient(t *testing.T, cn string) *client.Client {
	t.Helper()
	caPEM, err := os.ReadFile(filepath.Join(ts.pkiDir, pki.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(ts.pkiDir, pki.CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	cb, _ := pem.Decode(caPEM)
	kb, _ := pem.Decode(keyPEM)
	caCert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	caKey, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"drover"}, OrganizationalUnit: []string{"drover-" + string(pki.RoleDevice)}},
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	cfg := &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}
	cl, err := client.New(client.Config{Addr: ts.url, TLS: cfg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// One rule for device ids, on every route and for certificate names.
func TestDeviceIDs(t *testing.T) {
	ts := newTestServer(t, time.Second)
	ctx := context.Background()
	bad := []string{"../../etc\nx", "..%2F..%2Fetc%0Ax", "a/b", "evil\nd9 ok", strings.Repeat("a", 2000), ".hidden"}
	for _, id := range bad {
		t.Run("single set "+id[:min(len(id), 20)], func(t *testing.T) {
			_, err := ts.admin.SetState(ctx, api.DesiredState{ID: id, Apps: []api.DesiredApp{}})
			if got := code(err); got != api.EINVALID {
				t.Errorf("SetState(%.40q) = %.80v (code %q), want %s", id, err, got, api.EINVALID)
			}
		})
		t.Run("bulk set "+id[:min(len(id), 20)], func(t *testing.T) {
			_, err := ts.admin.SetStates(ctx, []api.DesiredState{{ID: id, Apps: []api.DesiredApp{}}})
			if got := code(err); got != api.EINVALID {
				t.Errorf("SetStates(%.40q) = %.80v (code %q), want %s", id, err, got, api.EINVALID)
			}
		})
	}
	for _, cn := range []string{"evil\nd9 ok", "a/b", strings.Repeat("a", 2000)} {
		t.Run("certificate "+cn[:min(len(cn), 20)], func(t *testing.T) {
			cl := ts.forgedClient(t, cn)
			_, err := cl.Report(ctx, cn, api.Report{Installed: []api.InstalledApp{}})
			if got := code(err); got != api.EFORBIDDEN && got != api.EINVALID {
				t.Errorf("Report with certificate name %.40q = %.80v (code %q), want it refused", cn, err, got)
			}
		})
	}
	devs, err := ts.admin.Devices(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range devs {
		if !api.ValidDeviceID(d.ID) {
			t.Errorf("device %.40q was registered", d.ID)
		}
	}
	for _, id := range []string{"..%2F..%2Fetc%0Ax", "../../etc\nx"} {
		if _, err := ts.admin.State(ctx, id); code(err) != api.EINVALID {
			t.Errorf("State(%q) = %v, want %s: the id is not stored", id, err, api.EINVALID)
		}
	}
}
