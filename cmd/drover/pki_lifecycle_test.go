package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/pki"
)

// certClient is an HTTP client with name's certificate, as an agent has.
func certClient(t *testing.T, f *fleet, name string) *http.Client {
	t.Helper()
	cfg, err := pki.ClientTLSConfig(filepath.Join(f.pki, name+".crt"), filepath.Join(f.pki, name+".key"), filepath.Join(f.pki, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
}

func status(t *testing.T, cl *http.Client, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	var e api.Error
	_ = json.NewDecoder(resp.Body).Decode(&e)
	return resp.StatusCode, e.Message
}

// waitStatus polls until the request answers want.
func waitStatus(t *testing.T, cl *http.Client, method, url, body string, want int) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		got, msg := status(t, cl, method, url, body)
		if got == want {
			return msg
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s %s = %d (%s), want %d", method, url, got, msg, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func csrFor(t *testing.T, cn string) string {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, k)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(api.RenewRequest{CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))})
	return string(b)
}

func TestPKIRevokedRefusedAtNextRequest(t *testing.T) {
	f := &fleet{t: t, dir: t.TempDir()}
	f.pki = filepath.Join(f.dir, "pki")
	f.mustOK(nil, "pki", "init", "--dir", f.pki)
	f.mustOK(nil, "pki", "issue", "--dir", f.pki, "--server", "localhost")
	f.mustOK(nil, "pki", "issue", "--dir", f.pki, "--admin", "ops")
	f.mustOK(nil, "pki", "issue", "--dir", f.pki, "--admin", "ops2")
	f.mustOK(nil, "pki", "issue", "--dir", f.pki, "--issuer", "issuing")
	f.mustOK(nil, "pki", "issue", "--dir", f.pki, "--device", "dev1")
	f.mustOK(nil, "pki", "issue", "--dir", f.pki, "--device", "dev2")
	f.serverArgs = []string{"--crl", filepath.Join(f.pki, pki.CRLFile),
		"--issuer-cert", filepath.Join(f.pki, "issuing.crt"), "--issuer-key", filepath.Join(f.pki, "issuing.key")}
	f.startServer()

	dev := certClient(t, f, "dev1")
	desired := f.addr + "/v1/devices/dev1/desired"
	if got, msg := status(t, dev, "GET", desired, ""); got != http.StatusOK {
		t.Fatalf("device before revocation: %d %s", got, msg)
	}
	f.op("device", "ls")

	out := f.mustOK(nil, "pki", "revoke", "--dir", f.pki, "--device", "dev1")
	if !strings.Contains(out, "revoked 1 certificates of device dev1") {
		t.Fatalf("pki revoke printed %q", out)
	}
	// The same client, over its open connection: refused at its next request.
	if msg := waitStatus(t, dev, "GET", desired, "", http.StatusUnauthorized); !strings.Contains(msg, "revoked") {
		t.Errorf("revoked device told %q, want it to say revoked", msg)
	}
	// A revoked certificate cannot renew; another device still can.
	if got, _ := status(t, dev, "POST", f.addr+"/v1/devices/dev1/certificate", csrFor(t, "dev1")); got != http.StatusUnauthorized {
		t.Errorf("renewal with a revoked certificate: %d, want 401", got)
	}
	if got, msg := status(t, certClient(t, f, "dev2"), "POST", f.addr+"/v1/devices/dev2/certificate", csrFor(t, "dev2")); got != http.StatusOK {
		t.Errorf("renewal of dev2: %d %s", got, msg)
	}
	// Only for its own name.
	if got, _ := status(t, certClient(t, f, "dev2"), "POST", f.addr+"/v1/devices/dev2/certificate", csrFor(t, "dev1")); got != http.StatusBadRequest {
		t.Errorf("renewal of dev2 asking for dev1's name: %d, want 400", got)
	}

	f.mustOK(nil, "pki", "revoke", "--dir", f.pki, "--admin", "ops2")
	deadline := time.Now().Add(15 * time.Second)
	for {
		r := runBin(t, f.certEnv("ops2"), "", "device", "ls")
		if r.code == 1 && strings.Contains(r.stderr, "revoked") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("revoked admin: exit %d, stderr %q", r.code, r.stderr)
		}
		time.Sleep(100 * time.Millisecond)
	}
	f.op("device", "ls") // the other admin still works

	r := runBin(t, nil, "", "pki", "revoke", "--dir", f.pki, "--device", "nobody")
	if r.code != 1 || !strings.Contains(r.stderr, "no certificate issued") {
		t.Errorf("revoke of an unknown device: exit %d, %q", r.code, r.stderr)
	}
}

func readCertFile(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode([]byte(readFile(t, path)))
	if b == nil {
		t.Fatalf("%s: no PEM", path)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestPKICertificateRenewedByItself(t *testing.T) {
	f := &fleet{t: t, dir: t.TempDir()}
	f.pki = filepath.Join(f.dir, "pki")
	f.mustOK(nil, "pki", "init", "--dir", f.pki)
	f.mustOK(nil, "pki", "issue", "--dir", f.pki, "--server", "localhost")
	f.mustOK(nil, "pki", "issue", "--dir", f.pki, "--admin", "ops")
	f.mustOK(nil, "pki", "issue", "--dir", f.pki, "--issuer", "issuing")
	f.serverArgs = []string{"--crl", filepath.Join(f.pki, pki.CRLFile),
		"--issuer-cert", filepath.Join(f.pki, "issuing.crt"), "--issuer-key", filepath.Join(f.pki, "issuing.key")}
	f.startServer()

	// The server is away when the agent starts, with a certificate due
	// for renewal in under 7 s; the renewal waits for the server.
	addr := f.addr
	f.stopServer(f.server, f.pipe)
	f.mustOK(nil, "pki", "issue", "--dir", f.pki, "--device", "dev1", "--validity", "10s")
	certPath := filepath.Join(f.pki, "dev1.crt")
	first := readCertFile(t, certPath)
	a := f.newAgent("dev1")
	a.start()
	f.listen = strings.TrimPrefix(addr, "https://")
	f.startServer()

	deadline := time.Now().Add(30 * time.Second)
	var renewed *x509.Certificate
	for renewed == nil {
		if c := readCertFile(t, certPath); c.SerialNumber.Cmp(first.SerialNumber) != 0 {
			renewed = c
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("certificate not renewed in 30s; agent log:\n%s", tail(a.logs.String(), 3000))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if renewed.Issuer.CommonName != "issuing" || renewed.Subject.CommonName != "dev1" {
		t.Errorf("renewed certificate: CN %q issued by %q, want dev1 by issuing", renewed.Subject.CommonName, renewed.Issuer.CommonName)
	}
	if st, err := os.Stat(filepath.Join(f.pki, "dev1.key")); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("renewed key: %v, %v; want mode 0600", st, err)
	}
	// Past the first certificate's end (real time must pass), the agent
	// still works.
	if wait := time.Until(first.NotAfter); wait > 0 {
		time.Sleep(wait + 500*time.Millisecond)
	}
	f.op("state", "set", "-f", writeState(t, f, "dev1", "id: dev1\napps: []\n"))
	f.waitFor("dev1", "seen with a renewed certificate", func(d deviceJSON) bool { return d.Status.Converged })

	// Revoking the device revokes its renewals too.
	f.mustOK(nil, "pki", "revoke", "--dir", f.pki, "--device", "dev1")
	cl := certClient(t, f, "dev1")
	waitStatus(t, cl, "GET", f.addr+"/v1/devices/dev1/desired", "", http.StatusUnauthorized)
}
