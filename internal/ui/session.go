package ui

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/drover-dev/drover/internal/store"
)

// maxPending bounds the login tokens and the sessions kept at once, so
// that issuing tokens in a loop cannot grow the server's store.
const maxPending = 1000

// session is one logged-in browser.
type session struct {
	user    string // the admin who asked for the login URL
	csrf    string // the token every state-changing form must carry
	expires time.Time
}

// sessions issues one-time login tokens and opens sessions, kept in a
// store.Sessions (the server's store, so every replica knows them) keyed
// by the SHA-256 of their secret: a copy of the store reveals no usable
// cookie.
type sessions struct {
	now func() time.Time
	ttl time.Duration
	st  store.Sessions
	log func(msg string, args ...any)
}

func newSessions(now func() time.Time, ttl time.Duration, st store.Sessions, log func(string, ...any)) *sessions {
	if st == nil {
		st = &memSessions{m: map[string]store.Session{}}
	}
	return &sessions{now: now, ttl: ttl, st: st, log: log}
}

func secret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand never fails on Linux
	return base64.RawURLEncoding.EncodeToString(b)
}

func hashOf(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// token issues a one-time login token for user, valid for ttl.
func (s *sessions) token(ctx context.Context, user string, ttl time.Duration) (string, time.Time, error) {
	t := secret()
	now := s.now()
	exp := now.Add(ttl)
	err := s.st.PutSession(ctx, store.Session{Key: hashOf(t), Kind: store.SessionToken, User: user, Expires: exp}, now, maxPending)
	return t, exp, err
}

// redeem spends a login token and opens a session; ok is false when the
// token is unknown, spent or expired.
func (s *sessions) redeem(ctx context.Context, token string) (cookie string, sess session, ok bool) {
	if token == "" {
		return "", session{}, false
	}
	now := s.now()
	t, err := s.st.TakeSession(ctx, hashOf(token)) // once, whatever happens next
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			s.log("fleet page login", "err", err)
		}
		return "", session{}, false
	}
	if t.Kind != store.SessionToken || !now.Before(t.Expires) {
		return "", session{}, false
	}
	cookie = secret()
	sess = session{user: t.User, csrf: secret(), expires: now.Add(s.ttl)}
	err = s.st.PutSession(ctx, store.Session{Key: hashOf(cookie), Kind: store.SessionLive, User: sess.user, CSRF: sess.csrf, Expires: sess.expires}, now, maxPending)
	if err != nil {
		s.log("fleet page login", "err", err)
		return "", session{}, false
	}
	return cookie, sess, true
}

// get returns the live session of a cookie value.
func (s *sessions) get(ctx context.Context, cookie string) (session, bool) {
	if cookie == "" {
		return session{}, false
	}
	k := hashOf(cookie)
	x, err := s.st.Session(ctx, k)
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			s.log("fleet page session", "err", err)
		}
		return session{}, false
	}
	if x.Kind != store.SessionLive {
		return session{}, false
	}
	if !s.now().Before(x.Expires) {
		_ = s.st.DeleteSession(ctx, k)
		return session{}, false
	}
	return session{user: x.User, csrf: x.CSRF, expires: x.Expires}, true
}

// end closes the session of a cookie value.
func (s *sessions) end(ctx context.Context, cookie string) {
	if err := s.st.DeleteSession(ctx, hashOf(cookie)); err != nil {
		s.log("fleet page logout", "err", err)
	}
}

// sameToken compares a form's CSRF token with the session's in constant time.
func sameToken(a, b string) bool {
	return a != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// memSessions is store.Sessions in memory, for a page without a store
// (its tests).
type memSessions struct {
	mu sync.Mutex
	m  map[string]store.Session
}

func (ms *memSessions) PutSession(_ context.Context, s store.Session, now time.Time, max int) error {
	if err := store.CheckSession(s); err != nil {
		return err
	}
	ms.mu.Lock()
	defer ms.mu.Unlock()
	var same []store.Session
	for k, x := range ms.m {
		switch {
		case !now.Before(x.Expires):
			delete(ms.m, k)
		case x.Kind == s.Kind && k != s.Key:
			same = append(same, x)
		}
	}
	if max > 0 && len(same) >= max {
		slices.SortFunc(same, func(a, b store.Session) int { return a.Expires.Compare(b.Expires) })
		for _, x := range same[:len(same)-max+1] {
			delete(ms.m, x.Key)
		}
	}
	ms.m[s.Key] = s
	return nil
}

func (ms *memSessions) TakeSession(_ context.Context, key string) (store.Session, error) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	x, ok := ms.m[key]
	if !ok {
		return store.Session{}, store.ErrNotFound
	}
	delete(ms.m, key)
	return x, nil
}

func (ms *memSessions) Session(_ context.Context, key string) (store.Session, error) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	x, ok := ms.m[key]
	if !ok {
		return store.Session{}, store.ErrNotFound
	}
	return x, nil
}

func (ms *memSessions) DeleteSession(_ context.Context, key string) error {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	delete(ms.m, key)
	return nil
}
