// Package servermain is the drover server as a process: from a Config
// (folders, address, certificates) it opens the store and the blob store,
// builds the server, listens and serves, and closes it all again. Both
// `drover server` and `drover dev` run it, so they cannot drift apart;
// tests start it on 127.0.0.1:0 (the shape of WTF Dial's Main).
package servermain

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/drover-dev/drover/internal/blob"
	"github.com/drover-dev/drover/internal/pki"
	"github.com/drover-dev/drover/internal/privdir"
	"github.com/drover-dev/drover/internal/server"
	"github.com/drover-dev/drover/internal/store"
	"github.com/drover-dev/drover/internal/store/postgres"
	"github.com/drover-dev/drover/internal/store/sqlite"
	"github.com/drover-dev/drover/internal/trustserver"
)

// Config is what a server process needs.
type Config struct {
	// Data is the data folder: the database (by default), the blobs (by
	// default) and the transfer cache. It is made, private, if missing.
	Data string
	// DB is the database URL: "" (SQLite in Data), sqlite:PATH, or
	// postgres://... (postgresql://...), which several replicas share.
	DB string
	// Blobs is the blob folder; "" is Data/blobs. Replicas on one
	// PostgreSQL share one (a shared file system).
	Blobs string
	// Listen is the address to listen on; Listener, when set, is used
	// instead (drover dev picks its port itself).
	Listen   string
	Listener net.Listener
	// TLSCert and TLSKey are the server's certificate; CACert the fleet
	// CA every client certificate must be signed by.
	TLSCert, TLSKey, CACert string

	Events server.EventsConfig
	// Quota bounds what each device certificate may cost the server.
	Quota server.QuotaConfig
	// Network configures services' network checks.
	Network server.NetworkConfig
	// CRL is the revocation list (pki revoke) whose certificates are
	// refused; "" = none. IssuerCert and IssuerKey, both or neither, let
	// devices renew their certificates. TrustDir holds the online TUF
	// keys and metadata of signed builds; "" = none.
	CRL, IssuerCert, IssuerKey, TrustDir string
	// DeltaWait bounds how long a download waits for upgrade deltas
	// being made (0 = the server's default); compressed forms, packs and
	// deltas are cached in Data/transfer.
	DeltaWait              time.Duration
	TerminationHook        string
	TerminationHookTimeout time.Duration
	Logger                 *slog.Logger
}

// ErrBadDB is a database URL that is not supported (errors.Is); the
// caller shows it as bad usage.
var ErrBadDB = errors.New("unsupported database URL")

// badDB says which URL is not supported and why; it is ErrBadDB.
type badDB struct{ msg string }

func (e badDB) Error() string        { return e.msg }
func (e badDB) Is(target error) bool { return target == ErrBadDB }

// Main is one server process. Create it with New, start it with Run and
// stop it with Close.
type Main struct {
	cfg    Config
	log    *slog.Logger
	st     store.Store
	srv    *server.Server
	ln     net.Listener
	cancel context.CancelFunc
	done   chan error
}

// New returns a Main for cfg; nothing is opened before Run.
func New(cfg Config) *Main {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Main{cfg: cfg, log: log}
}

