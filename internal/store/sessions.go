package store

import (
	"context"
	"time"
)

// Session kinds.
const (
	SessionToken = "token" // a one-time login token (drover ui)
	SessionLive  = "live"  // a logged-in browser
)

// Session is one of the fleet page's login tokens or logged-in browsers.
// Key is the SHA-256 (hex) of its secret, never the secret itself, so the
// store holds no usable cookie.
type Session struct {
	Key     string
	Kind    string // SessionToken or SessionLive
	User    string // the admin who asked for the login
	CSRF    string // the token every state-changing form carries (live)
	Expires time.Time
}

// Sessions holds the fleet page's login tokens and sessions, so that
// every replica of the server knows them and a restart logs nobody out.
// Expiry is the caller's to check; the store only prunes.
type Sessions interface {
	// PutSession stores s, replacing one with the same key. It first
	// removes every session expired at now and, when max sessions of
	// s.Kind are stored already, those of the kind that expire first, so
	// issuing tokens in a loop cannot grow the store. An empty key or an
	// unknown kind is invalid.
	PutSession(ctx context.Context, s Session, now time.Time, max int) error

	// TakeSession removes and returns the session of key: a login token
	// is spent once, whoever asks. ErrNotFound if there is none.
	TakeSession(ctx context.Context, key string) (Session, error)

	// Session returns the session of key. ErrNotFound if there is none.
	Session(ctx context.Context, key string) (Session, error)

	// DeleteSession removes the session of key; an unknown key is no
	// error.
	DeleteSession(ctx context.Context, key string) error
}

// CheckSession refuses a session the store cannot key.
func CheckSession(s Session) error {
	if s.Key == "" || (s.Kind != SessionToken && s.Kind != SessionLive) {
		return errInvalidSession
	}
	return nil
}

var errInvalidSession = invalidError("session: want a key and kind token or live")

type invalidError string

func (e invalidError) Error() string { return string(e) }
