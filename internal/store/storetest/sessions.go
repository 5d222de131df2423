package storetest

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/store"
)

// sessionTests are the cases of the Sessions contract, run by Run.
var sessionTests = []struct {
	name string
	fn   func(t *testing.T, open func(t *testing.T) store.Store)
}{
	{"SessionsRoundTrip", testSessionsRoundTrip},
	{"SessionsBounded", testSessionsBounded},
}

func testSessionsRoundTrip(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	now := t0.Truncate(time.Second)
	tok := store.Session{Key: "k-token", Kind: store.SessionToken, User: "ops", Expires: now.Add(time.Minute)}
	live := store.Session{Key: "k-live", Kind: store.SessionLive, User: "ops", CSRF: "c", Expires: now.Add(time.Hour)}
	for _, x := range []store.Session{tok, live} {
		if err := s.PutSession(ctx, x, now, 10); err != nil {
			t.Fatalf("PutSession(%s) = %v", x.Key, err)
		}
	}
	for _, bad := range []store.Session{{Kind: store.SessionLive}, {Key: "x", Kind: "other"}} {
		checkErr(t, fmt.Sprintf("PutSession(%+v)", bad), s.PutSession(ctx, bad, now, 10), errInvalid)
	}
	got, err := s.Session(ctx, "k-live")
	if err != nil || got.User != "ops" || got.CSRF != "c" || got.Kind != store.SessionLive || !got.Expires.Equal(live.Expires) {
		t.Errorf("Session(k-live) = %+v, %v, want %+v", got, err, live)
	}
	// A token is spent once.
	got, err = s.TakeSession(ctx, "k-token")
	if err != nil || got.User != "ops" || !got.Expires.Equal(tok.Expires) {
		t.Errorf("TakeSession(k-token) = %+v, %v", got, err)
	}
	_, err = s.TakeSession(ctx, "k-token")
	checkErr(t, "TakeSession(k-token) again", err, store.ErrNotFound)
	_, err = s.Session(ctx, "nope")
	checkErr(t, "Session(nope)", err, store.ErrNotFound)
	checkErr(t, "DeleteSession(k-live)", s.DeleteSession(ctx, "k-live"), nil)
	checkErr(t, "DeleteSession(k-live) again", s.DeleteSession(ctx, "k-live"), nil)
	if _, err := s.Session(ctx, "k-live"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Session(k-live) after DeleteSession = %v, want ErrNotFound", err)
	}
	// Expired ones go at the next put.
	if err := s.PutSession(ctx, store.Session{Key: "old", Kind: store.SessionLive, Expires: now.Add(time.Second)}, now, 10); err != nil {
		t.Fatal(err)
	}
	if err := s.PutSession(ctx, store.Session{Key: "new", Kind: store.SessionLive, Expires: now.Add(time.Hour)}, now.Add(2*time.Second), 10); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Session(ctx, "old"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("expired session after a later put: %v, want ErrNotFound", err)
	}
}

func testSessionsBounded(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	now := t0.Truncate(time.Second)
	const max = 3
	for i := range 5 {
		x := store.Session{Key: fmt.Sprintf("t%d", i), Kind: store.SessionToken, Expires: now.Add(time.Duration(i+1) * time.Minute)}
		if err := s.PutSession(ctx, x, now, max); err != nil {
			t.Fatal(err)
		}
	}
	// A live session is not counted against tokens.
	if err := s.PutSession(ctx, store.Session{Key: "l", Kind: store.SessionLive, Expires: now.Add(time.Minute)}, now, max); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		_, err := s.Session(ctx, fmt.Sprintf("t%d", i))
		if kept := i >= 5-max; kept != (err == nil) {
			t.Errorf("token t%d (expiring %d min): Session = %v; want kept=%v (the %d that expire last)", i, i+1, err, kept, max)
		}
	}
	if _, err := s.Session(ctx, "l"); err != nil {
		t.Errorf("live session l: %v", err)
	}
}
