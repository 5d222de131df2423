package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/drover-dev/drover/internal/agent"
	"github.com/drover-dev/drover/internal/agentfile"
	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/client"
	"github.com/drover-dev/drover/internal/facts"
	"github.com/drover-dev/drover/internal/pki"
	"github.com/drover-dev/drover/internal/service"
	"github.com/drover-dev/drover/internal/trust"
)

// agentFlags are the flags of `drover agent`.
type agentFlags struct {
	conn                                  connFlags
	home, softwareRoot, runtimeRoot, root string
	tags, labels, logLevel                string
	metadataURL                           string
	healthInterval, reportInterval        time.Duration
	hookTimeout, initTimeout              time.Duration
	recoverOnly                           bool
	trustRoot                             string
	blobMirrors                           []string
	maxDownloadRate                       string
	node                                  nodeAgentFlags // node.go
}

func agentCmd(e *env) *cobra.Command {
	var f agentFlags
	c := &cobra.Command{
		Use:   "agent --home DIR --addr URL --ca-cert F --client-cert F --client-key F",
		Short: "Run the node agent: report, converge, install",
		Long: "Run the node agent: report, converge, install.\n\n" +
			"A flag not given comes from its environment variable (DROVER_ADDR, DROVER_CACERT, DROVER_CLIENT_CERT,\n" +
			"DROVER_CLIENT_KEY), else from <home>/config/agent.yaml (the flag's name with '_': addr, ca_cert,\n" +
			"tags: [a, b], labels: {k: v}, health_interval: 30s ...; relative paths are relative to the home),\n" +
			"else from its default.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := agentConfig(e, cmd.Flags(), &f)
			if err != nil {
				return err
			}
			if f.recoverOnly {
				a, err := agent.New(cfg, nil)
				if err != nil {
					return err
				}
				return a.Recover(cmd.Context())
			}
			cl, renewer, err := agentClient(&f, cfg)
			if err != nil {
				return err
			}
			defer cl.Close()
			// The certificate renews itself through the server before it
			// expires, while the agent runs.
			ctx, stop := context.WithCancel(cmd.Context())
			renewed := make(chan struct{})
			go func() { renewer.Run(ctx); close(renewed) }()
			defer func() { stop(); <-renewed }()
			if f.trustRoot != "" {
				if cfg.Trust, err = agentTrust(cfg.Home, f.trustRoot, cl); err != nil {
					return err
				}
			}
			a, err := agent.New(cfg, cl)
			if err != nil {
				return err
			}
			return a.Run(ctx)
		},
	}
	f.register(c)
	c.AddCommand(agentInstallCmd(e, c), agentUninstallCmd(e))
	return c
}

// register adds the flags of `drover agent` to c. Each but --home and
// --recover-only also has a key in <home>/config/agent.yaml (agentconfig.go).
func (f *agentFlags) register(c *cobra.Command) {
	f.conn.register(c)
	fl := c.Flags()
	fl.StringVar(&f.home, "home", "", "agent home folder (env DROVER_HOME, default /opt/drover)")
	fl.StringVar(&f.softwareRoot, "software-root", "", "where prefix-mode packages install (default <home>/software)")
	fl.StringVar(&f.runtimeRoot, "runtime-root", "", "where service runtime folders go (default <home>/runtime)")
	fl.StringVar(&f.root, "root", "/", "where root-mode packages install")
	fl.StringVar(&f.tags, "tags", "", "extra device tags, comma separated")
	fl.StringVar(&f.labels, "labels", "", "device labels: k=v,...")
	fl.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fl.DurationVar(&f.healthInterval, "health-interval", 60*time.Second, "how often health checks run")
	fl.BoolVar(&f.recoverOnly, "recover-only", false, "finish or undo an interrupted install from the journal, then exit without contacting the server")
	fl.DurationVar(&f.reportInterval, "report-interval", 30*time.Second, "how often the agent reports when nothing happens")
	fl.DurationVar(&f.hookTimeout, "hook-timeout", 60*time.Second, "time limit of each hook in <home>/config/hooks/<phase>-post.d/")
	fl.StringVar(&f.metadataURL, "metadata-url", "", "cloud metadata service whose instance id, type, region and zone become facts and tags (env DROVER_METADATA_URL, default "+facts.DefaultMetadataURL+"; none: ask none)")
	fl.StringVar(&f.trustRoot, "trust-root", "", "root.json of drover trust: install only builds signed into the server's targets metadata")
	fl.DurationVar(&f.initTimeout, "init-timeout", 10*time.Minute, "time limit of each init program of the device's groups")
	fl.StringSliceVar(&f.blobMirrors, "blob-mirror", nil, "blob server tried before the server, serving URL/<sha256> (repeatable, in order; every blob is verified)")
	fl.StringVar(&f.maxDownloadRate, "max-download-rate", "", "bound of blob download bytes per second, like 10MB or 512KiB (default no bound)")
	f.node.register(c)
}

