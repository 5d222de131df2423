package pki

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// newCA makes a CA in a fresh directory and returns the directory.
func newCA(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pki")
	if err := Init(dir, testNow); err != nil {
		t.Fatalf("Init(%s) = %v", dir, err)
	}
	return dir
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	certs, err := readCerts("certificate", path)
	if err != nil {
		t.Fatal(err)
	}
	return certs[0]
}

func fileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestInit(t *testing.T) {
	dir := newCA(t)
	if got := fileMode(t, dir); got != 0o700 {
		t.Errorf("mode of %s = %v, want 0700", dir, got)
	}
	if got := fileMode(t, filepath.Join(dir, "ca.key")); got != 0o600 {
		t.Errorf("mode of ca.key = %v, want 0600", got)
	}
	ca := readCert(t, filepath.Join(dir, "ca.crt"))
	if !ca.IsCA || ca.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("ca.crt: IsCA = %v, KeyUsage = %v; want a CA that signs certificates", ca.IsCA, ca.KeyUsage)
	}
	if want := testNow.AddDate(10, 0, 0); ca.NotAfter.Before(want.Add(-72*time.Hour)) || ca.NotAfter.After(want) {
		t.Errorf("ca.crt NotAfter = %v, want about %v", ca.NotAfter, want)
	}
	if _, _, err := loadCA(dir); err != nil {
		t.Errorf("loadCA(%s) = %v, want the key to fit the certificate", dir, err)
	}
}

func TestIssueRoles(t *testing.T) {
	dir := newCA(t)
	roots, err := LoadCertPool(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		opt       IssueOptions
		usage     x509.ExtKeyUsage
		validity  time.Duration
		wantDNS   []string
		wantIPs   []string
		verifyDNS string
	}{
		{
			opt:      IssueOptions{Role: RoleServer, Name: "drover.example.com", Hosts: []string{"10.0.0.5", "alt.example.com", "localhost"}},
			usage:    x509.ExtKeyUsageServerAuth,
			validity: 365 * 24 * time.Hour,
			wantDNS:  []string{"drover.example.com", "alt.example.com", "localhost"},
			wantIPs:  []string{"10.0.0.5", "127.0.0.1", "::1"},
		},
		{
			opt:      IssueOptions{Role: RoleDevice, Name: "device-1"},
			usage:    x509.ExtKeyUsageClientAuth,
			validity: 5 * 365 * 24 * time.Hour,
		},
		{
			opt:      IssueOptions{Role: RoleAdmin, Name: "alice"},
			usage:    x509.ExtKeyUsageClientAuth,
			validity: 365 * 24 * time.Hour,
		},
		{
			opt:      IssueOptions{Role: RoleDevice, Name: "short.lived_1", Validity: 48 * time.Hour},
			usage:    x509.ExtKeyUsageClientAuth,
			validity: 48 * time.Hour,
		},
	}
	for _, tt := range tests {
		t.Run(tt.opt.Name, func(t *testing.T) {
			certPath, keyPath, err := Issue(dir, tt.opt, testNow)
			if err != nil {
				t.Fatalf("Issue(%+v) = %v", tt.opt, err)
			}
			if want := filepath.Join(dir, tt.opt.Name+".crt"); certPath != want {
				t.Errorf("certPath = %s, want %s", certPath, want)
			}
			if want := filepath.Join(dir, tt.opt.Name+".key"); keyPath != want {
				t.Errorf("keyPath = %s, want %s", keyPath, want)
			}
			if got := fileMode(t, keyPath); got != 0o600 {
				t.Errorf("mode of %s = %v, want 0600", keyPath, got)
			}
			cert := readCert(t, certPath)
			if cert.Subject.CommonName != tt.opt.Name {
				t.Errorf("CN = %q, want %q", cert.Subject.CommonName, tt.opt.Name)
			}
			role, err := RoleOf(cert)
			if err != nil || role != tt.opt.Role {
				t.Errorf("RoleOf = %q, %v; want %q", role, err, tt.opt.Role)
			}
			if got := cert.NotAfter.Sub(testNow); got != tt.validity {
				t.Errorf("NotAfter - now = %v, want %v", got, tt.validity)
			}
			_, err = cert.Verify(x509.VerifyOptions{
				Roots:       roots,
				CurrentTime: testNow,
				KeyUsages:   []x509.ExtKeyUsage{tt.usage},
			})
			if err != nil {
				t.Errorf("Verify for %v = %v", tt.usage, err)
			}
			other := x509.ExtKeyUsageServerAuth
			if tt.usage == other {
				other = x509.ExtKeyUsageClientAuth
			}
			if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: testNow, KeyUsages: []x509.ExtKeyUsage{other}}); err == nil {
				t.Errorf("Verify for %v = nil, want an error: the certificate is only for %v", other, tt.usage)
			}
			if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: cert.NotAfter.Add(time.Minute), KeyUsages: []x509.ExtKeyUsage{tt.usage}}); err == nil {
				t.Errorf("Verify after NotAfter = nil, want an expiry error")
			}
			if diff := cmp.Diff(tt.wantDNS, cert.DNSNames); diff != "" {
				t.Errorf("DNSNames (-want +got):\n%s", diff)
			}
			var ips []string
			for _, ip := range cert.IPAddresses {
				ips = append(ips, ip.String())
			}
			if diff := cmp.Diff(tt.wantIPs, ips); diff != "" {
				t.Errorf("IPAddresses (-want +got):\n%s", diff)
			}
			for _, h := range tt.wantDNS {
				if err := cert.VerifyHostname(h); err != nil {
					t.Errorf("VerifyHostname(%s) = %v", h, err)
				}
			}
		})
	}
}

