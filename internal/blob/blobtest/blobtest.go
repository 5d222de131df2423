// Package blobtest is the conformance suite every blob.Store
// implementation runs (restic's shared backend tests): one test function
// per rule of the blob.Store contract.
package blobtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/blob"
)

// Run runs the suite. open returns a new, empty store for each subtest;
// it registers its own cleanup with t.
func Run(t *testing.T, open func(t *testing.T) blob.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s blob.Store)
	}{
		{"PutOpenStat", testPutOpenStat},
		{"Missing", testMissing},
		{"InvalidDigest", testInvalidDigest},
		{"MismatchStoresNothing", testMismatch},
		{"ReaderErrorStoresNothing", testReaderError},
		{"IdempotentPut", testIdempotentPut},
		{"Delete", testDelete},
		{"List", testList},
		{"ListStopsOnError", testListStops},
		{"ConcurrentPuts", testConcurrentPuts},
		{"Cancelled", testCancelled},
		{"Verify", testVerify},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fn(t, open(t))
		})
	}
}

// content returns n deterministic bytes that differ per seed.
func content(seed byte, n int) []byte {
	b := make([]byte, n)
	x := uint32(seed)*2654435761 + 1
	for i := range b {
		x = x*1664525 + 1013904223
		b[i] = byte(x >> 24)
	}
	return b
}

func put(t *testing.T, s blob.Store, data []byte) string {
	t.Helper()
	d := blob.Digest(data)
	if err := s.Put(context.Background(), d, bytes.NewReader(data)); err != nil {
		t.Fatalf("Put(%s) = %v, want nil", d, err)
	}
	return d
}

func read(t *testing.T, s blob.Store, digest string) []byte {
	t.Helper()
	f, err := s.Open(context.Background(), digest)
	if err != nil {
		t.Fatalf("Open(%s) = %v, want nil", digest, err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatalf("read blob %s: %v", digest, err)
	}
	return b
}

func list(t *testing.T, s blob.Store) map[string]int64 {
	t.Helper()
	got := map[string]int64{}
	err := s.List(context.Background(), func(d string, size int64) error {
		if _, dup := got[d]; dup {
			t.Errorf("List visited %s twice", d)
		}
		got[d] = size
		return nil
	})
	if err != nil {
		t.Fatalf("List = %v, want nil", err)
	}
	return got
}

func wantMissing(t *testing.T, s blob.Store, digest string) {
	t.Helper()
	if _, err := s.Stat(context.Background(), digest); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Stat(%s) = %v, want ErrNotFound", digest, err)
	}
	if n := len(list(t, s)); n != 0 {
		t.Errorf("List found %d blobs, want none", n)
	}
}

func testPutOpenStat(t *testing.T, s blob.Store) {
	tests := []struct {
		name string
		data []byte
	}{
		{"empty", []byte{}},
		{"small", []byte("hello, fleet\n")},
		{"large", content(1, 3<<20+17)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := put(t, s, tt.data)
			if got := read(t, s, d); !bytes.Equal(got, tt.data) {
				t.Errorf("Open(%s) read %d bytes, want the %d put", d, len(got), len(tt.data))
			}
			size, err := s.Stat(context.Background(), d)
			if err != nil || size != int64(len(tt.data)) {
				t.Errorf("Stat(%s) = %d, %v, want %d, nil", d, size, err, len(tt.data))
			}
		})
	}
}

func testMissing(t *testing.T, s blob.Store) {
	ctx := context.Background()
	d := blob.Digest([]byte("never stored"))
	if f, err := s.Open(ctx, d); !errors.Is(err, blob.ErrNotFound) {
		if f != nil {
			f.Close()
		}
		t.Errorf("Open(missing) = %v, want ErrNotFound", err)
	}
	if _, err := s.Stat(ctx, d); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Stat(missing) = %v, want ErrNotFound", err)
	}
	if err := s.Delete(ctx, d); err != nil {
		t.Errorf("Delete(missing) = %v, want nil", err)
	}
}

