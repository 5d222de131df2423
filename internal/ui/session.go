package ui

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"sync"
	"time"
)

// maxPending bounds the login tokens and sessions kept at once, so that
// issuing tokens in a loop cannot grow the server's memory.
const maxPending = 1000

// session is one logged-in browser.
type session struct {
	user    string // the admin who asked for the login URL
	csrf    string // the token every state-changing form must carry
	expires time.Time
}

// sessions holds one-time login tokens and live sessions, keyed by the
// SHA-256 of their secret so that a memory dump reveals no usable cookie.
type sessions struct {
	now func() time.Time
	ttl time.Duration

	mu     sync.Mutex
	tokens map[string]session // hash of a login token -> who and until when
	live   map[string]session // hash of a session cookie -> session
}

func newSessions(now func() time.Time, ttl time.Duration) *sessions {
	return &sessions{now: now, ttl: ttl, tokens: map[string]session{}, live: map[string]session{}}
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

// prune drops what has expired and, past maxPending, the entries that
// expire first.
func prune(m map[string]session, now time.Time) {
	for k, s := range m {
		if !now.Before(s.expires) {
			delete(m, k)
		}
	}
	for len(m) >= maxPending {
		var oldest string
		for k, s := range m {
			if oldest == "" || s.expires.Before(m[oldest].expires) {
				oldest = k
			}
		}
		delete(m, oldest)
	}
}

// token issues a one-time login token for user, valid for ttl.
func (s *sessions) token(user string, ttl time.Duration) (string, time.Time) {
	t := secret()
	exp := s.now().Add(ttl)
	s.mu.Lock()
	defer s.mu.Unlock()
	prune(s.tokens, s.now())
	s.tokens[hashOf(t)] = session{user: user, expires: exp}
	return t, exp
}

// redeem spends a login token and opens a session; ok is false when the
// token is unknown, spent or expired.
func (s *sessions) redeem(token string) (cookie string, sess session, ok bool) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	k := hashOf(token)
	t, found := s.tokens[k]
	delete(s.tokens, k) // once, whatever happens next
	if !found || !now.Before(t.expires) {
		return "", session{}, false
	}
	prune(s.live, now)
	cookie = secret()
	sess = session{user: t.user, csrf: secret(), expires: now.Add(s.ttl)}
	s.live[hashOf(cookie)] = sess
	return cookie, sess, true
}

// get returns the live session of a cookie value.
func (s *sessions) get(cookie string) (session, bool) {
	if cookie == "" {
		return session{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k := hashOf(cookie)
	sess, ok := s.live[k]
	if ok && !s.now().Before(sess.expires) {
		delete(s.live, k)
		return session{}, false
	}
	return sess, ok
}

// end closes the session of a cookie value.
func (s *sessions) end(cookie string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.live, hashOf(cookie))
}

// sameToken compares a form's CSRF token with the session's in constant time.
func sameToken(a, b string) bool {
	return a != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}
