// Package ui is the fleet page: a live view of the fleet in the browser,
// served by the server under /ui/. A browser has no client certificate,
// so the page has its own login: an admin asks for a one-time URL
// (`drover ui url`), opening it sets a session cookie. The wire API keeps
// requiring certificates; this package never sees /v1.
//
// Everything a device or a package can write (labels, log messages, send
// bodies, package names, script output) is rendered as text by
// html/template on the server or by textContent in the browser, never as
// markup; the Content-Security-Policy allows no inline script.
package ui

import (
	"context"
	"embed"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/store"
)

// EventFilter selects events for the feed and a device's detail.
type EventFilter struct {
	After       int64
	Device      string
	MinPriority string
	Limit       int
}

// Backend is what the page reads and changes; the server implements it.
// Errors that are *api.Error are shown to the user as they are.
type Backend interface {
	// Devices returns every device with its status fields filled
	// (Desired, Converged).
	Devices(ctx context.Context) ([]api.Device, error)
	// Device returns one device with its status; an api.ENOTFOUND error
	// when there is none.
	Device(ctx context.Context, id string) (api.Device, error)
	// Events returns stored events, newest last.
	Events(ctx context.Context, f EventFilter) ([]api.Event, error)
	// Follow streams events matching f as Server-Sent Events without
	// event names (every message is a JSON api.Event in `data:`).
	Follow(w http.ResponseWriter, r *http.Request, f EventFilter) error
	// Builds lists every pushed build.
	Builds(ctx context.Context) ([]api.Build, error)
	// Rollouts lists rollouts, newest first; Rollout returns one.
	Rollouts(ctx context.Context) ([]api.Rollout, error)
	Rollout(ctx context.Context, name string) (api.Rollout, error)
	// RolloutAction pauses, resumes or aborts a rollout ("pause",
	// "resume", "abort", "abort-revert") on behalf of an admin.
	RolloutAction(ctx context.Context, name, action, by string) error
}

// Matcher turns a device filter typed by the user into a predicate;
// it returns an error for a malformed label selector.
type Matcher func(query string) (func(api.Device) bool, error)

// Config holds the page's settings.
type Config struct {
	// SessionTTL is how long a login lasts; default 8h.
	SessionTTL time.Duration
	// Sessions keeps login tokens and sessions (the server's store, so
	// every replica knows them); nil keeps them in memory.
	Sessions store.Sessions
	// PageSize is the number of devices on one page; default 50.
	PageSize int
	// Match filters devices; default TextMatch.
	Match  Matcher
	Logger *slog.Logger
	Now    func() time.Time
}

// UI serves the fleet page. Create it with New.
type UI struct {
	cfg      Config
	log      *slog.Logger
	now      func() time.Time
	be       Backend
	sess     *sessions
	pages    map[string]*template.Template
	static   http.Handler
	snapshot *deviceCache
}

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// New returns the page over be.
func New(cfg Config, be Backend) (*UI, error) {
	if cfg.SessionTTL == 0 {
		cfg.SessionTTL = 8 * time.Hour
	}
	if cfg.PageSize == 0 {
		cfg.PageSize = 50
	}
	if cfg.Match == nil {
		cfg.Match = TextMatch
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	u := &UI{cfg: cfg, log: cfg.Logger, now: cfg.Now, be: be, sess: newSessions(cfg.Now, cfg.SessionTTL, cfg.Sessions, cfg.Logger.Warn)}
	u.snapshot = &deviceCache{be: be, now: cfg.Now, maxAge: time.Second}
	var err error
	if u.pages, err = parsePages(u.funcs()); err != nil {
		return nil, err
	}
	sub, err := fs.Sub(staticFS, "static")
	if err != nil {
		return nil, err
	}
	u.static = http.StripPrefix("/ui/static/", http.FileServer(http.FS(sub)))
	return u, nil
}

// LoginToken issues a one-time login token for an admin, valid for ttl;
// the login URL is /ui/login?token=TOKEN on the server's address.
func (u *UI) LoginToken(ctx context.Context, user string, ttl time.Duration) (token string, expires time.Time, err error) {
	return u.sess.token(ctx, user, ttl)
}

// LoginPath is the path and query of the login URL of a token.
func LoginPath(token string) string { return "/ui/login?token=" + url.QueryEscape(token) }

const cookieName = "drover_ui"

// Handler serves every path under /ui/ (and redirects / there).
func (u *UI) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ui/", http.StatusSeeOther)
	})
	mux.Handle("GET /ui/static/", u.static)
	mux.HandleFunc("GET /ui/login", u.handleLogin)
	mux.HandleFunc("POST /ui/logout", u.authed(u.handleLogout))
	mux.HandleFunc("GET /ui/{$}", u.authed(u.handleSummary))
	mux.HandleFunc("GET /ui/devices", u.authed(u.handleDevices))
	mux.HandleFunc("GET /ui/devices/{id}", u.authed(u.handleDevice))
	mux.HandleFunc("GET /ui/events", u.authed(u.handleEvents))
	mux.HandleFunc("GET /ui/events/stream", u.authed(u.handleStream))
	mux.HandleFunc("GET /ui/rollouts", u.authed(u.handleRollouts))
	mux.HandleFunc("GET /ui/rollouts/{name}", u.authed(u.handleRollout))
	mux.HandleFunc("POST /ui/rollouts/{name}/{action}", u.authed(u.handleRolloutAction))
	mux.HandleFunc("GET /ui/packages", u.authed(u.handlePackages))
	mux.HandleFunc("/ui/", u.authed(func(w http.ResponseWriter, r *http.Request, _ session) {
		u.fail(w, r, http.StatusNotFound, "no such page")
	}))
	return secureHeaders(mux)
}

