package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/pki"
)

// browser is an HTTPS client with no client certificate and a cookie jar,
// as a browser on the fleet page is.
type browser struct {
	t    *testing.T
	base string
	hc   *http.Client
}

func newBrowser(t *testing.T, ts *testServer) *browser {
	t.Helper()
	pool, err := pki.LoadCertPool(ts.ca)
	if err != nil {
		t.Fatal(err)
	}
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{
		Jar:       jar,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}},
		// Redirects are checked by the tests themselves.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       10 * time.Second,
	}
	t.Cleanup(hc.CloseIdleConnections)
	return &browser{t: t, base: ts.url, hc: hc}
}

func (b *browser) do(method, path string, form url.Values, hdr map[string]string) (*http.Response, string) {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, b.base+path, body)
	if err != nil {
		b.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := b.hc.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp, string(data)
}

func (b *browser) get(path string) (*http.Response, string) {
	return b.do(http.MethodGet, path, nil, nil)
}

// login asks for a login URL with the admin certificate and opens it.
func (b *browser) login(ts *testServer) {
	b.t.Helper()
	l, err := ts.admin.UILogin(context.Background(), time.Minute)
	if err != nil {
		b.t.Fatalf("UILogin: %v", err)
	}
	resp, _ := b.get(l.Path)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/" {
		b.t.Fatalf("GET %s = %d to %q, want 303 to /ui/", l.Path, resp.StatusCode, resp.Header.Get("Location"))
	}
}

var csrfRe = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func csrfOf(t *testing.T, page string) string {
	t.Helper()
	m := csrfRe.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no CSRF token in the page:\n%s", page)
	}
	return m[1]
}

func TestPageLogin(t *testing.T) {
	ts := newTestServer(t, time.Second)
	b := newBrowser(t, ts)

	// Without a session: the login notice, for every page.
	for _, p := range []string{"/ui/", "/ui/devices", "/ui/events/stream", "/ui/rollouts/x"} {
		resp, body := b.get(p)
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "drover ui url") {
			t.Errorf("GET %s without a session = %d, want 401 with the login notice", p, resp.StatusCode)
		}
	}
	// The browser has no certificate: the API still refuses it.
	if resp, body := b.get("/v1/devices"); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "client certificate") {
		t.Errorf("GET /v1/devices without a certificate = %d %s, want 401 naming the certificate", resp.StatusCode, body)
	}
	if resp, _ := b.get("/metrics"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /metrics without a certificate = %d, want 401", resp.StatusCode)
	}
	// A device certificate cannot ask for a login URL.
	if _, err := ts.dev["d1"].UILogin(context.Background(), time.Minute); err == nil || !strings.Contains(err.Error(), "admin") {
		t.Errorf("UILogin with a device certificate = %v, want refused for want of an admin certificate", err)
	}

	l, err := ts.admin.UILogin(context.Background(), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	resp, _ := b.get(l.Path)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/" {
		t.Fatalf("GET login = %d to %q, want 303 to /ui/", resp.StatusCode, resp.Header.Get("Location"))
	}
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "drover_ui" {
			cookie = c
		}
	}
	if cookie == nil || !cookie.HttpOnly || !cookie.Secure || cookie.SameSite != http.SameSiteStrictMode || cookie.MaxAge != 8*3600 {
		t.Fatalf("session cookie = %+v, want HttpOnly, Secure, SameSite=Strict, 8h", cookie)
	}
	resp, page := b.get("/ui/")
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, "converged") || !strings.Contains(page, "ops") {
		t.Fatalf("GET /ui/ after login = %d, want the fleet summary for ops:\n%s", resp.StatusCode, page)
	}
	csp := resp.Header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") {
		t.Errorf("Content-Security-Policy = %q, want script from the server only, nothing inline", csp)
	}

	// The URL works once.
	other := newBrowser(t, ts)
	if resp, _ := other.get(l.Path); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("second use of a login URL = %d, want 401", resp.StatusCode)
	}
	if resp, _ := other.get("/ui/login?token=made-up"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("made-up login token = %d, want 401", resp.StatusCode)
	}

	// Logging out needs the page's CSRF token; then the session is gone.
	if resp, _ := b.do(http.MethodPost, "/ui/logout", url.Values{}, nil); resp.StatusCode != http.StatusForbidden {
		t.Errorf("logout without the CSRF token = %d, want 403", resp.StatusCode)
	}
	if resp, _ := b.do(http.MethodPost, "/ui/logout", url.Values{"csrf": {csrfOf(t, page)}}, nil); resp.StatusCode != http.StatusOK {
		t.Errorf("logout = %d, want 200", resp.StatusCode)
	}
	b.hc.Jar.SetCookies(mustURL(t, ts.url+"/ui/"), []*http.Cookie{cookie}) // a stolen copy of the old cookie
	if resp, _ := b.get("/ui/"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /ui/ with the cookie of a closed session = %d, want 401", resp.StatusCode)
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestPageLoginTTL(t *testing.T) {
	ts := newTestServer(t, time.Second)
	for _, ttl := range []time.Duration{time.Millisecond, 25 * time.Hour} {
		if _, err := ts.admin.UILogin(context.Background(), ttl); err == nil || !strings.Contains(err.Error(), "ttl") {
			t.Errorf("UILogin(%s) = %v, want an error naming the ttl", ttl, err)
		}
	}
}

// TestPageEscaping: what a device writes is shown as text, never markup.
func TestPageEscaping(t *testing.T) {
	ts := newTestServer(t, time.Second)
	ts.report(t, "d1", "linux")
	evil := `<img src=x onerror="alert(1)"><script>alert(2)</script>`
	if err := ts.dev["d1"].PostEvents(context.Background(), "d1", []api.Event{{Kind: api.KindLog, Message: evil, Priority: api.PriorityHigh}}); err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t, ts)
	b.login(ts)
	for _, p := range []string{"/ui/events", "/ui/devices/d1"} {
		_, body := b.get(p)
		if strings.Contains(body, "<img src=x") || strings.Contains(body, "<script>alert") {
			t.Errorf("GET %s shows the device's message as markup:\n%s", p, body)
		}
		if !strings.Contains(body, "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;") {
			t.Errorf("GET %s does not show the device's message as text", p)
		}
	}
}

