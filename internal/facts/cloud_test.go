package facts

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// fakeMetadata answers as one provider's metadata service does, and
// nothing else (404), like the real ones.
func fakeMetadata(t *testing.T, provider string, hits *atomic.Int32) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	count := func(h http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if hits != nil {
				hits.Add(1)
			}
			h(w, r)
		}
	}
	switch provider {
	case CloudAWS:
		mux.HandleFunc("PUT /latest/api/token", count(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("X-aws-ec2-metadata-token-ttl-seconds") == "" {
				http.Error(w, "missing ttl", http.StatusBadRequest)
				return
			}
			w.Write([]byte("AQAEAtoken=="))
		}))
		mux.HandleFunc("GET /latest/dynamic/instance-identity/document", count(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("X-aws-ec2-metadata-token") != "AQAEAtoken==" {
				http.Error(w, "unauthorized", http.StatusUnauthorized) // IMDSv2 only
				return
			}
			w.Write([]byte(`{"accountId":"123456789012","architecture":"x86_64","availabilityZone":"eu-west-1a","imageId":"ami-0abc","instanceId":"i-0123456789abcdef0","instanceType":"t3.micro","pendingTime":"2026-11-30T10:00:00Z","privateIp":"10.0.0.5","region":"eu-west-1","version":"2017-09-30"}`))
		}))
	case CloudGCP, "gcp-impostor":
		mux.HandleFunc("GET /computeMetadata/v1/instance/", count(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Metadata-Flavor") != "Google" || r.URL.Query().Get("recursive") != "true" {
				http.Error(w, "forbidden", http.StatusForbidden)
				return
			}
			if provider == CloudGCP {
				w.Header().Set("Metadata-Flavor", "Google")
			}
			w.Write([]byte(`{"id":4520031799277581759,"hostname":"vm-1.c.proj.internal","machineType":"projects/123/machineTypes/e2-medium","zone":"projects/123/zones/europe-west1-b","tags":["web"]}`))
		}))
	case CloudAzure:
		mux.HandleFunc("GET /metadata/instance/compute", count(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Metadata") != "true" || r.URL.Query().Get("api-version") == "" {
				http.Error(w, "bad request", http.StatusBadRequest)
				return
			}
			w.Write([]byte(`{"location":"westeurope","name":"vm-1","vmId":"02aab8a4-74ef-476e-8182-f6d2ba4166a6","vmSize":"Standard_D2s_v3","zone":"2","osType":"Linux"}`))
		}))
	}
	mux.HandleFunc("/", count(func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) }))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestDetectCloud(t *testing.T) {
	for _, tc := range []struct {
		provider string
		want     Facts
		tags     []string
	}{
		{CloudAWS, Facts{KeyCloud: "aws", KeyCloudInstanceID: "i-0123456789abcdef0", KeyCloudInstanceType: "t3.micro", KeyCloudRegion: "eu-west-1", KeyCloudZone: "eu-west-1a"},
			[]string{"cloud-aws", "instance-i-0123456789abcdef0", "instance-type-t3.micro", "region-eu-west-1", "zone-eu-west-1a"}},
		{CloudGCP, Facts{KeyCloud: "gcp", KeyCloudInstanceID: "4520031799277581759", KeyCloudInstanceType: "e2-medium", KeyCloudRegion: "europe-west1", KeyCloudZone: "europe-west1-b"},
			[]string{"cloud-gcp", "instance-4520031799277581759", "instance-type-e2-medium", "region-europe-west1", "zone-europe-west1-b"}},
		{CloudAzure, Facts{KeyCloud: "azure", KeyCloudInstanceID: "02aab8a4-74ef-476e-8182-f6d2ba4166a6", KeyCloudInstanceType: "Standard_D2s_v3", KeyCloudRegion: "westeurope", KeyCloudZone: "westeurope-2"},
			[]string{"cloud-azure", "instance-02aab8a4-74ef-476e-8182-f6d2ba4166a6", "instance-type-standard_d2s_v3", "region-westeurope", "zone-westeurope-2"}},
		// Not a cloud: a web server that answers 404 to everything.
		{"none", nil, nil},
		// An answer to GCE's path without GCE's header is not GCE.
		{"gcp-impostor", nil, nil},
	} {
		t.Run(tc.provider, func(t *testing.T) {
			srv := fakeMetadata(t, tc.provider, nil)
			got, err := DetectCloud(context.Background(), CloudConfig{URL: srv.URL, Timeout: 5 * time.Second})
			if err != nil {
				t.Fatalf("DetectCloud() error = %v", err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("DetectCloud() (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.tags, cloudTags(got), sortStrings); diff != "" {
				t.Errorf("cloudTags() (-want +got):\n%s", diff)
			}
			all := Facts{KeyOS: "linux"}
			for k, v := range got {
				all[k] = v
			}
			if diff := cmp.Diff(append([]string{}, append(tc.tags, "linux")...), Tags(all), sortStrings); diff != "" {
				t.Errorf("Tags() (-want +got):\n%s", diff)
			}
		})
	}
}

var sortStrings = cmpopts.SortSlices(func(a, b string) bool { return a < b })

func TestDetectCloudCache(t *testing.T) {
	for _, tc := range []struct {
		provider string
		ttl      time.Duration // the lifetime that applies
	}{
		{CloudAWS, DefaultCloudTTL},
		{"none", DefaultNoCloudTTL},
	} {
		t.Run(tc.provider, func(t *testing.T) {
			var hits atomic.Int32
			srv := fakeMetadata(t, tc.provider, &hits)
			now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
			cfg := CloudConfig{URL: srv.URL, Timeout: 5 * time.Second, CacheFile: filepath.Join(t.TempDir(), "cloud.json"), Now: func() time.Time { return now }}
			first, err := DetectCloud(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			asked := hits.Load()
			if asked == 0 {
				t.Fatal("the first detection asked nothing")
			}
			now = now.Add(tc.ttl - time.Minute)
			again, err := DetectCloud(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if hits.Load() != asked {
				t.Errorf("within the cache's lifetime the service was asked again (%d requests, want %d)", hits.Load(), asked)
			}
			if diff := cmp.Diff(first, again); diff != "" {
				t.Errorf("cached facts (-first +cached):\n%s", diff)
			}
			now = now.Add(2 * time.Minute)
			if _, err := DetectCloud(context.Background(), cfg); err != nil {
				t.Fatal(err)
			}
			if hits.Load() == asked {
				t.Errorf("after the cache's lifetime the service was not asked again")
			}
			// Another URL is another answer: the cache does not apply.
			other := fakeMetadata(t, CloudGCP, nil)
			cfg.URL = other.URL
			got, err := DetectCloud(context.Background(), cfg)
			if err != nil || got[KeyCloud] != CloudGCP {
				t.Errorf("DetectCloud(other url) = %v, %v; want gcp facts", got, err)
			}
		})
	}
}

// TestDetectCloudTimeout: a service that never answers costs the
// timeout, not more, and gives no facts.
func TestDetectCloudTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	start := time.Now()
	got, err := DetectCloud(context.Background(), CloudConfig{URL: srv.URL, Timeout: 100 * time.Millisecond})
	if err != nil || got != nil {
		t.Fatalf("DetectCloud(silent service) = %v, %v; want nil, nil", got, err)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("DetectCloud(silent service) took %v with a 100ms timeout", el)
	}
}

func TestDetectCloudBadURL(t *testing.T) {
	if _, err := DetectCloud(context.Background(), CloudConfig{URL: "169.254.169.254"}); err == nil {
		t.Error("DetectCloud(url without scheme) = nil error")
	}
}

func TestParseCloudRejects(t *testing.T) {
	for _, tc := range []struct {
		name  string
		parse func([]byte) (Facts, error)
		doc   string
	}{
		{"aws no id", parseAWS, `{"region":"eu-west-1"}`},
		{"aws spaces", parseAWS, `{"instanceId":"i-1 ; rm","region":"eu-west-1"}`},
		{"aws not json", parseAWS, `<html>`},
		{"gcp no zone", parseGCP, `{"id":1}`},
		{"azure newline", parseAzure, `{"vmId":"x","location":"west\neurope"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if f, err := tc.parse([]byte(tc.doc)); err == nil {
				t.Errorf("parse(%q) = %v, want an error", tc.doc, f)
			}
		})
	}
}

func FuzzParseCloud(f *testing.F) {
	f.Add([]byte(`{"instanceId":"i-0123","instanceType":"t3.micro","region":"eu-west-1","availabilityZone":"eu-west-1a"}`))
	f.Add([]byte(`{"id":4520031799277581759,"machineType":"projects/1/machineTypes/e2-medium","zone":"projects/1/zones/europe-west1-b"}`))
	f.Add([]byte(`{"vmId":"02aab8a4","vmSize":"Standard_D2s_v3","location":"westeurope","zone":"2"}`))
	f.Add([]byte(`{"zone":"-"}`))
	f.Fuzz(func(t *testing.T, doc []byte) {
		for _, parse := range []func([]byte) (Facts, error){parseAWS, parseGCP, parseAzure} {
			got, err := parse(doc)
			if err != nil {
				continue
			}
			for k, v := range got {
				if k != KeyCloud && !cloudValueRe.MatchString(v) {
					t.Fatalf("fact %s = %q passed", k, v)
				}
			}
		}
	})
}
