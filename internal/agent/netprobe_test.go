package agent

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/drover-dev/drover/internal/api"
)

func TestProbe(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
		case "/moved":
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
		default:
			http.Error(w, "broken", http.StatusInternalServerError)
		}
	}))
	defer srv.Close()
	addr := srv.Listener.Addr().String()
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	closedAddr := "127.0.0.1:" + strconv.Itoa(closed)
	for _, tc := range []struct {
		name string
		p    api.Probe
		want string // "" = passes; else in the error
	}{
		{"tcp open", api.Probe{Check: api.NetCheck{TCP: port}, Addr: addr}, ""},
		{"tcp closed", api.Probe{Check: api.NetCheck{TCP: closed}, Addr: closedAddr}, "refused"},
		{"http ok", api.Probe{Check: api.NetCheck{HTTP: "/ok", Port: port}, Addr: addr}, ""},
		{"http redirect is an answer", api.Probe{Check: api.NetCheck{HTTP: "/moved", Port: port}, Addr: addr}, ""},
		{"http 500", api.Probe{Check: api.NetCheck{HTTP: "/bad", Port: port}, Addr: addr}, "500"},
		{"http closed", api.Probe{Check: api.NetCheck{HTTP: "/ok", Port: closed}, Addr: closedAddr}, "refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := validProbe(tc.p); err != nil {
				t.Fatalf("validProbe() = %v", err)
			}
			err := probe(context.Background(), tc.p)
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("probe() = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestValidProbeRefuses(t *testing.T) {
	for _, p := range []api.Probe{
		{Check: api.NetCheck{TCP: 80}, Addr: "example.com:80"},          // a name, not an IP
		{Check: api.NetCheck{TCP: 80}, Addr: "127.0.0.1:22"},            // not the check's port
		{Check: api.NetCheck{TCP: 80, HTTP: "/"}, Addr: "127.0.0.1:80"}, // not a valid check
		{Check: api.NetCheck{HTTP: "/", Port: 80}, Addr: "127.0.0.1"},
	} {
		if err := validProbe(p); err == nil {
			t.Errorf("validProbe(%+v) = nil, want an error", p)
		}
	}
}
