// Package server is drover's server: the package repository (manifests and
// blobs), devices and their desired state, and events, behind the /v1 wire
// API over HTTPS with mutual TLS.
//
// The server resolves desired state (constraint to version, tag match to
// build, dependency closure) and tells each waiting agent at once when its
// resolved state changes. It never guesses a device's disk: planning is the
// agent's job.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/blob"
	"github.com/drover-dev/drover/internal/pki"
	"github.com/drover-dev/drover/internal/store"
	"github.com/drover-dev/drover/internal/trustserver"
	"github.com/drover-dev/drover/internal/ui"
)

// Config holds the server's settings.
type Config struct {
	// TLS must require and verify client certificates of the fleet's CA.
	TLS *tls.Config
	// PollTimeout bounds a long-poll; 0 = 60s.
	PollTimeout time.Duration
	// MaxManifest bounds a pushed manifest; 0 = 16 MiB.
	MaxManifest int64
	// MaxBlob bounds an uploaded blob; 0 = 4 GiB.
	MaxBlob int64
	// Events configures retention, AMQP publishing, hooks and live
	// followers (events.go).
	Events EventsConfig
	// TerminationHook is run (with the device as JSON on stdin) when a
	// device's health checks ask for termination and no keepalive holds
	// it (node.go); TerminationHookTimeout bounds it, 0 = 5 minutes.
	TerminationHook        string
	TerminationHookTimeout time.Duration
	// Quota bounds each device's events and reports (quota.go).
	Quota QuotaConfig
	// Network configures services' network checks (network.go).
	Network NetworkConfig
	// Trust, when set (server --trust-dir), serves TUF metadata under
	// /v1/trust/ and is kept fresh while the server runs (trust.go).
	Trust *trustserver.Repository
	// CRL, when set (server --crl), refuses revoked certificates at their
	// next request; it is read again when its file changes (certs.go).
	CRL *pki.Revocations
	// Issuer, when set (server --issuer-cert), renews device certificates.
	Issuer *pki.Issuer
	// Transfer configures compression, packs and deltas (transfer.go).
	Transfer TransferConfig

	Logger *slog.Logger
	Now    func() time.Time
}

// Server serves the wire API. Create it with New.
type Server struct {
	cfg   Config
	log   *slog.Logger
	now   func() time.Time
	store store.Store
	blobs blob.Store
	hub   *hub
	res   *resolver
	ev    *eventsState // events.go
	quota *quotas      // quota.go
	node  nodeServer   // node.go
	net   netState     // network.go
	ro    rollouts     // rollouts.go
	sizes blobSizes    // plan.go
	page  *ui.UI       // the fleet page (ui.go)
	// devices lists every device for the fleet page (devindex.go).
	devices devIndex

	// docMu serializes document writes: each is checked against the
	// documents it replaces.
	docMu sync.Mutex
	xfer  *xfer     // transfer.go; nil when off
	rep   *replicas // replicas.go
	// parking holds long-polls that wait with no goroutine (park.go).
	parking parking
	// tlsCounts are the TLS handshake metrics: handshakes done
	// (connections opened by agents and operators) and waiting.
	tlsCounts handshakeCounts
	// evGroups stores concurrent device event posts together (batch.go).
	evGroups eventGroups

	mu   sync.Mutex
	http *http.Server
}

// New returns a server over st and blobs.
func New(ctx context.Context, cfg Config, st store.Store, blobs blob.Store) (*Server, error) {
	if cfg.PollTimeout == 0 {
		cfg.PollTimeout = 60 * time.Second
	}
	if cfg.MaxManifest == 0 {
		cfg.MaxManifest = 16 << 20
	}
	if cfg.MaxBlob == 0 {
		cfg.MaxBlob = 4 << 30
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if err := cfg.Quota.Validate(); err != nil {
		return nil, fmt.Errorf("server: quota: %w", err)
	}
	s := &Server{cfg: cfg, log: cfg.Logger, now: cfg.Now, store: st, blobs: blobs, hub: newHub()}
	s.quota = newQuotas(cfg.Quota, cfg.Now)
	s.rep = newReplicas(st)
	s.res = newResolver(st, s.stagedDocuments)
	var err error
	if s.page, err = ui.New(ui.Config{Logger: s.log.With("component", "ui"), Now: s.now, Match: pageMatch, Sessions: st}, pageBackend{s}); err != nil {
		return nil, err
	}
	if s.ev, err = s.newEvents(ctx); err != nil {
		return nil, err
	}
	if err := s.res.loadCandidates(ctx); err != nil {
		return nil, err
	}
	if err := s.res.loadDocuments(ctx); err != nil {
		return nil, err
	}
	if err := s.initRollouts(ctx); err != nil {
		return nil, err
	}
	if s.xfer, err = newXfer(cfg.Transfer, blobs, s.log); err != nil {
		return nil, err
	}
	return s, nil
}

// Serve answers on ln until ctx is done, then stops gracefully: it stops
// accepting, lets requests in flight finish (long-polls are told to end at
// once) and returns.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           s.Handler(),
		TLSConfig:         s.cfg.TLS,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	s.mu.Lock()
	s.http = hs
	s.mu.Unlock()
	evCtx, stopEvents := context.WithCancel(ctx)
	var bg sync.WaitGroup
	// Every replica: hooks of the events it stores, the revocation list
	// read again when it changes (certs.go), and its part in keeping
	// replicas in step (replicas.go).
	bg.Go(func() { s.runHooks(evCtx) })
	bg.Go(func() {
		if s.cfg.CRL != nil {
			s.cfg.CRL.Run(evCtx, 2*time.Second)
		}
	})
	bg.Go(func() { s.runReplicas(evCtx) })
	// One replica at a time (alone: this one): the outbox publisher and
	// retention (events.go), terminations held by keepalive timers of an
	// earlier run (node.go), trust metadata signed again before it
	// expires (trust.go) and the rollout driver (rollouts.go).
	bg.Go(func() { s.lead(evCtx, s.leaderWork) })
	defer func() {
		stopEvents()
		bg.Wait()
		s.stopTimers()
		s.xfer.stop()
	}()
	errc := make(chan error, 1)
	if s.cfg.TLS != nil {
		// The handshakes are done before net/http sees a connection
		// (listen.go); HTTP/2 is offered as ServeTLS would.
		tlsCfg := s.cfg.TLS.Clone()
		if len(tlsCfg.NextProtos) == 0 {
			tlsCfg.NextProtos = []string{"h2", "http/1.1"}
		}
		hs.TLSConfig = tlsCfg
		hl := newHandshakeListener(ln, tlsCfg, hs.ReadHeaderTimeout, s.log, &s.tlsCounts, handshakesPerCPU*runtime.GOMAXPROCS(0))
		s.parking.start(ctx, hl)
		defer s.parking.stop()
		ln = hl
	}
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	s.log.Info("stopping")
	// Parked long-polls are not net/http's to end.
	s.parking.stop()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := hs.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = hs.Close()
	}
	<-errc
	return err
}

