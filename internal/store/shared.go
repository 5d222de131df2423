package store

import "context"

// Change is what one replica tells the others after it wrote to a shared
// store, so they drop what they cached and wake what waits on it. Kind
// names what changed (the Change* constants); Keys narrow it (device ids,
// document keys, rollout names) and nil Keys mean "any of this kind".
type Change struct {
	Kind string   `json:"k"`
	Keys []string `json:"keys,omitempty"`
	// Origin is the replica that made the change, so it ignores its own.
	Origin string `json:"o,omitempty"`
}

// Kinds of Change.
const (
	ChangeDocuments = "documents" // desired-state documents (Keys: document keys)
	ChangeBuilds    = "builds"    // builds pushed or removed (Keys: nil)
	ChangeParams    = "params"    // parameter values (Keys: device ids, "" = fleet-wide)
	ChangeDevices   = "devices"   // device records (Keys: device ids)
	ChangeEvents    = "events"    // new events stored
	ChangeRollouts  = "rollouts"  // rollouts (Keys: names)
	ChangeTrust     = "trust"     // signed TUF metadata
	// ChangeResync is delivered, never sent: notifications may have been
	// missed (the listening connection was lost), so drop every cache.
	ChangeResync = "resync"
)

// Shared is implemented by stores that several server replicas use at
// once (PostgreSQL). A store without it (SQLite) has one server: that
// server is always the leader and has nobody to tell.
type Shared interface {
	// Broadcast tells every replica listening of c, after the write it
	// describes was committed. It is best effort: a replica that missed
	// it gets ChangeResync.
	Broadcast(ctx context.Context, c Change) error

	// Listen calls fn with every change broadcast (its own included;
	// callers filter by Origin) until ctx is done, and with ChangeResync
	// whenever changes may have been missed (first after a reconnect).
	// fn runs on one goroutine, in order; it must not block for long.
	Listen(ctx context.Context, fn func(Change)) error

	// Lead blocks until this replica holds the leadership named name (one
	// holder among all replicas at a time), or ctx is done. It returns a
	// context that is cancelled when leadership is lost (the holding
	// connection broke) and a release function that gives it up.
	Lead(ctx context.Context, name string) (context.Context, func(), error)

	// Lock takes the exclusive lock named name among all replicas,
	// blocking until it is free or ctx is done, and returns its unlock.
	// It guards short read-modify-write sections (a device record, the
	// document set, one rollout) that a replica's own mutex cannot guard
	// against another replica. Locks are held on connections of their
	// own, so a held lock never starves the store's queries.
	Lock(ctx context.Context, name string) (func(), error)
}
