package store

import (
	"context"

	"github.com/drover-dev/drover/internal/api"
)

// Exporter is implemented by stores that can be copied whole into
// another (drover server migrate): it lists what Store reaches only by
// key, and tells what a copy must keep beyond the records.
type Exporter interface {
	// TrustFiles returns every stored trust file, by role, then version.
	TrustFiles(ctx context.Context) ([]TrustFile, error)

	// LastEventID returns the highest event ID the store ever assigned,
	// events since pruned included; 0 if it assigned none.
	LastEventID(ctx context.Context) (int64, error)
}

// Importer is implemented by stores that can take another store's events
// with their IDs, so that clients' cursors (event IDs) stay valid across a
// copy. It is for filling an empty store (drover server migrate), never
// for serving; every other record is copied through Store itself.
type Importer interface {
	// ImportEvents stores evs exactly, IDs included, in one
	// transaction. Their IDs must be ascending and above every ID in the
	// store; later IDs assigned are above all of them. The outbox is not
	// written, whether or not it is on.
	ImportEvents(ctx context.Context, evs []api.Event) error

	// ImportOutbox queues evs in the outbox with their IDs, in one
	// transaction.
	ImportOutbox(ctx context.Context, evs []api.Event) error

	// SkipEventIDs makes every ID assigned later greater than last (the
	// source's LastEventID: IDs of pruned events are not handed out
	// again either).
	SkipEventIDs(ctx context.Context, last int64) error
}
