// Package storecopy copies a whole server store into another, empty one
// (drover server migrate: from the embedded SQLite store to PostgreSQL),
// then counts both so a copy that lost anything says so. It reads and
// writes through the store contract; only what must keep its identity
// (events and the outbox, by ID) goes through store.Importer.
package storecopy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/drover-dev/drover/internal/store"
)

// Source is a store to copy from.
type Source interface {
	store.Store
	store.Exporter
}

// Target is a store to copy into.
type Target interface {
	store.Store
	store.Exporter
	store.Importer
}

// ErrNotEmpty means the target already holds records: a copy only ever
// fills an empty store, so nothing is merged or overwritten.
var ErrNotEmpty = errors.New("target store is not empty")

// Kinds of records, in the order Copy copies and Count counts them.
const (
	KindBuilds     = "builds" // with their manifests
	KindDocuments  = "documents"
	KindDevices    = "devices" // keepalives and terminations are in the record
	KindParams     = "parameter values"
	KindRollouts   = "rollouts"
	KindTrustFiles = "trust files"
	KindEvents     = "events"
	KindOutbox     = "outbox"
)

// Count is how many records of each kind a store holds, plus the highest
// event ID it ever assigned.
type Count struct {
	N           map[string]int64
	LastEventID int64
}

// Kinds lists the kinds in order.
func Kinds() []string {
	return []string{KindBuilds, KindDocuments, KindDevices, KindParams, KindRollouts, KindTrustFiles, KindEvents, KindOutbox}
}

// Report is the outcome of a copy: what the source held and what the
// target holds after it.
type Report struct {
	Source, Target Count
}

// Mismatches lists the kinds whose counts differ, and "event ids" if the
// target could hand out an ID the source already did.
func (r Report) Mismatches() []string {
	var out []string
	for _, k := range Kinds() {
		if r.Source.N[k] != r.Target.N[k] {
			out = append(out, k)
		}
	}
	if r.Target.LastEventID < r.Source.LastEventID {
		out = append(out, "event ids")
	}
	return out
}

// page is how many events travel at once.
const page = 5000

// Copy copies every record of from into to, which must be empty
// (ErrNotEmpty), and counts both afterwards. Events and outbox rows keep
// their IDs, and to hands out only IDs above every one from assigned.
// Nothing may write to from meanwhile (stop its server first); a copy
// that fails half-way leaves to partly filled: empty it (or make a new
// database) and copy again.
func Copy(ctx context.Context, from Source, to Target) (Report, error) {
	before, err := Counts(ctx, to)
	if err != nil {
		return Report{}, fmt.Errorf("count target: %w", err)
	}
	var held []string
	for _, k := range Kinds() {
		if n := before.N[k]; n > 0 {
			held = append(held, fmt.Sprintf("%d %s", n, k))
		}
	}
	if before.LastEventID > 0 && len(held) == 0 {
		held = append(held, fmt.Sprintf("event ids up to %d used", before.LastEventID))
	}
	if len(held) > 0 {
		return Report{}, fmt.Errorf("%w: it holds %s", ErrNotEmpty, strings.Join(held, ", "))
	}
	for _, step := range []struct {
		kind string
		copy func(context.Context, Source, Target) error
	}{
		{KindBuilds, copyBuilds},
		{KindDocuments, copyDocuments},
		{KindDevices, copyDevices},
		{KindParams, copyParams},
		{KindRollouts, copyRollouts},
		{KindTrustFiles, copyTrust},
		{KindEvents, copyEvents},
		{KindOutbox, copyOutbox},
	} {
		if err := step.copy(ctx, from, to); err != nil {
			return Report{}, fmt.Errorf("copy %s: %w", step.kind, err)
		}
	}
	last, err := from.LastEventID(ctx)
	if err != nil {
		return Report{}, err
	}
	if err := to.SkipEventIDs(ctx, last); err != nil {
		return Report{}, err
	}
	var r Report
	if r.Source, err = Counts(ctx, from); err != nil {
		return Report{}, fmt.Errorf("count source: %w", err)
	}
	if r.Target, err = Counts(ctx, to); err != nil {
		return Report{}, fmt.Errorf("count target: %w", err)
	}
	return r, nil
}

func copyBuilds(ctx context.Context, from Source, to Target) error {
	bs, err := from.Builds(ctx, "")
	if err != nil {
		return err
	}
	for _, b := range bs {
		m, err := from.Manifest(ctx, b.Digest)
		if err != nil {
			return err
		}
		if err := to.PutBuild(ctx, b, m); err != nil {
			return err
		}
	}
	return nil
}

