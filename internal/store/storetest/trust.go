package storetest

import (
	"errors"
	"sync"
	"testing"

	"github.com/drover-dev/drover/internal/store"
)

// trustTests are the cases of the Trust contract, run by Run.
var trustTests = []struct {
	name string
	fn   func(t *testing.T, open func(t *testing.T) store.Store)
}{
	{"TrustFiles", testTrustFiles},
	{"TrustFilesConcurrent", testTrustFilesConcurrent},
}

func testTrustFiles(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	if _, err := s.TrustFile(ctx, "timestamp", 0); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("TrustFile of nothing: %v, want ErrNotFound", err)
	}
	put := func(files ...store.TrustFile) error { return s.PutTrustFiles(ctx, files) }
	f := func(role string, v int64, data string) store.TrustFile {
		return store.TrustFile{Role: role, Version: v, Data: []byte(data)}
	}
	if err := put(f("root", 1, "r1"), f("timestamp", 1, "t1")); err != nil {
		t.Fatal(err)
	}
	if err := put(f("root", 2, "r2"), f("timestamp", 2, "t2")); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name    string
		files   []store.TrustFile
		wantErr error // nil, ErrConflict, or errInvalid
	}{
		{"same bytes again is a no-op", []store.TrustFile{f("timestamp", 2, "t2")}, nil},
		{"same version other bytes", []store.TrustFile{f("timestamp", 2, "other")}, store.ErrConflict},
		{"older version", []store.TrustFile{f("timestamp", 1, "t1")}, store.ErrConflict},
		{"older root", []store.TrustFile{f("root", 1, "r1x")}, store.ErrConflict},
		{"one bad file keeps none", []store.TrustFile{f("timestamp", 3, "t3"), f("root", 1, "x")}, store.ErrConflict},
		{"no role", []store.TrustFile{f("", 5, "x")}, errInvalid},
		{"version 0", []store.TrustFile{f("targets", 0, "x")}, errInvalid},
		{"no data", []store.TrustFile{f("targets", 1, "")}, errInvalid},
	} {
		err := put(tt.files...)
		switch {
		case tt.wantErr == errInvalid:
			if err == nil || errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound) {
				t.Errorf("%s: PutTrustFiles = %v, want an invalid-input error", tt.name, err)
			}
		case !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil):
			t.Errorf("%s: PutTrustFiles = %v, want %v", tt.name, err, tt.wantErr)
		}
	}
	for _, tt := range []struct {
		role    string
		version int64
		want    string
		wantV   int64
	}{
		{"root", 0, "r2", 2}, {"root", 1, "r1", 1}, {"root", 2, "r2", 2},
		{"timestamp", 0, "t2", 2},
	} {
		got, err := s.TrustFile(ctx, tt.role, tt.version)
		if err != nil || string(got.Data) != tt.want || got.Version != tt.wantV || got.Role != tt.role {
			t.Errorf("TrustFile(%s, %d) = %+v, %v; want %s version %d", tt.role, tt.version, got, err, tt.want, tt.wantV)
		}
	}
	// Only the newest of a role other than root is kept.
	if _, err := s.TrustFile(ctx, "timestamp", 1); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("TrustFile(timestamp, 1) after version 2: %v, want ErrNotFound", err)
	}
}

// Two writers of the same next version: exactly one wins.
func testTrustFilesConcurrent(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.PutTrustFiles(ctx, []store.TrustFile{{Role: "snapshot", Version: 1, Data: []byte{byte('a' + i)}}})
		}()
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, store.ErrConflict):
			t.Errorf("PutTrustFiles: %v, want nil or ErrConflict", err)
		}
	}
	if ok != 1 {
		t.Errorf("%d of 8 writers of version 1 won, want 1", ok)
	}
}