// agentConfig turns the flags, the environment and agent.yaml into the
// agent's Config.
func agentConfig(e *env, fl *pflag.FlagSet, f *agentFlags) (agent.Config, error) {
	home := orEnv(f.home, "DROVER_HOME", "/opt/drover")
	if err := applyAgentFile(fl, home); err != nil {
		return agent.Config{}, err
	}
	labels, err := parseLabels(f.labels)
	if err != nil {
		return agent.Config{}, err
	}
	if f.reportInterval <= 0 {
		return agent.Config{}, usagef("--report-interval must be positive")
	}
	if f.hookTimeout <= 0 {
		return agent.Config{}, usagef("--hook-timeout must be positive")
	}
	var rate int64
	if f.maxDownloadRate != "" {
		if rate, err = api.ParseSize(f.maxDownloadRate); err != nil || rate == 0 {
			return agent.Config{}, usagef("--max-download-rate %q: want bytes per second like 10MB, 512KiB or 100000", f.maxDownloadRate)
		}
	}
	for _, m := range f.blobMirrors {
		if u, err := url.Parse(m); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return agent.Config{}, usagef("--blob-mirror %q: want http://HOST/PATH or https://HOST/PATH", m)
		}
	}
	if f.initTimeout <= 0 {
		return agent.Config{}, usagef("--init-timeout must be positive")
	}
	metadataURL, err := metadataURL(f.metadataURL)
	if err != nil {
		return agent.Config{}, err
	}
	certFile := orEnv(f.conn.clientCert, "DROVER_CLIENT_CERT", "")
	if certFile == "" {
		return agent.Config{}, usagef("agent: --client-cert (or client_cert in %s) is required: the device id is its certificate's name", agentfile.Path(home))
	}
	id, err := certName(certFile)
	if err != nil {
		return agent.Config{}, err
	}
	log, err := newLogger(e, f.logLevel)
	if err != nil {
		return agent.Config{}, err
	}
	nodeCfg, err := f.node.config(f.healthInterval, orEnv(f.conn.addr, "DROVER_ADDR", defaultAddr))
	if err != nil {
		return agent.Config{}, err
	}
	return agent.Config{Node: nodeCfg, MetadataURL: metadataURL,
		Home: home, Device: id, SoftwareRoot: f.softwareRoot, RuntimeRoot: f.runtimeRoot, Root: f.root,
		Tags: splitList(f.tags), Labels: labels, ReportInterval: f.reportInterval, HookTimeout: f.hookTimeout, InitTimeout: f.initTimeout, Logger: log,
		Mirrors: f.blobMirrors, MaxDownloadRate: rate,
	}, nil
}

