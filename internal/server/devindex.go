package server

import (
	"context"
	"slices"
	"strings"
	"sync"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/store"
)

// devIndex is the server's in-memory list of device records, for the
// fleet page: reading 10,000 devices from the store on every page view
// would cost a fifth of a second. It is loaded from the store on first use
// and kept current by every device write of this server (commit).
type devIndex struct {
	mu     sync.Mutex
	loaded bool
	byID   map[string]api.Device
	sorted []api.Device // by ID; nil when it must be rebuilt
}

// all returns every device, ordered by ID. The slice is shared: callers
// must not change its elements' maps or slices.
func (x *devIndex) all(ctx context.Context, st store.Store) ([]api.Device, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if !x.loaded {
		devs, err := st.Devices(ctx)
		if err != nil {
			return nil, err
		}
		x.byID = make(map[string]api.Device, len(devs))
		for _, d := range devs {
			x.byID[d.ID] = d
		}
		x.loaded, x.sorted = true, devs
	}
	if x.sorted == nil {
		x.sorted = make([]api.Device, 0, len(x.byID))
		for _, d := range x.byID {
			x.sorted = append(x.sorted, d)
		}
		slices.SortFunc(x.sorted, func(a, b api.Device) int { return strings.Compare(a.ID, b.ID) })
	}
	return x.sorted, nil
}

// put records a device written to the store.
func (x *devIndex) put(d api.Device) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if !x.loaded {
		return // the first all() reads it from the store
	}
	x.byID[d.ID] = d
	// Rebuilt by the next page view, not here: reports are thousands a
	// second, page views a few.
	x.sorted = nil
}

// drop forgets a device removed from the store.
func (x *devIndex) drop(id string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if _, ok := x.byID[id]; ok {
		delete(x.byID, id)
		x.sorted = nil
	}
}

// reset forgets every record: the next page view reads them all from the
// store again (another replica may have written any of them).
func (x *devIndex) reset() {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.loaded, x.byID, x.sorted = false, nil, nil
}

// isLoaded reports whether the index holds the records (it is loaded by
// the first page view).
func (x *devIndex) isLoaded() bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.loaded
}