// secureHeaders sets the headers every answer of the page carries.
func secureHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "+
			"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		// The login URL carries a token: never send it to another site.
		// (no-referrer would make browsers send "Origin: null" on the
		// page's own forms, which the CSRF check refuses.)
		hd.Set("Referrer-Policy", "same-origin")
		if !strings.HasPrefix(r.URL.Path, "/ui/static/") {
			hd.Set("Cache-Control", "no-store")
		}
		h.ServeHTTP(w, r)
	})
}

type sessionHandler func(w http.ResponseWriter, r *http.Request, s session)

// authed lets a request through only with a live session; others get the
// login notice. POSTs must also carry the session's CSRF token and come
// from this origin.
func (u *UI) authed(h sessionHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := r.Cookie(cookieName)
		var s session
		ok := false
		if err == nil {
			s, ok = u.sess.get(r.Context(), c.Value)
		}
		if !ok {
			u.render(w, r, http.StatusUnauthorized, "login", pageData{Title: "Log in"})
			return
		}
		if r.Method == http.MethodPost {
			if err := checkCSRF(r, s); err != nil {
				u.fail(w, r, http.StatusForbidden, err.Error())
				return
			}
		}
		h(w, r, s)
	}
}

// checkCSRF refuses a cross-site POST: the browser's own Sec-Fetch-Site or
// Origin must say same origin, and the form must carry the session's token.
func checkCSRF(r *http.Request, s session) error {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
		return errors.New("cross-site request refused")
	}
	if o := r.Header.Get("Origin"); o != "" {
		ou, err := url.Parse(o)
		if err != nil || ou.Host != r.Host {
			return errors.New("cross-origin request refused")
		}
	}
	r.Body = http.MaxBytesReader(nil, r.Body, 64<<10)
	if !sameToken(r.PostFormValue("csrf"), s.csrf) {
		return errors.New("the form is stale or was not sent by this page: reload and try again")
	}
	return nil
}

func (u *UI) handleLogin(w http.ResponseWriter, r *http.Request) {
	cookie, s, ok := u.sess.redeem(r.Context(), r.URL.Query().Get("token"))
	if !ok {
		u.render(w, r, http.StatusUnauthorized, "login", pageData{Title: "Log in",
			Error: "This login link is unknown, used or expired. Ask for a new one with `drover ui url`."})
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: cookieName, Value: cookie, Path: "/ui/",
		MaxAge: int(u.cfg.SessionTTL / time.Second), Expires: s.expires,
		HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode,
	})
	u.log.Info("fleet page login", "user", s.user)
	http.Redirect(w, r, "/ui/", http.StatusSeeOther)
}

func (u *UI) handleLogout(w http.ResponseWriter, r *http.Request, s session) {
	if c, err := r.Cookie(cookieName); err == nil {
		u.sess.end(r.Context(), c.Value)
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/ui/", MaxAge: -1,
		HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
	u.render(w, r, http.StatusOK, "login", pageData{Title: "Logged out", Notice: "You are logged out."})
}

// fail shows an error page.
func (u *UI) fail(w http.ResponseWriter, r *http.Request, status int, msg string) {
	u.render(w, r, status, "error", pageData{Title: http.StatusText(status), Error: msg})
}

// backendError shows what went wrong in the backend: an *api.Error as it
// is, anything else as "internal error" (and logged).
func (u *UI) backendError(w http.ResponseWriter, r *http.Request, err error) {
	var e *api.Error
	if errors.As(err, &e) {
		u.fail(w, r, api.HTTPStatus(e.Code), e.Message)
		return
	}
	if r.Context().Err() != nil {
		return
	}
	u.log.Error("fleet page", "path", r.URL.Path, "err", err)
	u.fail(w, r, http.StatusInternalServerError, "internal error")
}

// TextMatch is the default device filter: every word of the query must
// appear in the device's id, a label (key=value) or a tag.
func TextMatch(q string) (func(api.Device) bool, error) {
	words := strings.Fields(strings.ToLower(q))
	return func(d api.Device) bool {
		for _, w := range words {
			if !deviceHas(d, w) {
				return false
			}
		}
		return true
	}, nil
}

func deviceHas(d api.Device, w string) bool {
	if strings.Contains(strings.ToLower(d.ID), w) {
		return true
	}
	for k, v := range d.Labels {
		if strings.Contains(strings.ToLower(k+"="+v), w) {
			return true
		}
	}
	for _, t := range d.Tags {
		if strings.Contains(strings.ToLower(t), w) {
			return true
		}
	}
	return false
}
