package facts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"
)

// Keys of the cloud facts DetectCloud gives.
const (
	KeyCloud             = "cloud"               // aws, gcp or azure
	KeyCloudInstanceID   = "cloud_instance_id"   // i-0abc..., 4520..., a vmId
	KeyCloudInstanceType = "cloud_instance_type" // t3.micro, e2-medium, Standard_D2s_v3
	KeyCloudRegion       = "cloud_region"        // eu-west-1, europe-west1, westeurope
	KeyCloudZone         = "cloud_zone"          // eu-west-1a, europe-west1-b, westeurope-1
)

// Values of KeyCloud.
const (
	CloudAWS   = "aws"
	CloudGCP   = "gcp"
	CloudAzure = "azure"
)

// DefaultMetadataURL is the link-local address where EC2, GCE and Azure
// answer metadata requests.
const DefaultMetadataURL = "http://169.254.169.254"

// Defaults of CloudConfig.
const (
	DefaultCloudTimeout = 300 * time.Millisecond
	DefaultCloudTTL     = time.Hour
	DefaultNoCloudTTL   = 24 * time.Hour
)

// maxMetadata bounds one metadata answer; real ones are a few KiB.
const maxMetadata = 64 << 10

// CloudConfig says where and how long DetectCloud asks.
type CloudConfig struct {
	// URL is the metadata service's base URL (scheme and host, maybe a
	// port); "" is DefaultMetadataURL.
	URL string
	// Timeout bounds the whole detection, every provider asked at once;
	// default DefaultCloudTimeout.
	Timeout time.Duration
	// CacheFile, if set, keeps the answer (or that nothing answered), so
	// that later starts do not ask again within TTL (found) or NoneTTL
	// (nothing answered).
	CacheFile string
	TTL       time.Duration
	NoneTTL   time.Duration
	Now       func() time.Time
	// Client, if set, makes the requests (tests). The default never uses
	// a proxy and follows no redirect.
	Client *http.Client
}

// cloudCache is CacheFile's content.
type cloudCache struct {
	URL     string    `json:"url"`
	Checked time.Time `json:"checked"`
	Facts   Facts     `json:"facts,omitempty"`
}

// DetectCloud asks the cloud metadata service at cfg.URL, in the ways of
// EC2 (IMDSv2: a session token, then the instance identity document), GCE
// (Metadata-Flavor: Google) and Azure (Metadata: true, api-version), all at
// once and within cfg.Timeout, and returns the instance's cloud facts
// (the Key Cloud constants). Nothing answering is no error: it returns
// nil Facts. Where two providers answer, the first of aws, gcp, azure wins.
func DetectCloud(ctx context.Context, cfg CloudConfig) (Facts, error) {
	if cfg.URL == "" {
		cfg.URL = DefaultMetadataURL
	}
	base := strings.TrimRight(cfg.URL, "/")
	if !strings.HasPrefix(base, "http://") && !strings.HasPrefix(base, "https://") {
		return nil, fmt.Errorf("metadata url %q: want http://HOST[:PORT]", cfg.URL)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultCloudTimeout
	}
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultCloudTTL
	}
	if cfg.NoneTTL <= 0 {
		cfg.NoneTTL = DefaultNoCloudTTL
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if c, ok := readCloudCache(cfg, base); ok {
		return c.Facts, nil
	}
	client := cfg.Client
	if client == nil {
		client = &http.Client{
			Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return errors.New("metadata service redirected")
			},
		}
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	probes := []func(context.Context, *http.Client, string) (Facts, error){probeAWS, probeGCP, probeAzure}
	found := make([]Facts, len(probes))
	var wg sync.WaitGroup
	for i, p := range probes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if f, err := p(ctx, client, base); err == nil {
				found[i] = f
			}
		}()
	}
	wg.Wait()
	var out Facts
	for _, f := range found {
		if f != nil {
			out = f
			break
		}
	}
	if cfg.CacheFile != "" {
		if err := writeCloudCache(cfg.CacheFile, cloudCache{URL: base, Checked: cfg.Now().UTC(), Facts: out}); err != nil {
			return out, fmt.Errorf("cloud facts cache: %w", err)
		}
	}
	return out, nil
}

func readCloudCache(cfg CloudConfig, base string) (cloudCache, bool) {
	var c cloudCache
	if cfg.CacheFile == "" {
		return c, false
	}
	data, err := os.ReadFile(cfg.CacheFile)
	if err != nil || json.Unmarshal(data, &c) != nil || c.URL != base {
		return c, false
	}
	ttl := cfg.NoneTTL
	if c.Facts != nil {
		ttl = cfg.TTL
	}
	age := cfg.Now().Sub(c.Checked)
	return c, age >= 0 && age < ttl
}

// writeCloudCache replaces the cache file by rename; a lost or torn one
// is only a cache miss.
func writeCloudCache(path string, c cloudCache) error {
	data, err := json.Marshal(c)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(data)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}

// get does one request and returns its body (at most maxMetadata bytes)
// when the answer is 200.
func get(ctx context.Context, client *http.Client, method, url string, header map[string]string) (*http.Response, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return nil, nil, err
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxMetadata+1))
	if err != nil {
		return nil, nil, err
	}
	if len(body) > maxMetadata {
		return nil, nil, fmt.Errorf("%s: answer larger than %d bytes", url, maxMetadata)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	return resp, body, nil
}