// leaderWork is the work one replica does for all, until ctx is done.
func (s *Server) leaderWork(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { s.runLeaderEvents(ctx) })
	wg.Go(func() { s.resumeTerminations(ctx) })
	wg.Go(func() {
		if s.cfg.Trust != nil {
			s.cfg.Trust.Run(ctx)
		}
	})
	wg.Go(func() { s.runRollouts(ctx) })
	wg.Wait()
}

// Handler returns the HTTP handler of the wire API, for tests and for
// embedding.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	// Agents.
	mux.HandleFunc("POST /v1/devices/{id}/report", s.device(s.handleReport))
	mux.HandleFunc("GET /v1/devices/{id}/desired", s.deviceOrAdmin(s.handleDesired))
	mux.HandleFunc("POST /v1/devices/{id}/events", s.device(s.handleDeviceEvents))
	mux.HandleFunc("GET /v1/blobs/{digest}", s.handleGetBlob)
	mux.HandleFunc("POST /v1/blobs/pack", s.guard(s.handlePack, mayReadBlobs))
	// Operators.
	mux.HandleFunc("POST /v1/blobs/missing", s.admin(s.handleMissing))
	mux.HandleFunc("PUT /v1/blobs/{digest}", s.admin(s.handlePutBlob))
	mux.HandleFunc("POST /v1/packages", s.admin(s.handlePush))
	mux.HandleFunc("GET /v1/packages", s.admin(s.handlePackages))
	mux.HandleFunc("DELETE /v1/packages/{coordinate}", s.admin(s.handleDeletePackage))
	mux.HandleFunc("GET /v1/devices", s.admin(s.handleDevices))
	mux.HandleFunc("GET /v1/devices/{id}", s.admin(s.handleDevice))
	mux.HandleFunc("GET /v1/devices/{id}/state", s.admin(s.handleGetState))
	mux.HandleFunc("PUT /v1/devices/{id}/state", s.admin(s.handleSetState))
	mux.HandleFunc("PUT /v1/states", s.admin(s.handleSetStates))
	mux.HandleFunc("DELETE /v1/devices/{id}", s.admin(s.handleRemoveDevice))
	mux.HandleFunc("GET /v1/documents", s.admin(s.handleDocuments))
	mux.HandleFunc("GET /v1/documents/{kind}/{name}", s.admin(s.handleDocument))
	mux.HandleFunc("DELETE /v1/documents/{kind}/{name}", s.admin(s.handleRemoveDocument))
	mux.HandleFunc("POST /v1/plan", s.admin(s.handlePlan))
	mux.HandleFunc("GET /v1/events", s.admin(s.handleEvents))
	s.eventRoutes(mux)
	s.nodeRoutes(mux)
	s.paramRoutes(mux)
	s.trustRoutes(mux)
	s.certRoutes(mux)
	s.uiRoutes(mux)
	s.rolloutRoutes(mux)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, api.Errorf(api.ENOTFOUND, fmt.Sprintf("no such call: %s %s", r.Method, r.URL.Path)))
	})
	return s.logRequests(s.withPage(mux))
}

// maxBody bounds the body of every request but a blob upload (which
// MaxBlob bounds): no handler, present or future, reads without end.
// Handlers bound their bodies more tightly still.
const maxBody = 64 << 20

func (s *Server) logRequests(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		limit := int64(maxBody)
		if r.Method == http.MethodPut && strings.HasPrefix(r.URL.Path, "/v1/blobs/") {
			limit = s.cfg.MaxBlob
		}
		r.Body = http.MaxBytesReader(w, r.Body, limit)
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(sw, r)
		s.observeHTTP(r, sw.status, time.Since(start))
		s.log.Debug("request", "method", r.Method, "path", r.URL.Path, "status", sw.status,
			"peer", peerName(r), "duration", time.Since(start))
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the real writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