func TestIssueValidityCappedByCA(t *testing.T) {
	dir := newCA(t)
	ca := readCert(t, filepath.Join(dir, "ca.crt"))
	// Eight years on, a 5-year device certificate would outlive the CA.
	later := testNow.AddDate(8, 0, 0)
	certPath, _, err := Issue(dir, IssueOptions{Role: RoleDevice, Name: "late"}, later)
	if err != nil {
		t.Fatal(err)
	}
	if got := readCert(t, certPath).NotAfter; !got.Equal(ca.NotAfter) {
		t.Errorf("NotAfter = %v, want the CA's %v", got, ca.NotAfter)
	}
	_, _, err = Issue(dir, IssueOptions{Role: RoleDevice, Name: "too-late"}, ca.NotAfter.Add(time.Hour))
	if err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("Issue after the CA expired = %v, want an error saying it expired", err)
	}
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestIssueRejects(t *testing.T) {
	dir := newCA(t)
	tests := []struct {
		name string
		opt  IssueOptions
		want string // in the error
	}{
		{"empty name", IssueOptions{Role: RoleDevice, Name: ""}, `name ""`},
		{"slash", IssueOptions{Role: RoleDevice, Name: "a/b"}, `name "a/b"`},
		{"dotdot", IssueOptions{Role: RoleAdmin, Name: ".."}, `name ".."`},
		{"leading dash", IssueOptions{Role: RoleDevice, Name: "-x"}, `name "-x"`},
		{"space", IssueOptions{Role: RoleAdmin, Name: "bob smith"}, `name "bob smith"`},
		{"too long", IssueOptions{Role: RoleDevice, Name: strings.Repeat("a", 64)}, "name"},
		{"unicode", IssueOptions{Role: RoleDevice, Name: "gerät"}, `name "gerät"`},
		{"ca", IssueOptions{Role: RoleServer, Name: "ca"}, "reserved"},
		{"no role", IssueOptions{Name: "x"}, `role ""`},
		{"bad role", IssueOptions{Role: "root", Name: "x"}, `role "root"`},
		{"hosts on device", IssueOptions{Role: RoleDevice, Name: "d1", Hosts: []string{"h"}}, "only a server"},
		{"bad host", IssueOptions{Role: RoleServer, Name: "s1", Hosts: []string{"a b"}}, `host "a b"`},
		{"empty host", IssueOptions{Role: RoleServer, Name: "s1", Hosts: []string{""}}, `host ""`},
		{"negative validity", IssueOptions{Role: RoleDevice, Name: "d1", Validity: -time.Hour}, "validity"},
	}
	before := dirNames(t, dir)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Issue(dir, tt.opt, testNow)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Issue(%+v) = %v, want an error containing %q", tt.opt, err, tt.want)
			}
		})
	}
	if diff := cmp.Diff(before, dirNames(t, dir)); diff != "" {
		t.Errorf("files in %s changed by rejected Issue calls (-before +after):\n%s", dir, diff)
	}
}