// probeAWS is EC2's IMDSv2: PUT a token request, then read the instance
// identity document with the token.
func probeAWS(ctx context.Context, client *http.Client, base string) (Facts, error) {
	_, token, err := get(ctx, client, http.MethodPut, base+"/latest/api/token", map[string]string{"X-aws-ec2-metadata-token-ttl-seconds": "60"})
	if err != nil {
		return nil, err
	}
	_, doc, err := get(ctx, client, http.MethodGet, base+"/latest/dynamic/instance-identity/document", map[string]string{"X-aws-ec2-metadata-token": strings.TrimSpace(string(token))})
	if err != nil {
		return nil, err
	}
	return parseAWS(doc)
}

// probeGCP reads GCE's instance folder; the answer must say it is
// Google's (Metadata-Flavor: Google).
func probeGCP(ctx context.Context, client *http.Client, base string) (Facts, error) {
	resp, doc, err := get(ctx, client, http.MethodGet, base+"/computeMetadata/v1/instance/?recursive=true", map[string]string{"Metadata-Flavor": "Google"})
	if err != nil {
		return nil, err
	}
	if resp.Header.Get("Metadata-Flavor") != "Google" {
		return nil, errors.New("gce: answer without Metadata-Flavor: Google")
	}
	return parseGCP(doc)
}

// azureAPIVersion is the Azure Instance Metadata Service version asked.
const azureAPIVersion = "2021-02-01"

// probeAzure reads Azure's compute metadata.
func probeAzure(ctx context.Context, client *http.Client, base string) (Facts, error) {
	_, doc, err := get(ctx, client, http.MethodGet, base+"/metadata/instance/compute?api-version="+azureAPIVersion+"&format=json", map[string]string{"Metadata": "true"})
	if err != nil {
		return nil, err
	}
	return parseAzure(doc)
}

// cloudValueRe is what a cloud fact's value may be: no spaces, no
// control characters, bounded.
var cloudValueRe = regexp.MustCompile(`^[A-Za-z0-9._:+-]{1,128}$`)

// cloudFacts checks and assembles the facts of one provider: an instance
// id and a region are required; a value of the wrong shape is an error.
func cloudFacts(provider, id, typ, region, zone string) (Facts, error) {
	if id == "" || region == "" {
		return nil, fmt.Errorf("%s: no instance id or region", provider)
	}
	f := Facts{KeyCloud: provider}
	for _, kv := range []struct{ k, v string }{
		{KeyCloudInstanceID, id}, {KeyCloudInstanceType, typ}, {KeyCloudRegion, region}, {KeyCloudZone, zone},
	} {
		if kv.v == "" {
			continue
		}
		if !cloudValueRe.MatchString(kv.v) {
			return nil, fmt.Errorf("%s: %s %q: unexpected characters", provider, kv.k, kv.v)
		}
		f[kv.k] = kv.v
	}
	return f, nil
}

// parseAWS reads EC2's instance identity document.
func parseAWS(doc []byte) (Facts, error) {
	var d struct {
		InstanceID       string `json:"instanceId"`
		InstanceType     string `json:"instanceType"`
		Region           string `json:"region"`
		AvailabilityZone string `json:"availabilityZone"`
	}
	if err := json.Unmarshal(doc, &d); err != nil {
		return nil, fmt.Errorf("aws: %w", err)
	}
	return cloudFacts(CloudAWS, d.InstanceID, d.InstanceType, d.Region, d.AvailabilityZone)
}

// parseGCP reads GCE's instance folder: machineType and zone are paths
// (projects/P/zones/europe-west1-b); the region is the zone without its
// last part.
func parseGCP(doc []byte) (Facts, error) {
	var d struct {
		ID          json.Number `json:"id"`
		MachineType string      `json:"machineType"`
		Zone        string      `json:"zone"`
	}
	if err := json.Unmarshal(doc, &d); err != nil {
		return nil, fmt.Errorf("gcp: %w", err)
	}
	last := func(p string) string { return p[strings.LastIndexByte(p, '/')+1:] }
	zone := last(d.Zone)
	region := ""
	if i := strings.LastIndexByte(zone, '-'); i > 0 {
		region = zone[:i]
	}
	return cloudFacts(CloudGCP, d.ID.String(), last(d.MachineType), region, zone)
}

// parseAzure reads Azure's compute metadata. Its zone is a number within
// the location; the fact is LOCATION-N so that it names one place.
func parseAzure(doc []byte) (Facts, error) {
	var d struct {
		VMID     string `json:"vmId"`
		VMSize   string `json:"vmSize"`
		Location string `json:"location"`
		Zone     string `json:"zone"`
	}
	if err := json.Unmarshal(doc, &d); err != nil {
		return nil, fmt.Errorf("azure: %w", err)
	}
	zone := ""
	if d.Zone != "" && d.Location != "" {
		zone = d.Location + "-" + d.Zone
	}
	return cloudFacts(CloudAzure, d.VMID, d.VMSize, d.Location, zone)
}

// cloudTags are the tags of cloud facts: cloud-PROVIDER, region-REGION,
// zone-ZONE, instance-type-TYPE and instance-ID, lowercased, so a desired
// state can ask for a build by any of them.
func cloudTags(f Facts) []string {
	var tags []string
	for _, kv := range []struct{ prefix, key string }{
		{"cloud-", KeyCloud}, {"region-", KeyCloudRegion}, {"zone-", KeyCloudZone}, {"instance-type-", KeyCloudInstanceType},
		{"instance-", KeyCloudInstanceID},
	} {
		if v := f[kv.key]; v != "" && f[KeyCloud] != "" {
			tags = append(tags, kv.prefix+strings.ToLower(v))
		}
	}
	return tags
}
