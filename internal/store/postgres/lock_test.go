package postgres_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/store/postgres/pgtest"
)

// Two replicas' read-modify-write sections under one Lock name never
// overlap; other names do not wait for each other; a lock whose holder's
// connection dies is free again.
func TestLock(t *testing.T) {
	cfg := pgtest.Config(t)
	a, b := open(t, cfg), open(t, cfg)
	ctx := context.Background()

	var inside, overlaps atomic.Int32
	var wg sync.WaitGroup
	for i := range 20 {
		st := a
		if i%2 == 1 {
			st = b
		}
		wg.Go(func() {
			unlock, err := st.Lock(ctx, "device/alpha")
			if err != nil {
				t.Errorf("Lock = %v", err)
				return
			}
			if inside.Add(1) > 1 {
				overlaps.Add(1)
			}
			time.Sleep(2 * time.Millisecond) // a section that takes a while
			inside.Add(-1)
			unlock()
		})
	}
	wg.Wait()
	if n := overlaps.Load(); n > 0 {
		t.Errorf("%d sections of device/alpha ran at once with another", n)
	}

	unlock, err := a.Lock(ctx, "device/alpha")
	if err != nil {
		t.Fatal(err)
	}
	other, err := b.Lock(ctx, "device/beta") // another name: no wait
	if err != nil {
		t.Fatal(err)
	}
	other()
	wctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if u, err := b.Lock(wctx, "device/alpha"); err == nil {
		u()
		t.Fatal("B took device/alpha while A held it")
	}
	// A's connection dying (a replica killed) frees its lock.
	key := uint64(a.LockKeyForTest("device/alpha"))
	if _, err := b.PoolForTest().Exec(ctx, fmt.Sprintf(`SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted
		AND classid = %d AND objid = %d AND objsubid = 1`, key>>32, key&0xffffffff)); err != nil {
		t.Fatal(err)
	}
	unlock() // its connection is gone: must neither hang nor panic
	wctx2, cancel2 := context.WithTimeout(ctx, 10*time.Second)
	defer cancel2()
	u, err := b.Lock(wctx2, "device/alpha")
	if err != nil {
		t.Fatalf("B could not take device/alpha after A closed: %v", err)
	}
	u()
}