func TestNoOverwrite(t *testing.T) {
	dir := newCA(t)
	caKey, err := os.ReadFile(filepath.Join(dir, "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := Init(dir, testNow); !errors.Is(err, ErrExists) {
		t.Errorf("second Init = %v, want ErrExists", err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "ca.key")); !bytes.Equal(got, caKey) {
		t.Errorf("second Init changed ca.key")
	}

	opt := IssueOptions{Role: RoleDevice, Name: "dev1"}
	_, keyPath, err := Issue(dir, opt, testNow)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := os.ReadFile(keyPath)
	_, _, err = Issue(dir, opt, testNow)
	if !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), "dev1.key") {
		t.Errorf("second Issue = %v, want ErrExists naming dev1.key", err)
	}
	if got, _ := os.ReadFile(keyPath); !bytes.Equal(got, key) {
		t.Errorf("second Issue changed %s", keyPath)
	}

	// A certificate without its key (say, copied in by hand) also blocks.
	if err := os.WriteFile(filepath.Join(dir, "dev2.crt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Issue(dir, IssueOptions{Role: RoleDevice, Name: "dev2"}, testNow); !errors.Is(err, ErrExists) {
		t.Errorf("Issue over a lone dev2.crt = %v, want ErrExists", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "dev2.key")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("refused Issue left dev2.key behind: %v", err)
	}
	for _, n := range dirNames(t, dir) {
		if strings.HasPrefix(n, ".tmp-") {
			t.Errorf("temporary file %s left in %s", n, dir)
		}
	}
}

func TestFileErrors(t *testing.T) {
	empty := t.TempDir()
	bad := newCA(t)
	if err := os.WriteFile(filepath.Join(bad, "ca.crt"), []byte("not pem\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	mismatch := newCA(t)
	other := newCA(t)
	otherKey, _ := os.ReadFile(filepath.Join(other, "ca.key"))
	if err := os.Remove(filepath.Join(mismatch, "ca.key")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mismatch, "ca.key"), otherKey, 0o600); err != nil {
		t.Fatal(err)
	}
	good := newCA(t)
	crt, key, err := Issue(good, IssueOptions{Role: RoleDevice, Name: "d"}, testNow)
	if err != nil {
		t.Fatal(err)
	}
	crt2, _, err := Issue(good, IssueOptions{Role: RoleDevice, Name: "e"}, testNow)
	if err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(good, "ca.crt")
	missing := filepath.Join(empty, "nope.crt")

	tests := []struct {
		name string
		err  error
		want string
	}{
		{
			"issue without CA",
			err3(Issue(empty, IssueOptions{Role: RoleDevice, Name: "d"}, testNow)),
			"read CA certificate " + filepath.Join(empty, "ca.crt") + ": no such file or directory",
		},
		{
			"malformed CA",
			err3(Issue(bad, IssueOptions{Role: RoleDevice, Name: "d"}, testNow)),
			"parse CA certificate " + filepath.Join(bad, "ca.crt") + ": no PEM CERTIFICATE block",
		},
		{
			"CA key of another CA",
			err3(Issue(mismatch, IssueOptions{Role: RoleDevice, Name: "d"}, testNow)),
			"CA key " + filepath.Join(mismatch, "ca.key") + " does not match CA certificate " + filepath.Join(mismatch, "ca.crt"),
		},
		{
			"pool missing",
			err2(LoadCertPool(missing)),
			"read CA certificate " + missing + ": no such file or directory",
		},
		{
			"server cert missing",
			err2(ServerTLSConfig(missing, key, ca)),
			"read certificate " + missing + ": no such file or directory",
		},
		{
			"client key missing",
			err2(ClientTLSConfig(crt, missing, ca)),
			"read key " + missing + ": no such file or directory",
		},
		{
			"key is a certificate",
			err2(ClientTLSConfig(crt, crt, ca)),
			"parse key " + crt + ": no PEM private key block",
		},
		{
			"key of another certificate",
			err2(ClientTLSConfig(crt2, key, ca)),
			"key " + key + " with certificate " + crt2 + ": tls: private key does not match public key",
		},
		{
			"CA is a key",
			err2(ServerTLSConfig(crt, key, key)),
			"parse CA certificate " + key + ": no PEM CERTIFICATE block",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.err == nil || tt.err.Error() != tt.want {
				t.Errorf("error = %v, want %q", tt.err, tt.want)
			}
			if tt.err != nil && strings.Contains(tt.err.Error(), "\n") {
				t.Errorf("error %q spans lines", tt.err)
			}
		})
	}
	if _, err := LoadCertPool(missing); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadCertPool(missing) = %v, want it to match os.ErrNotExist", err)
	}
}

