package main

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/drover-dev/drover/internal/server"
	"github.com/drover-dev/drover/internal/servermain"
	"github.com/drover-dev/drover/internal/store/storecopy"
)

// serverFlags are the flags of `drover server`.
type serverFlags struct {
	data, listen, tlsCert, tlsKey, caCert, db, blobs, logLevel string
	trustDir, crl, issuerCert, issuerKey                       string
	events                                                     eventFlags      // events_flags.go
	node                                                       nodeServerFlags // node.go
	quota                                                      quotaFlags      // quota_flags.go
	probeLabel                                                 string
	probers                                                    int
	deltaWait                                                  time.Duration // docs/transfer.md
}

func serverCmd(e *env) *cobra.Command {
	var f serverFlags
	c := &cobra.Command{
		Use:   "server --data DIR --listen ADDR --tls-cert F --tls-key F --ca-cert F [--db URL]",
		Short: "Run the drover server: package repository, desired state, events",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, req := range []struct{ name, v string }{
				{"--data", f.data}, {"--tls-cert", f.tlsCert}, {"--tls-key", f.tlsKey}, {"--ca-cert", f.caCert},
			} {
				if req.v == "" {
					return usagef("server: %s is required", req.name)
				}
			}
			if f.probeLabel == "" || f.probers < 1 {
				return usagef("server: --probe-label must not be empty and --probers must be at least 1")
			}
			log, err := newLogger(e, f.logLevel)
			if err != nil {
				return err
			}
			evCfg, err := f.events.config(f.data)
			if err != nil {
				return err
			}
			quota, err := f.quota.config()
			if err != nil {
				return err
			}
			if f.deltaWait <= 0 {
				return usagef("--delta-wait must be positive")
			}
			if (f.issuerCert == "") != (f.issuerKey == "") {
				return usagef("server: give both --issuer-cert and --issuer-key, or neither")
			}
			m := servermain.New(servermain.Config{
				Data: f.data, DB: f.db, Blobs: f.blobs, Listen: f.listen, TLSCert: f.tlsCert, TLSKey: f.tlsKey, CACert: f.caCert,
				Events: evCfg, Quota: quota, TerminationHook: f.node.hook, TerminationHookTimeout: f.node.hookTimeout, Logger: log,
				Network: server.NetworkConfig{Label: f.probeLabel, Probers: f.probers},
				CRL:     f.crl, IssuerCert: f.issuerCert, IssuerKey: f.issuerKey, TrustDir: f.trustDir,
			})
			if err := m.Run(cmd.Context()); err != nil {
				if errors.Is(err, servermain.ErrBadDB) {
					return usageError{err}
				}
				return err
			}
			defer m.Close()
			return m.Wait()
		},
	}
	fl := c.Flags()
	fl.StringVar(&f.data, "data", "", "data folder: database and blobs")
	fl.StringVar(&f.listen, "listen", "127.0.0.1:8443", "address to listen on")
	fl.StringVar(&f.tlsCert, "tls-cert", "", "server certificate file")
	fl.StringVar(&f.tlsKey, "tls-key", "", "server key file")
	fl.StringVar(&f.caCert, "ca-cert", "", "fleet CA certificate: every client must present a certificate it signed")
	fl.StringVar(&f.db, "db", "", "database URL: sqlite:PATH (default <data>/drover.db) or postgres://USER@HOST/DB, which replicas share")
	fl.StringVar(&f.blobs, "blobs", "", "blob folder (default <data>/blobs); replicas on one PostgreSQL share one")
	fl.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fl.StringVar(&f.probeLabel, "probe-label", "region", "devices that share this label's value probe each other's services' network checks")
	fl.IntVar(&f.probers, "probers", 3, "how many peers probe each device's network checks")
	fl.StringVar(&f.crl, "crl", "", "revocation list (pki revoke): refuse its certificates; read again when it changes")
	fl.StringVar(&f.issuerCert, "issuer-cert", "", "issuing certificate (pki issue --issuer): renew device certificates")
	fl.StringVar(&f.issuerKey, "issuer-key", "", "key of --issuer-cert")
	fl.StringVar(&f.trustDir, "trust-dir", "", "folder with snapshot.key, timestamp.key, root.json and targets.json: serve signed-build metadata")
	fl.DurationVar(&f.deltaWait, "delta-wait", 30*time.Second, "how long a download waits for upgrade deltas being made before files travel whole")
	f.events.register(c)
	f.node.register(c)
	f.quota.register(c)
	c.AddCommand(serverMigrateCmd(e))
	return c
}

// serverMigrateCmd is `drover server migrate`: the embedded store of a
// data folder copied into an empty PostgreSQL store.
func serverMigrateCmd(e *env) *cobra.Command {
	var from, to, logLevel string
	c := &cobra.Command{
		Use:   "migrate --from DATA_DIR --to postgres://USER@HOST/DB",
		Short: "Copy a stopped server's embedded store into an empty PostgreSQL store",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if from == "" || to == "" {
				return usagef("server migrate: --from and --to are required")
			}
			log, err := newLogger(e, logLevel)
			if err != nil {
				return err
			}
			r, err := servermain.Migrate(cmd.Context(), servermain.MigrateConfig{From: from, To: to, Logger: log})
			if errors.Is(err, servermain.ErrBadDB) {
				return usageError{err}
			}
			if err != nil {
				return fmt.Errorf("server migrate: %w", err)
			}
			for _, k := range storecopy.Kinds() {
				if r.Source.N[k] == r.Target.N[k] {
					fmt.Fprintf(e.stdout, "%s: %d\n", k, r.Target.N[k])
				} else {
					fmt.Fprintf(e.stdout, "%s: %d in %s, %d in the copy\n", k, r.Source.N[k], from, r.Target.N[k])
				}
			}
			fmt.Fprintf(e.stdout, "event ids: new ones above %d\n", r.Target.LastEventID)
			fmt.Fprintf(e.stdout, "blobs: not copied: give every server %s as --blobs (share that folder, or copy it as it is)\n",
				filepath.Join(from, "blobs"))
			if m := r.Mismatches(); len(m) > 0 {
				return fmt.Errorf("server migrate: the copy differs from the source in %s", strings.Join(m, ", "))
			}
			return nil
		},
	}
	c.Flags().StringVar(&from, "from", "", "data folder of the embedded server (its drover.db); stop that server first")
	c.Flags().StringVar(&to, "to", "", "URL of an empty PostgreSQL store")
	c.Flags().StringVar(&logLevel, "log-level", "warn", "debug, info, warn or error")
	return c
}

// redact hides a password in a URL.
func redact(url string) string { return servermain.Redact(url) }

// newLogger returns a text logger on stderr at the given level.
func newLogger(e *env, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, usagef("--log-level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: l})), nil
}