// TestPageDevices: filter and paging are done on the server.
func TestPageDevices(t *testing.T) {
	ts := newTestServer(t, time.Second)
	for i := range 120 {
		id := fmt.Sprintf("node-%03d", i)
		ts.dev[id] = ts.devClient(t, id)
		role := "web"
		if i%3 == 0 {
			role = "db"
		}
		if _, err := ts.dev[id].Report(context.Background(), id, api.Report{Tags: []string{"linux"}, Labels: map[string]string{"role": role},
			Installed: []api.InstalledApp{}}); err != nil {
			t.Fatal(err)
		}
	}
	b := newBrowser(t, ts)
	b.login(ts)
	rows := regexp.MustCompile(`<td><a href="/ui/devices/node-`)
	tests := []struct {
		path     string
		wantRows int
		want     string
	}{
		{"/ui/devices", 50, "page 1 of 3"},
		{"/ui/devices?page=3", 20, "page 3 of 3"},
		{"/ui/devices?page=99", 20, "page 3 of 3"},
		{"/ui/devices?q=role%3Ddb", 40, "40 of 120"},
		{"/ui/devices?q=node-11", 10, "10 of 120"},
		{"/ui/devices?q=nothing-like-it", 0, "No device matches"},
		{"/ui/devices?q=" + url.QueryEscape("role in (db)"), 40, "40 of 120"},
		{"/ui/devices?q=" + url.QueryEscape("role!=db"), 50, "80 of 120"},
		{"/ui/devices?q=" + url.QueryEscape("role in (db"), 0, "No device matches"},
	}
	for _, tt := range tests {
		_, body := b.get(tt.path)
		if n := len(rows.FindAllString(body, -1)); n != tt.wantRows || !strings.Contains(body, tt.want) {
			t.Errorf("GET %s = %d rows, want %d and %q", tt.path, n, tt.wantRows, tt.want)
		}
	}
	// The page's own refresh asks for the main part only.
	_, frag := b.do(http.MethodGet, "/ui/devices?page=2", nil, map[string]string{"X-Drover-Fragment": "1"})
	if strings.Contains(frag, "<html") || !strings.Contains(frag, "page 2 of 3") {
		t.Errorf("fragment of page 2 = %q..., want the table alone", frag[:min(len(frag), 200)])
	}
}

// TestPageCSRF: a state-changing POST needs the session's token and this
// origin.
func TestPageCSRF(t *testing.T) {
	ts := newTestServer(t, time.Second)
	b := newBrowser(t, ts)
	b.login(ts)
	_, page := b.get("/ui/")
	token := csrfOf(t, page)
	tests := []struct {
		name string
		form url.Values
		hdr  map[string]string
		want int
	}{
		{"no token", url.Values{}, nil, http.StatusForbidden},
		{"wrong token", url.Values{"csrf": {"x" + token}}, nil, http.StatusForbidden},
		{"cross-site", url.Values{"csrf": {token}}, map[string]string{"Sec-Fetch-Site": "cross-site"}, http.StatusForbidden},
		{"other origin", url.Values{"csrf": {token}}, map[string]string{"Origin": "https://evil.example"}, http.StatusForbidden},
		// Past the checks, the action itself answers: there is no such rollout.
		{"good", url.Values{"csrf": {token}}, map[string]string{"Sec-Fetch-Site": "same-origin"}, http.StatusNotFound},
	}
	for _, tt := range tests {
		resp, _ := b.do(http.MethodPost, "/ui/rollouts/r1/pause", tt.form, tt.hdr)
		if resp.StatusCode != tt.want {
			t.Errorf("%s: POST pause = %d, want %d", tt.name, resp.StatusCode, tt.want)
		}
	}
}

// TestPageDeviceRemoved: a device forgotten with `device rm` leaves the
// page's list at once, and one that reports for the first time joins it.
func TestPageDeviceRemoved(t *testing.T) {
	ts := newTestServer(t, time.Second)
	ts.report(t, "d1", "linux")
	b := newBrowser(t, ts)
	b.login(ts)
	if _, body := b.get("/ui/devices"); !strings.Contains(body, `href="/ui/devices/d1"`) {
		t.Fatalf("devices page lacks d1:\n%s", body)
	}
	if err := ts.admin.RemoveDevice(context.Background(), "d1"); err != nil {
		t.Fatal(err)
	}
	ts.report(t, "d2", "linux")
	// The page keeps its list for a second at most.
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, body := b.get("/ui/devices")
		gone, joined := !strings.Contains(body, `href="/ui/devices/d1"`), strings.Contains(body, `href="/ui/devices/d2"`)
		if gone && joined {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("devices page after device rm d1 and a first report of d2: d1 gone %v, d2 shown %v", gone, joined)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
