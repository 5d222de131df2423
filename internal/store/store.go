// Package store defines the server's store: pushed builds and their
// manifests, devices, desired states and events. Store is the one
// contract; implementations live in subpackages named after their
// technology (sqlite, later postgres) and all run the conformance suite in
// package storetest.
//
// Rules every implementation keeps (Nomad's state-store rules): the store
// never reads the wall clock and never invents IDs other than event IDs;
// times and identities come from the caller.
package store

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/Masterminds/semver/v3"

	"github.com/drover-dev/drover/internal/api"
)

// Sentinel errors, checked with errors.Is.
var (
	// ErrNotFound means the record asked for does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict means a write would change something immutable.
	ErrConflict = errors.New("conflict")
)

// DefaultEventLimit is how many events Events returns when
// EventFilter.Limit is 0.
const DefaultEventLimit = 1000

// EventFilter selects events. Zero fields select everything.
type EventFilter struct {
	After       int64     // only events with ID > After
	Device      string    // only this device's events
	Kind        string    // only this kind
	MinPriority string    // only this priority or higher (api.PriorityRank)
	Since       time.Time // only events at or after this time (zero: any)
	Limit       int       // at most this many; 0 (or less) = DefaultEventLimit
	// Last takes the newest Limit matching events instead of the oldest;
	// they still come back ID ascending (a page's "last events").
	Last bool
}

// Store is the server's persistent state. All methods are safe for
// concurrent use. Invalid input (a malformed coordinate, an empty id, an
// event that fails api.Event.Normalize) is an error wrapping neither
// sentinel and changes nothing; callers validate first to answer users.
type Store interface {
	// PutBuild stores a pushed build: its summary b and its manifest JSON
	// bytes, which must hash to b.Digest (the caller checks). A coordinate
	// plus its tag set (order and duplicates ignored) is immutable: if a
	// build with them exists under another digest, or b.Digest exists
	// under another coordinate or tag set, PutBuild returns ErrConflict;
	// if the very same build exists it returns nil and keeps the first
	// push (its Pushed time included).
	PutBuild(ctx context.Context, b api.Build, manifest []byte) error

	// Builds lists builds; name "" lists all, "group:name" one package
	// (none is an empty list, not an error; a malformed name is). Order: package name, then
	// semantic version ascending (1.9.0 before 1.10.0, 2.0.0-rc.1 before
	// 2.0.0), then tags. Tags come back sorted, never nil.
	Builds(ctx context.Context, name string) ([]api.Build, error)

	// Manifest returns the manifest bytes of the build with this digest,
	// exactly as put. ErrNotFound if there is none.
	Manifest(ctx context.Context, digest string) ([]byte, error)

	// DeleteBuilds removes builds of the coordinate "group:name:version":
	// all of them if tags is nil, else only the build with exactly those
	// tags (an empty non-nil tags selects the untagged build). It returns
	// how many were removed; none is ErrNotFound. The manifests go with
	// them; blobs are the caller's to collect.
	DeleteBuilds(ctx context.Context, coordinate string, tags []string) (int, error)

	// Device returns the device with this ID. ErrNotFound if unknown.
	Device(ctx context.Context, id string) (api.Device, error)

	// Devices returns every device, ordered by ID.
	Devices(ctx context.Context) ([]api.Device, error)

	// Desired returns the desired state of a device: its own document's
	// apps. ErrNotFound if none was set.
	Desired(ctx context.Context, id string) (api.DesiredState, error)

	// Documents returns every desired-state document, devices' (by id)
	// before groups' (by name), exactly as put.
	Documents(ctx context.Context) ([]api.Document, error)

	// Document returns the document with this key (api.Document.Key).
	// ErrNotFound if there is none.
	Document(ctx context.Context, key string) (api.Document, error)

	// AppendEvents stores evs in order, all or none, and returns them
	// normalized (api.Event.Normalize) with IDs set. Each ID is greater
	// than every ID assigned before, even of events since removed, so an
	// ID is a resumable cursor. The caller's ID is ignored; its Time is
	// kept (the store never reads the clock).
	AppendEvents(ctx context.Context, evs []api.Event) ([]api.Event, error)

	// Events returns stored events matching f, ID ascending.
	Events(ctx context.Context, f EventFilter) ([]api.Event, error)

	// Commit stores a change of a device's record and/or desired states
	// together with the events that describe it, in one transaction: a
	// crash keeps all of it or none, so no event of a stored change is
	// ever lost (and none is told of a change that was not stored). It
	// returns the events as AppendEvents does. An empty Write is a no-op.
	// It is the only way to write devices and desired states: a device
	// record is written for every report of every device (thousands a
	// second), so implementations keep that write one cheap statement.
	Commit(ctx context.Context, w Write) ([]api.Event, error)

	// Close releases the store. No method may be called after it.
	Close() error

	Outbox
	Params
	Trust
	Rollouts
	Sessions
}

// Write is one change for Commit. Removals happen before puts.
type Write struct {
	Device  *api.Device        // replaces the device's whole record
	Desired []api.DesiredState // replace these devices' documents (Apps only)
	// Documents replace the documents with the same Key. A document's
	// Kind must be api.DocDevice (with an ID) or api.DocGroup (with a
	// Group).
	Documents []api.Document
	// RemoveDocuments removes the documents of these keys; an unknown key
	// is no error.
	RemoveDocuments []string
	// RemoveDevices removes these devices' records (not their documents
	// nor events); an unknown id is no error.
	RemoveDevices []string
	Events        []api.Event // appended after the changes (as AppendEvents)
}

// CheckDocument refuses a document the store cannot key.
func CheckDocument(d api.Document) error {
	switch {
	case d.Kind == api.DocDevice && d.ID != "" && d.Group == "":
	case d.Kind == api.DocGroup && d.Group != "" && d.ID == "":
	default:
		return errors.New("document: want kind device with an id, or kind group with a group name")
	}
	return nil
}

// SortBuilds sorts builds in the order Builds returns them: package name,
// then semantic version ascending, then tags (compared element by element).
// A version that is not semantic sorts after every valid one, by string.
func SortBuilds(bs []api.Build) {
	type keyed struct {
		b   api.Build
		pkg string
		raw string          // version as written
		ver *semver.Version // nil if raw is not semantic
	}
	ks := make([]keyed, len(bs))
	for i, b := range bs {
		k := keyed{b: b, pkg: b.Coordinate}
		if j := strings.LastIndexByte(b.Coordinate, ':'); j >= 0 {
			k.pkg, k.raw = b.Coordinate[:j], b.Coordinate[j+1:]
			k.ver, _ = semver.StrictNewVersion(k.raw)
		}
		ks[i] = k
	}
	slices.SortStableFunc(ks, func(a, b keyed) int {
		if c := strings.Compare(a.pkg, b.pkg); c != 0 {
			return c
		}
		switch {
		case a.ver != nil && b.ver != nil:
			if c := a.ver.Compare(b.ver); c != 0 {
				return c
			}
		case a.ver != nil:
			return -1
		case b.ver != nil:
			return 1
		}
		// Equal precedence (1.0.0+a, 1.0.0+b) still needs a fixed order.
		if c := strings.Compare(a.raw, b.raw); c != 0 {
			return c
		}
		return slices.Compare(a.b.Tags, b.b.Tags)
	})
	for i, k := range ks {
		bs[i] = k.b
	}
}
