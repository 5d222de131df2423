package main

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
)

// TestCloudFacts: an agent pointed with --metadata-url at a fake EC2
// metadata service on loopback reports its instance's facts and tags;
// the answer is cached in system/, so a restart does not ask again; a
// bad URL is a usage error.
func TestCloudFacts(t *testing.T) {
	var hits atomic.Int32
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /latest/api/token", func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Write([]byte("tok"))
	})
	mux.HandleFunc("GET /latest/dynamic/instance-identity/document", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-aws-ec2-metadata-token") != "tok" {
			http.Error(w, "no token", http.StatusUnauthorized)
			return
		}
		w.Write([]byte(`{"instanceId":"i-0abc","instanceType":"m7g.large","region":"eu-west-1","availabilityZone":"eu-west-1b"}`))
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	f := newFleet(t)
	a := f.newAgent("cloud-1", "--metadata-url", srv.URL)
	a.start()
	d := f.waitFor("cloud-1", "reported", func(d deviceJSON) bool { return len(d.SystemTags) > 0 })
	for _, tag := range []string{"cloud-aws", "region-eu-west-1", "zone-eu-west-1b", "instance-type-m7g.large"} {
		if !slices.Contains(d.SystemTags, tag) {
			t.Errorf("systemtags = %v, want %s", d.SystemTags, tag)
		}
	}
	for key, want := range map[string]string{"cloud": "aws", "cloud_instance_id": "i-0abc", "cloud_instance_type": "m7g.large", "cloud_region": "eu-west-1", "cloud_zone": "eu-west-1b"} {
		if r := a.node("config", "facts."+key); strings.TrimSpace(r.stdout) != want {
			t.Errorf("config facts.%s = %q (exit %d, %s), want %q", key, r.stdout, r.code, r.stderr, want)
		}
	}
	if _, err := os.Stat(filepath.Join(a.home, "system", "cloud.json")); err != nil {
		t.Errorf("no cached answer in system/: %v", err)
	}
	asked := hits.Load()
	a.kill()
	a.start()
	f.waitFor("cloud-1", "reported again", func(d deviceJSON) bool { return slices.Contains(d.SystemTags, "cloud-aws") })
	if hits.Load() != asked {
		t.Errorf("the restarted agent asked the metadata service again (%d token requests, want %d)", hits.Load(), asked)
	}

	r := runBin(t, nil, "", "agent", "--home", t.TempDir(), "--metadata-url", "169.254.169.254/latest", "--client-cert", "x")
	if r.code != 2 || !strings.Contains(r.stderr, "--metadata-url") {
		t.Errorf("agent --metadata-url without scheme: exit %d, stderr %q; want 2 naming the flag", r.code, r.stderr)
	}
}