func testInvalidDigest(t *testing.T, s blob.Store) {
	ctx := context.Background()
	good := blob.Digest([]byte("x"))
	bad := []string{
		"",
		"abc",
		good[:63],
		good + "0",
		strings.ToUpper(good),
		"g" + good[1:],
		"../" + good[3:],
		good[:62] + "/x",
	}
	for _, d := range bad {
		t.Run(fmt.Sprintf("%q", d), func(t *testing.T) {
			if api.ValidDigest(d) {
				t.Fatalf("ValidDigest(%q) = true, want false", d)
			}
			if err := s.Put(ctx, d, strings.NewReader("x")); !errors.Is(err, blob.ErrInvalidDigest) {
				t.Errorf("Put(%q) = %v, want ErrInvalidDigest", d, err)
			}
			if f, err := s.Open(ctx, d); !errors.Is(err, blob.ErrInvalidDigest) {
				if f != nil {
					f.Close()
				}
				t.Errorf("Open(%q) = %v, want ErrInvalidDigest", d, err)
			}
			if _, err := s.Stat(ctx, d); !errors.Is(err, blob.ErrInvalidDigest) {
				t.Errorf("Stat(%q) = %v, want ErrInvalidDigest", d, err)
			}
			if err := s.Delete(ctx, d); !errors.Is(err, blob.ErrInvalidDigest) {
				t.Errorf("Delete(%q) = %v, want ErrInvalidDigest", d, err)
			}
		})
	}
	if !api.ValidDigest(good) {
		t.Errorf("ValidDigest(%q) = false, want true", good)
	}
	if n := len(list(t, s)); n != 0 {
		t.Errorf("List found %d blobs after invalid puts, want none", n)
	}
}

func testMismatch(t *testing.T, s blob.Store) {
	d := blob.Digest([]byte("what was promised"))
	err := s.Put(context.Background(), d, strings.NewReader("what was sent"))
	if !errors.Is(err, blob.ErrDigestMismatch) {
		t.Fatalf("Put(wrong content) = %v, want ErrDigestMismatch", err)
	}
	wantMissing(t, s, d)
}

// failingReader yields some bytes, then fails.
type failingReader struct {
	data []byte
	err  error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func testReaderError(t *testing.T, s blob.Store) {
	data := content(2, 100<<10)
	d := blob.Digest(data)
	errBroken := errors.New("connection reset")
	err := s.Put(context.Background(), d, &failingReader{data: data[:50<<10], err: errBroken})
	if !errors.Is(err, errBroken) {
		t.Fatalf("Put(failing reader) = %v, want the reader's error", err)
	}
	wantMissing(t, s, d)
}

func testIdempotentPut(t *testing.T, s blob.Store) {
	data := []byte("same bytes twice")
	d := put(t, s, data)
	if err := s.Put(context.Background(), d, bytes.NewReader(data)); err != nil {
		t.Errorf("second Put(%s) = %v, want nil", d, err)
	}
	// Putting wrong content under an existing digest may be refused or
	// skipped, but must never replace what is stored.
	err := s.Put(context.Background(), d, strings.NewReader("impostor"))
	if err != nil && !errors.Is(err, blob.ErrDigestMismatch) {
		t.Errorf("Put(existing digest, wrong content) = %v, want nil or ErrDigestMismatch", err)
	}
	if got := read(t, s, d); !bytes.Equal(got, data) {
		t.Errorf("after puts, blob holds %q, want %q", got, data)
	}
	if diff := cmp.Diff(map[string]int64{d: int64(len(data))}, list(t, s)); diff != "" {
		t.Errorf("List mismatch (-want +got):\n%s", diff)
	}
}

func testDelete(t *testing.T, s blob.Store) {
	ctx := context.Background()
	keep := put(t, s, []byte("keep"))
	gone := put(t, s, []byte("gone"))
	f, err := s.Open(ctx, gone)
	if err != nil {
		t.Fatalf("Open(%s) = %v", gone, err)
	}
	defer f.Close()
	if err := s.Delete(ctx, gone); err != nil {
		t.Fatalf("Delete(%s) = %v, want nil", gone, err)
	}
	if _, err := s.Stat(ctx, gone); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Stat(deleted) = %v, want ErrNotFound", err)
	}
	if err := s.Delete(ctx, gone); err != nil {
		t.Errorf("Delete(deleted again) = %v, want nil", err)
	}
	if b, err := io.ReadAll(f); err != nil || string(b) != "gone" {
		t.Errorf("reading a blob opened before Delete = %q, %v, want %q, nil", b, err, "gone")
	}
	if diff := cmp.Diff(map[string]int64{keep: 4}, list(t, s)); diff != "" {
		t.Errorf("List after Delete mismatch (-want +got):\n%s", diff)
	}
}