func TestRoleOf(t *testing.T) {
	tests := []struct {
		ou      []string
		want    Role
		wantErr string
	}{
		{[]string{"drover-server"}, RoleServer, ""},
		{[]string{"drover-device"}, RoleDevice, ""},
		{[]string{"ops", "drover-admin"}, RoleAdmin, ""},
		{nil, "", "no drover role"},
		{[]string{"admin"}, "", "no drover role"},
		{[]string{"drover-root"}, "", `unknown drover role "root"`},
		{[]string{"drover-device", "drover-admin"}, "", "more than one"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.ou, ","), func(t *testing.T) {
			cert := &x509.Certificate{Subject: pkix.Name{CommonName: "x", OrganizationalUnit: tt.ou}}
			got, err := RoleOf(cert)
			if got != tt.want {
				t.Errorf("RoleOf(OU %v) = %q, want %q", tt.ou, got, tt.want)
			}
			if (err == nil) != (tt.wantErr == "") || err != nil && !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("RoleOf(OU %v) error = %v, want %q", tt.ou, err, tt.wantErr)
			}
		})
	}
	if _, err := RoleOf(nil); err == nil {
		t.Errorf("RoleOf(nil) = nil error, want one")
	}
}

// FuzzParseCerts feeds arbitrary bytes to the PEM parsers used on files an
// operator hands us; they must return an error, never panic.
func FuzzParseCerts(f *testing.F) {
	dir := filepath.Join(f.TempDir(), "pki")
	if err := Init(dir, testNow); err != nil {
		f.Fatal(err)
	}
	for _, name := range []string{"ca.crt", "ca.key"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Add([]byte("-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		certs, err := parseCerts(data)
		if err == nil && len(certs) == 0 {
			t.Errorf("parseCerts = no certificates and no error")
		}
		_, _ = parseKey(data)
		_ = hasKeyBlock(data)
	})
}

func TestHostsDedup(t *testing.T) {
	tmpl := &x509.Certificate{}
	if err := addHosts(tmpl, "127.0.0.1", []string{"LocalHost", "::1", "0:0:0:0:0:0:0:1", "*.example.com"}); err != nil {
		t.Fatal(err)
	}
	var ips []string
	for _, ip := range tmpl.IPAddresses {
		ips = append(ips, ip.String())
	}
	if want := []string{"127.0.0.1", "::1"}; !slices.Equal(ips, want) {
		t.Errorf("IPs = %v, want %v", ips, want)
	}
	if want := []string{"localhost", "*.example.com"}; !slices.Equal(tmpl.DNSNames, want) {
		t.Errorf("DNSNames = %v, want %v", tmpl.DNSNames, want)
	}
}

// err2 and err3 return the error of a call returning (value, error) or
// (value, value, error).
func err2[T any](_ T, err error) error { return err }

func err3[T, U any](_ T, _ U, err error) error { return err }