// Run opens the stores, builds the server and starts serving; it returns
// once the server listens (or with why it cannot). Serving goes on until
// ctx is done or Close is called; Wait tells how it ended.
func (m *Main) Run(ctx context.Context) (err error) {
	cfg := m.cfg
	if err := checkDB(cfg.DB); err != nil {
		return err
	}
	tlsCfg, err := pki.ServerTLSConfig(cfg.TLSCert, cfg.TLSKey, cfg.CACert)
	if err != nil {
		return err
	}
	if err := privdir.Make(cfg.Data); err != nil {
		return fmt.Errorf("data folder: %w", err)
	}
	st, err := openStore(ctx, cfg.DB, cfg.Data, m.log)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			st.Close()
		}
	}()
	blobDir := cfg.Blobs
	if blobDir == "" {
		blobDir = filepath.Join(cfg.Data, "blobs")
	}
	blobs, err := blob.NewFileStore(blob.FileConfig{Dir: blobDir})
	if err != nil {
		return fmt.Errorf("blob store: %w", err)
	}
	var crl *pki.Revocations
	if cfg.CRL != "" {
		if crl, err = pki.LoadRevocations(cfg.CRL, cfg.CACert, m.log); err != nil {
			return fmt.Errorf("--crl: %w", err)
		}
	}
	var issuer *pki.Issuer
	if cfg.IssuerCert != "" {
		if issuer, err = pki.LoadIssuer(cfg.IssuerCert, cfg.IssuerKey, cfg.CACert); err != nil {
			return err
		}
		pki.TrustIssuer(tlsCfg, issuer)
	}
	var repo *trustserver.Repository
	if cfg.TrustDir != "" {
		if repo, err = trustserver.New(ctx, trustserver.Config{Dir: cfg.TrustDir, Logger: m.log}, st); err != nil {
			return fmt.Errorf("--trust-dir %s: %w", cfg.TrustDir, err)
		}
	}
	srv, err := server.New(ctx, server.Config{TLS: tlsCfg, Logger: m.log, Events: cfg.Events, Quota: cfg.Quota, Network: cfg.Network,
		Trust: repo, CRL: crl, Issuer: issuer,
		Transfer:        server.TransferConfig{Dir: filepath.Join(cfg.Data, "transfer"), DeltaWait: cfg.DeltaWait},
		TerminationHook: cfg.TerminationHook, TerminationHookTimeout: cfg.TerminationHookTimeout}, st, blobs)
	if err != nil {
		return err
	}
	ln := cfg.Listener
	if ln == nil {
		if ln, err = net.Listen("tcp", cfg.Listen); err != nil {
			return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	m.st, m.srv, m.ln, m.cancel, m.done = st, srv, ln, cancel, make(chan error, 1)
	go func() { m.done <- srv.Serve(ctx, ln) }()
	m.log.Info("drover server listening", "addr", m.Addr(), "data", cfg.Data)
	return nil
}

// Addr is the server's URL, https://HOST:PORT, once Run has returned.
func (m *Main) Addr() string {
	if m.ln == nil {
		return ""
	}
	return "https://" + m.ln.Addr().String()
}

// Wait returns when serving ends: nil after ctx was done or Close, else
// why the server stopped.
func (m *Main) Wait() error {
	if m.done == nil {
		return nil
	}
	err := <-m.done
	m.done <- err // for Close and later Waits
	return err
}

// Close stops serving, waits for the server to finish and closes the
// store. It is safe to call more than once, and after a failed Run.
func (m *Main) Close() error {
	if m.cancel == nil {
		return nil
	}
	m.cancel()
	err := m.Wait()
	m.cancel = nil
	if cerr := m.st.Close(); err == nil {
		err = cerr
	}
	return err
}

func openStore(ctx context.Context, url, data string, log *slog.Logger) (store.Store, error) {
	if isPostgres(url) {
		st, err := postgres.Open(ctx, postgres.Config{URL: url, Logger: log})
		if err != nil {
			return nil, fmt.Errorf("--db %s: %w", Redact(url), err)
		}
		return st, nil
	}
	path, err := dbPath(url, data)
	if err != nil {
		return nil, err
	}
	return sqlite.Open(ctx, path, log)
}

// checkDB refuses a database URL of no supported kind, before anything
// is opened.
func checkDB(url string) error {
	if isPostgres(url) {
		return nil
	}
	_, err := dbPath(url, "")
	return err
}

func isPostgres(url string) bool {
	return strings.HasPrefix(url, "postgres://") || strings.HasPrefix(url, "postgresql://")
}

// dbPath is the SQLite file of a database URL.
func dbPath(url, data string) (string, error) {
	switch {
	case url == "":
		return filepath.Join(data, "drover.db"), nil
	case strings.HasPrefix(url, "sqlite:"):
		return strings.TrimPrefix(strings.TrimPrefix(url, "sqlite:"), "//"), nil
	}
	return "", badDB{fmt.Sprintf("--db %q: want sqlite:PATH or postgres://USER@HOST/DB", Redact(url))}
}

// Redact hides a password in a database or broker URL.
func Redact(url string) string {
	if i := strings.Index(url, "@"); i > 0 {
		if j := strings.Index(url, "://"); j > 0 && j < i {
			return url[:j+3] + "***" + url[i:]
		}
	}
	return url
}
