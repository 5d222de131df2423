package server

import (
	"context"
	"errors"
	"testing"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/pki"
	"github.com/drover-dev/drover/internal/store"
)

// lockless is a store shared among replicas whose locks cannot be had, as
// when the database is too busy to hand out a lock in time.
type lockless struct{ store.Store }

func (lockless) Broadcast(context.Context, store.Change) error { return nil }

func (lockless) Listen(ctx context.Context, _ func(store.Change)) error {
	<-ctx.Done()
	return ctx.Err()
}

func (lockless) Lead(ctx context.Context, _ string) (context.Context, func(), error) {
	<-ctx.Done()
	return nil, nil, ctx.Err()
}

func (lockless) Lock(context.Context, string) (func(), error) {
	return nil, errors.New("lock: timeout: all lock connections busy")
}

// TestReplicaLockUnavailable: a replica that cannot take the lock shared
// with the other replicas refuses the change (503, try again) instead of
// making it unlocked, where another replica's change to the same record
// could be lost; nothing is stored.
func TestReplicaLockUnavailable(t *testing.T) {
	fx := newServed(t)
	inner := fx.st
	fx.st = lockless{fx.st}
	_, addr, _ := fx.start(Config{}, nil)
	ctx := context.Background()
	dev := fx.client(pki.RoleDevice, "dev-1", addr)
	admin := fx.client(pki.RoleAdmin, "ops", addr)

	calls := []struct {
		name string
		call func() error
	}{
		{"report", func() error {
			_, err := dev.Report(ctx, "dev-1", api.Report{Facts: map[string]string{}, Installed: []api.InstalledApp{}})
			return err
		}},
		{"state set", func() error {
			_, err := admin.SetState(ctx, api.DesiredState{ID: "dev-1", Apps: []api.DesiredApp{}})
			return err
		}},
	}
	for _, c := range calls {
		err := c.call()
		var ae *api.Error
		if !errors.As(err, &ae) || ae.Code != api.EUNAVAILABLE || ae.RetryAfter < 1 {
			t.Errorf("%s without the shared lock: %v, want %s with a retry after", c.name, err, api.EUNAVAILABLE)
		}
	}
	if _, err := inner.Device(ctx, "dev-1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("device stored without the lock: %v", err)
	}
	if docs, err := inner.Documents(ctx); err != nil || len(docs) != 0 {
		t.Errorf("documents stored without the lock: %v, %v", docs, err)
	}
}
