package store

import (
	"context"
	"time"

	"github.com/drover-dev/drover/internal/api"
)

// Outbox holds events waiting to be published to the AMQP broker. When it
// is enabled (SetOutbox), AppendEvents writes each event's outbox row in
// the same transaction as the event itself, so an event is either stored
// and queued for the broker, or neither: nothing stored is ever lost on
// its way out. A publisher reads the outbox in ID order and deletes rows
// only after the broker confirmed them.
//
// The outbox is a copy of the events, not a reference: retention
// (PruneEvents) never removes an event the broker has not confirmed yet.
type Outbox interface {
	// SetOutbox turns outbox writes on or off for later AppendEvents
	// calls. A server without a broker leaves it off, so the outbox
	// never grows for nobody; rows already queued stay until deleted.
	SetOutbox(enabled bool)

	// OutboxNext returns up to limit queued events with ID > after, ID
	// ascending. limit <= 0 means DefaultEventLimit.
	OutboxNext(ctx context.Context, after int64, limit int) ([]api.Event, error)

	// OutboxDelete removes every queued event with ID <= upTo (those the
	// broker confirmed, or those a full outbox gives up on). It returns
	// how many it removed.
	OutboxDelete(ctx context.Context, upTo int64) (int64, error)

	// OutboxDepth returns how many events are queued.
	OutboxDepth(ctx context.Context) (int64, error)

	// PruneEvents applies event retention: it removes stored events
	// older than before (unless before is zero) and all but the newest
	// keep events (unless keep <= 0). It returns how many it removed.
	// IDs are never reused afterwards. Outbox rows are not touched.
	PruneEvents(ctx context.Context, before time.Time, keep int) (int64, error)
}