func testList(t *testing.T, s blob.Store) {
	if n := len(list(t, s)); n != 0 {
		t.Fatalf("new store lists %d blobs, want none", n)
	}
	want := map[string]int64{}
	for i := range 20 {
		data := content(byte(i), i*37)
		want[put(t, s, data)] = int64(len(data))
	}
	if diff := cmp.Diff(want, list(t, s)); diff != "" {
		t.Errorf("List mismatch (-want +got):\n%s", diff)
	}
}

func testListStops(t *testing.T, s blob.Store) {
	for i := range 3 {
		put(t, s, content(byte(i), 10))
	}
	errStop := errors.New("stop")
	calls := 0
	err := s.List(context.Background(), func(string, int64) error {
		calls++
		return errStop
	})
	if !errors.Is(err, errStop) || calls != 1 {
		t.Errorf("List(fn failing) = %v after %d calls, want errStop after 1", err, calls)
	}
}

func testConcurrentPuts(t *testing.T, s blob.Store) {
	shared := content(9, 256<<10)
	const n = 8
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	own := make([][]byte, n)
	for i := range n {
		own[i] = content(byte(100+i), 64<<10)
		wg.Add(2)
		go func() {
			defer wg.Done()
			errs <- s.Put(context.Background(), blob.Digest(shared), bytes.NewReader(shared))
		}()
		go func() {
			defer wg.Done()
			errs <- s.Put(context.Background(), blob.Digest(own[i]), bytes.NewReader(own[i]))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent Put = %v, want nil", err)
		}
	}
	want := map[string]int64{blob.Digest(shared): int64(len(shared))}
	for _, b := range own {
		want[blob.Digest(b)] = int64(len(b))
	}
	if diff := cmp.Diff(want, list(t, s)); diff != "" {
		t.Errorf("List after concurrent puts mismatch (-want +got):\n%s", diff)
	}
	for d := range want {
		if err := blob.Verify(context.Background(), s, d); err != nil {
			t.Errorf("Verify(%s) = %v, want nil", d, err)
		}
	}
}

// cancellingReader cancels its context once half the data is read.
type cancellingReader struct {
	r      io.Reader
	left   int
	cancel context.CancelFunc
}

func (c *cancellingReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		c.cancel()
	}
	n, err := c.r.Read(p[:min(len(p), 4096)])
	c.left -= n
	return n, err
}

func testCancelled(t *testing.T, s blob.Store) {
	data := content(3, 1<<20)
	d := blob.Digest(data)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Put(ctx, d, bytes.NewReader(data)); !errors.Is(err, context.Canceled) {
		t.Errorf("Put(cancelled ctx) = %v, want context.Canceled", err)
	}
	wantMissing(t, s, d)

	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	r := &cancellingReader{r: bytes.NewReader(data), left: len(data) / 2, cancel: cancel}
	if err := s.Put(ctx, d, r); !errors.Is(err, context.Canceled) {
		t.Errorf("Put(cancelled midway) = %v, want context.Canceled", err)
	}
	wantMissing(t, s, d)

	put(t, s, data)
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	err := s.List(ctx, func(string, int64) error { return nil })
	if !errors.Is(err, context.Canceled) {
		t.Errorf("List(cancelled ctx) = %v, want context.Canceled", err)
	}
}

func testVerify(t *testing.T, s blob.Store) {
	d := put(t, s, content(4, 5000))
	if err := blob.Verify(context.Background(), s, d); err != nil {
		t.Errorf("Verify(%s) = %v, want nil", d, err)
	}
	missing := blob.Digest([]byte("missing"))
	if err := blob.Verify(context.Background(), s, missing); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Verify(missing) = %v, want ErrNotFound", err)
	}
}