// metadataURL resolves --metadata-url: the flag, else DROVER_METADATA_URL,
// else the link-local default; "none" turns cloud facts off ("").
func metadataURL(v string) (string, error) {
	v = orEnv(v, "DROVER_METADATA_URL", facts.DefaultMetadataURL)
	if v == "none" {
		return "", nil
	}
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return "", usagef("--metadata-url %q: want http://HOST[:PORT] or none", v)
	}
	return v, nil
}

// agentClient is the agent's client: its certificate is read again for
// each new connection, as the renewer replaces it. A renewal cut short
// by a crash is finished first.
func agentClient(f *agentFlags, cfg agent.Config) (*client.Client, *pki.Renewer, error) {
	ca := orEnv(f.conn.caCert, "DROVER_CACERT", "")
	cert := orEnv(f.conn.clientCert, "DROVER_CLIENT_CERT", "")
	key := orEnv(f.conn.clientKey, "DROVER_CLIENT_KEY", "")
	if ca == "" || cert == "" || key == "" {
		return nil, nil, usagef("the server needs mTLS: give --ca-cert, --client-cert and --client-key (or DROVER_CACERT, DROVER_CLIENT_CERT, DROVER_CLIENT_KEY)")
	}
	var cl *client.Client
	renewer := pki.NewRenewer(pki.RenewerConfig{CertFile: cert, KeyFile: key,
		PendingFile: filepath.Join(cfg.Home, "system", "renew.key"), Logger: cfg.Logger,
		Request: func(ctx context.Context, csr []byte) ([]byte, error) {
			return cl.RenewCertificate(ctx, cfg.Device, csr)
		},
		Renewed: func() { cl.Close() }})
	if err := renewer.Recover(); err != nil {
		return nil, nil, err
	}
	tlsCfg, err := pki.ReloadingClientTLSConfig(cert, key, ca)
	if err != nil {
		return nil, nil, err
	}
	cl, err = client.New(client.Config{Addr: orEnv(f.conn.addr, "DROVER_ADDR", defaultAddr), TLS: tlsCfg})
	if err != nil {
		return nil, nil, err
	}
	return cl, renewer, nil
}

// agentTrust is the verifier of --trust-root; it keeps the trusted
// metadata in <home>/system/trust.
func agentTrust(home, rootFile string, fetch trust.Fetcher) (*trust.Verifier, error) {
	data, err := os.ReadFile(rootFile)
	if err != nil {
		return nil, fmt.Errorf("--trust-root: %w", err)
	}
	v, err := trust.NewVerifier(trust.VerifierConfig{Dir: filepath.Join(home, "system", "trust"), Root: data}, fetch)
	if err != nil {
		return nil, fmt.Errorf("--trust-root %s: %w", rootFile, err)
	}
	return v, nil
}

// certName returns the CN of a PEM certificate file: a device's id.
func certName(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read client certificate: %w", err)
	}
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "CERTIFICATE" {
		return "", fmt.Errorf("client certificate %s: not a PEM certificate", path)
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return "", fmt.Errorf("client certificate %s: %w", path, err)
	}
	if cert.Subject.CommonName == "" {
		return "", fmt.Errorf("client certificate %s has no common name", path)
	}
	// An admin or server certificate would be refused by the server at
	// every call: say so now instead of retrying forever.
	role, err := pki.RoleOf(cert)
	if err != nil {
		return "", fmt.Errorf("client certificate %s: %w", path, err)
	}
	if role != pki.RoleDevice {
		return "", fmt.Errorf("client certificate %s is a certificate of role %s (%q): the agent needs a device certificate (drover pki issue --device ID)", path, role, cert.Subject.CommonName)
	}
	return cert.Subject.CommonName, nil
}

// parseLabels parses "k=v,k2=v2".
func parseLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, kv := range splitList(s) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, usagef("--labels %q: want key=value pairs separated by commas", s)
		}
		out[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	if err := service.CheckLabels(out); err != nil {
		return nil, usagef("--labels: %v", err)
	}
	return out, nil
}
