package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/drover-dev/drover/internal/blob"
	"github.com/drover-dev/drover/internal/pki"
	"github.com/drover-dev/drover/internal/server"
	"github.com/drover-dev/drover/internal/store"
	"github.com/drover-dev/drover/internal/store/sqlite"
)

// serverFlags are the flags of `drover server`.
type serverFlags struct {
	data, listen, tlsCert, tlsKey, caCert, db, logLevel string
	events                                              eventFlags      // events_flags.go
	node                                                nodeServerFlags // node.go
	deltaWait                                           time.Duration   // docs/transfer.md
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
			log, err := newLogger(e, f.logLevel)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			srv, closeFn, err := openServer(ctx, f, log)
			if err != nil {
				return err
			}
			defer closeFn()
			ln, err := net.Listen("tcp", f.listen)
			if err != nil {
				return fmt.Errorf("listen on %s: %w", f.listen, err)
			}
			log.Info("drover server listening", "addr", "https://"+ln.Addr().String(), "data", f.data)
			return srv.Serve(ctx, ln)
		},
	}
	fl := c.Flags()
	fl.StringVar(&f.data, "data", "", "data folder: database and blobs")
	fl.StringVar(&f.listen, "listen", "127.0.0.1:8443", "address to listen on")
	fl.StringVar(&f.tlsCert, "tls-cert", "", "server certificate file")
	fl.StringVar(&f.tlsKey, "tls-key", "", "server key file")
	fl.StringVar(&f.caCert, "ca-cert", "", "fleet CA certificate: every client must present a certificate it signed")
	fl.StringVar(&f.db, "db", "", "database URL: sqlite:PATH (default <data>/drover.db)")
	fl.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fl.DurationVar(&f.deltaWait, "delta-wait", 30*time.Second, "how long a download waits for upgrade deltas being made before files travel whole")
	f.events.register(c)
	f.node.register(c)
	return c
}

// openServer opens the store and blob store under f.data and returns a
// server over them, with the function that closes them.
func openServer(ctx context.Context, f serverFlags, log *slog.Logger) (*server.Server, func(), error) {
	if f.deltaWait <= 0 {
		return nil, nil, usagef("--delta-wait must be positive")
	}
	tlsCfg, err := pki.ServerTLSConfig(f.tlsCert, f.tlsKey, f.caCert)
	if err != nil {
		return nil, nil, err
	}
	if err := os.MkdirAll(f.data, 0o700); err != nil {
		return nil, nil, fmt.Errorf("data folder: %w", err)
	}
	st, err := openStore(ctx, f.db, f.data, log)
	if err != nil {
		return nil, nil, err
	}
	blobs, err := blob.NewFileStore(blob.FileConfig{Dir: filepath.Join(f.data, "blobs")})
	if err != nil {
		st.Close()
		return nil, nil, fmt.Errorf("blob store: %w", err)
	}
	evCfg, err := f.events.config(f.data)
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	srv, err := server.New(ctx, server.Config{TLS: tlsCfg, Logger: log, Events: evCfg,
		TerminationHook: f.node.hook, TerminationHookTimeout: f.node.hookTimeout,
		Transfer: server.TransferConfig{Dir: filepath.Join(f.data, "transfer"), DeltaWait: f.deltaWait}}, st, blobs)
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	return srv, func() { st.Close() }, nil
}

func openStore(ctx context.Context, url, data string, log *slog.Logger) (store.Store, error) {
	switch {
	case url == "":
		return sqlite.Open(ctx, filepath.Join(data, "drover.db"), log)
	case strings.HasPrefix(url, "sqlite:"):
		return sqlite.Open(ctx, strings.TrimPrefix(strings.TrimPrefix(url, "sqlite:"), "//"), log)
	case strings.HasPrefix(url, "postgres://"), strings.HasPrefix(url, "postgresql://"):
		return nil, usagef("--db %s: PostgreSQL is not supported yet; use the embedded SQLite store", redact(url))
	}
	return nil, usagef("--db %q: want sqlite:PATH", redact(url))
}

// redact hides a password in a database URL.
func redact(url string) string {
	if i := strings.Index(url, "@"); i > 0 {
		if j := strings.Index(url, "://"); j > 0 && j < i {
			return url[:j+3] + "***" + url[i:]
		}
	}
	return url
}

// newLogger returns a text logger on stderr at the given level.
func newLogger(e *env, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, usagef("--log-level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: l})), nil
}