func copyDocuments(ctx context.Context, from Source, to Target) error {
	docs, err := from.Documents(ctx)
	if err != nil {
		return err
	}
	for chunk := range slices.Chunk(docs, 500) {
		if _, err := to.Commit(ctx, store.Write{Documents: chunk}); err != nil {
			return err
		}
	}
	return nil
}

func copyDevices(ctx context.Context, from Source, to Target) error {
	ds, err := from.Devices(ctx)
	if err != nil {
		return err
	}
	for _, d := range ds {
		if _, err := to.Commit(ctx, store.Write{Device: &d}); err != nil {
			return err
		}
	}
	return nil
}

func copyParams(ctx context.Context, from Source, to Target) error {
	devices, err := from.ParamDevices(ctx)
	if err != nil {
		return err
	}
	for _, dev := range append([]string{""}, devices...) { // "" = fleet-wide
		all, err := from.AllParamValues(ctx, dev)
		if err != nil {
			return err
		}
		for pkg, values := range all {
			if err := to.SetParamValues(ctx, dev, pkg, values); err != nil {
				return err
			}
		}
	}
	return nil
}

func copyRollouts(ctx context.Context, from Source, to Target) error {
	rs, err := from.Rollouts(ctx)
	if err != nil {
		return err
	}
	for _, r := range rs {
		if _, err := to.SaveRollout(ctx, r, true, nil); err != nil {
			return err
		}
	}
	return nil
}

// copyTrust puts every file in one transaction, by role and ascending
// version, so each is above the newest before it, as PutTrustFiles wants.
func copyTrust(ctx context.Context, from Source, to Target) error {
	files, err := from.TrustFiles(ctx)
	if err != nil || len(files) == 0 {
		return err
	}
	return to.PutTrustFiles(ctx, files)
}

func copyEvents(ctx context.Context, from Source, to Target) error {
	var after int64
	for {
		evs, err := from.Events(ctx, store.EventFilter{After: after, Limit: page})
		if err != nil || len(evs) == 0 {
			return err
		}
		if err := to.ImportEvents(ctx, evs); err != nil {
			return err
		}
		after = evs[len(evs)-1].ID
	}
}

func copyOutbox(ctx context.Context, from Source, to Target) error {
	var after int64
	for {
		evs, err := from.OutboxNext(ctx, after, page)
		if err != nil || len(evs) == 0 {
			return err
		}
		if err := to.ImportOutbox(ctx, evs); err != nil {
			return err
		}
		after = evs[len(evs)-1].ID
	}
}

// Counter is what Counts reads.
type Counter interface {
	store.Store
	store.Exporter
}

// Counts counts the records of every kind in s.
func Counts(ctx context.Context, s Counter) (Count, error) {
	c := Count{N: map[string]int64{}}
	bs, err := s.Builds(ctx, "")
	if err != nil {
		return Count{}, err
	}
	c.N[KindBuilds] = int64(len(bs))
	docs, err := s.Documents(ctx)
	if err != nil {
		return Count{}, err
	}
	c.N[KindDocuments] = int64(len(docs))
	ds, err := s.Devices(ctx)
	if err != nil {
		return Count{}, err
	}
	c.N[KindDevices] = int64(len(ds))
	devices, err := s.ParamDevices(ctx)
	if err != nil {
		return Count{}, err
	}
	for _, dev := range append([]string{""}, devices...) {
		all, err := s.AllParamValues(ctx, dev)
		if err != nil {
			return Count{}, err
		}
		c.N[KindParams] += int64(len(all))
	}
	rs, err := s.Rollouts(ctx)
	if err != nil {
		return Count{}, err
	}
	c.N[KindRollouts] = int64(len(rs))
	files, err := s.TrustFiles(ctx)
	if err != nil {
		return Count{}, err
	}
	c.N[KindTrustFiles] = int64(len(files))
	var after int64
	for {
		evs, err := s.Events(ctx, store.EventFilter{After: after, Limit: page})
		if err != nil {
			return Count{}, err
		}
		if len(evs) == 0 {
			break
		}
		c.N[KindEvents] += int64(len(evs))
		after = evs[len(evs)-1].ID
	}
	if c.N[KindOutbox], err = s.OutboxDepth(ctx); err != nil {
		return Count{}, err
	}
	if c.LastEventID, err = s.LastEventID(ctx); err != nil {
		return Count{}, err
	}
	return c, nil
}
