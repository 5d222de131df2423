package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/rollout"
	"github.com/drover-dev/drover/internal/store"
)

// replicas is what a server does when other servers share its store
// (PostgreSQL): it tells them of each change it commits, applies theirs
// to what it keeps in memory (the resolver's documents, builds and
// resolutions, parameter values, the fleet page's device index, the
// rollout index) and wakes what waits on them (long-polls, event
// followers, the page's live feed), and it takes part in choosing the one
// replica that does the work that must happen once.
//
// A server whose store is not shared is alone: it tells nobody and is
// always the leader.
type replicas struct {
	shared store.Shared // nil: alone
	origin string       // this replica, in the Origin of its changes

	out changeQueue // this replica's changes, to send
	in  changeQueue // the others' changes, to apply

	// leader: this replica does the once-only work now.
	leader atomic.Bool
}

// leaderLock names the leadership among replicas.
const leaderLock = "drover-leader"

func newReplicas(st store.Store) *replicas {
	rp := &replicas{out: newChangeQueue(), in: newChangeQueue()}
	if sh, ok := st.(store.Shared); ok {
		rp.shared = sh
		var b [8]byte
		_, _ = rand.Read(b[:])
		rp.origin = hex.EncodeToString(b[:])
	} else {
		rp.leader.Store(true)
	}
	return rp
}

// leading reports whether this replica does the once-only work now.
func (rp *replicas) leading() bool { return rp.leader.Load() }

// changeQueue merges changes by kind until they are taken: thousands of
// reports a second become a few changes, each naming its devices.
type changeQueue struct {
	mu      sync.Mutex
	pending map[string]map[string]bool // kind -> keys (nil: any)
	kick    chan struct{}              // something is pending
}

func newChangeQueue() changeQueue {
	return changeQueue{pending: map[string]map[string]bool{}, kick: make(chan struct{}, 1)}
}

// add queues a change of kind; no keys means "any".
func (q *changeQueue) add(kind string, keys []string) {
	q.mu.Lock()
	cur, seen := q.pending[kind]
	switch {
	case seen && cur == nil: // "any" already
	case len(keys) == 0:
		q.pending[kind] = nil
	default:
		if cur == nil {
			cur = map[string]bool{}
			q.pending[kind] = cur
		}
		for _, k := range keys {
			cur[k] = true
		}
	}
	q.mu.Unlock()
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

// take waits for pending changes and returns them, resync first, or nil
// when ctx is done.
func (q *changeQueue) take(ctx context.Context) []store.Change {
	select {
	case <-ctx.Done():
		return nil
	case <-q.kick:
	}
	q.mu.Lock()
	batch := q.pending
	q.pending = map[string]map[string]bool{}
	q.mu.Unlock()
	kinds := slices.Sorted(maps.Keys(batch))
	if _, ok := batch[store.ChangeResync]; ok {
		kinds = append([]string{store.ChangeResync}, slices.DeleteFunc(kinds, func(k string) bool { return k == store.ChangeResync })...)
	}
	out := make([]store.Change, 0, len(kinds))
	for _, kind := range kinds {
		c := store.Change{Kind: kind}
		if keys := batch[kind]; keys != nil {
			c.Keys = slices.Sorted(maps.Keys(keys))
		}
		out = append(out, c)
	}
	return out
}

// tell queues a change for the other replicas. Changes queued while one
// is being sent go out together in the next. No keys tells "any".
func (rp *replicas) tell(kind string, keys ...string) {
	if rp.shared == nil {
		return
	}
	rp.out.add(kind, keys)
}

// maxKeys bounds the keys of one change; past it the change says "any"
// (a notification carries at most 8,000 bytes).
const maxKeys = 100

// send sends queued changes until ctx is done.
func (rp *replicas) send(ctx context.Context, log func(msg string, args ...any)) {
	for {
		batch := rp.out.take(ctx)
		if batch == nil {
			return
		}
		for _, c := range batch {
			c.Origin = rp.origin
			if len(c.Keys) > maxKeys {
				c.Keys = nil
			}
			if err := rp.shared.Broadcast(ctx, c); err != nil && ctx.Err() == nil {
				// The others resync when their listening connection
				// comes back; a failed send here means the database is
				// unreachable for them too.
				log("tell replicas", "kind", c.Kind, "err", err)
			}
		}
	}
}

// sharedLock takes a lock shared by every replica; alone it is a no-op (the
// caller's own mutex is enough). When the lock cannot be had within 30 s
// (the database is unreachable, or so busy that the locks queue) it
// returns an EUNAVAILABLE error, and the caller must change nothing: going
// on without the lock could lose another replica's change to the same
// record.
func (s *Server) sharedLock(ctx context.Context, name string) (func(), error) {
	if s.rep.shared == nil {
		return func() {}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	unlock, err := s.rep.shared.Lock(ctx, name)
	if err != nil {
		s.log.Warn("replica lock", "lock", name, "err", err)
		return nil, &api.Error{Code: api.EUNAVAILABLE, Message: "the server is busy: try again", RetryAfter: 5}
	}
	return unlock, nil
}

// runReplicas sends this replica's changes and applies the others' until
// ctx is done. Alone it returns at once.
func (s *Server) runReplicas(ctx context.Context) {
	if s.rep.shared == nil {
		return
	}
	var wg sync.WaitGroup
	wg.Go(func() { s.rep.send(ctx, s.log.Warn) })
	// Changes are applied on their own goroutine, merged while one batch
	// is applied, so a burst of notifications costs a few passes.
	wg.Go(func() {
		for {
			batch := s.rep.in.take(ctx)
			if batch == nil {
				return
			}
			for _, c := range batch {
				s.applyChange(ctx, c)
			}
		}
	})
	wg.Go(func() {
		err := s.rep.shared.Listen(ctx, func(c store.Change) {
			if c.Origin == s.rep.origin {
				return
			}
			s.rep.in.add(c.Kind, c.Keys) // no keys: any of the kind
		})
		if err != nil && ctx.Err() == nil {
			s.log.Error("listen to replicas", "err", err)
		}
	})
	wg.Wait()
}

// lead runs work while this replica leads, until ctx is done: alone at
// once; shared, after it took the leadership, and again after it lost
// and took it back.
func (s *Server) lead(ctx context.Context, work func(ctx context.Context)) {
	if s.rep.shared == nil {
		work(ctx)
		return
	}
	for ctx.Err() == nil {
		lctx, release, err := s.rep.shared.Lead(ctx, leaderLock)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("leadership", "err", err)
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
			}
			continue
		}
		s.log.Info("leading: this replica publishes events, drives rollouts and runs retention and termination timers")
		s.rep.leader.Store(true)
		// What the leader before may have left half done: the rollouts
		// and devices as they are stored now.
		s.applyChange(lctx, store.Change{Kind: store.ChangeResync})
		work(lctx)
		s.rep.leader.Store(false)
		s.stopTimers()
		release()
		if ctx.Err() == nil {
			s.log.Warn("leadership lost; waiting to lead again")
		}
	}
}

// applyChange brings what this replica keeps in memory in step with a
// change another replica committed, and wakes what waits on it.
func (s *Server) applyChange(ctx context.Context, c store.Change) {
	var err error
	switch c.Kind {
	case store.ChangeResync:
		err = errors.Join(s.res.loadCandidates(ctx), s.res.loadDocuments(ctx), s.reloadRollouts(ctx, nil))
		s.res.params.forget("")
		s.res.invalidateResolutions()
		s.devices.reset()
		s.hub.notifyAll()
		s.remoteEvents()
	case store.ChangeDocuments:
		err = s.remoteDocuments(ctx, c.Keys)
	case store.ChangeBuilds:
		err = s.res.loadCandidates(ctx)
		if c.Keys == nil || slices.Contains(c.Keys, "removed") {
			s.res.invalidateResolutions()
			s.hub.notifyAll()
		}
	case store.ChangeParams:
		if c.Keys == nil || slices.Contains(c.Keys, "") {
			s.res.params.forget("")
			s.res.invalidateResolutions()
			s.hub.notifyAll()
			break
		}
		for _, id := range c.Keys {
			s.res.params.forget(id)
		}
		s.invalidateDevices(c.Keys)
	case store.ChangeDevices:
		err = s.remoteDevices(ctx, c.Keys)
	case store.ChangeEvents:
		s.remoteEvents()
	case store.ChangeRollouts:
		err = s.reloadRollouts(ctx, c.Keys)
	case store.ChangeTrust:
		// The trust repository reads the store on every request.
	}
	if err != nil && ctx.Err() == nil {
		s.log.Warn("apply a change of another replica", "kind", c.Kind, "err", err)
	}
}

// remoteDocuments reads documents another replica wrote. A device's own
// document concerns that device only; a group's may move any device, so
// then every resolution is computed again when next asked (devices with
// the same inputs share one).
func (s *Server) remoteDocuments(ctx context.Context, keys []string) error {
	// Not in the middle of this replica's own document write, which
	// reads the documents, changes them and sets them.
	s.docMu.Lock()
	defer s.docMu.Unlock()
	var ids []string
	for _, k := range keys {
		kind, id, _ := strings.Cut(k, "/")
		if kind != api.DocDevice {
			ids = nil
			break
		}
		ids = append(ids, id)
	}
	if ids == nil {
		if err := s.res.loadDocuments(ctx); err != nil {
			return err
		}
		s.res.invalidateResolutions()
		s.hub.notifyAll()
	} else {
		set := s.res.documents()
		for _, k := range keys {
			d, err := s.store.Document(ctx, k)
			switch {
			case errors.Is(err, store.ErrNotFound):
				set = set.Without([]string{k})
			case err != nil:
				return err
			default:
				if set, err = set.Without([]string{k}).With([]api.Document{d}, ""); err != nil {
					return err
				}
			}
		}
		s.res.setDocuments(set)
		s.invalidateDevices(ids)
	}
	if keys != nil {
		s.documentsStored(keys)
	}
	return nil
}

// Marks on the device keys of a ChangeDevices: inputsKey, the device's
// tags or labels changed (its resolution must be computed again and its
// long-poll woken); timerKey, its termination waits for a keepalive to
// lapse (the leader keeps the timer).
const (
	inputsKey = "!"
	timerKey  = "~"
)

// remoteDevices reads device records another replica wrote.
func (s *Server) remoteDevices(ctx context.Context, keys []string) error {
	if keys == nil {
		s.devices.reset()
		s.res.invalidateResolutions()
		s.hub.notifyAll()
		s.wakeRollouts()
		return nil
	}
	leading := s.rep.leading()
	for _, k := range keys {
		id, inputs := strings.CutPrefix(k, inputsKey)
		if inputs {
			s.invalidateDevices([]string{id})
			continue // its plain key comes too
		}
		id, timer := strings.CutPrefix(id, timerKey)
		if timer && !leading {
			continue
		}
		if leading {
			s.rolloutReport(id)
		}
		// The record is read only by those who keep it: the page's
		// index once loaded, the leader for keepalive timers.
		if !timer && !s.devices.isLoaded() {
			continue
		}
		d, err := s.store.Device(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			s.devices.drop(id)
			continue
		}
		if err != nil {
			return err
		}
		s.devices.put(d)
		// A keepalive set through another replica holds a termination
		// until it lapses: the leader's timer moves it on then.
		if t := d.Termination; timer && t != nil && t.State == api.TerminationRequested && d.Keepalive != nil && !d.Keepalive.Forever {
			s.wakeAt(id, d.Keepalive.Until)
		}
	}
	return nil
}

// remoteEvents wakes this replica's event followers and, on the leader,
// the publisher: another replica stored events.
func (s *Server) remoteEvents() {
	s.hub.notify(eventsKey)
	if s.ev.pub != nil && s.rep.leading() {
		s.ev.pub.Wake()
	}
}

// reloadRollouts reads the named rollouts (nil: every active one) from
// the store into the index, and wakes the devices whose documents they
// change and the driver.
func (s *Server) reloadRollouts(ctx context.Context, names []string) error {
	// Not in the middle of this replica's own change of a rollout (read,
	// save, index): what is read here is then never older than the index.
	s.ro.op.Lock()
	defer s.ro.op.Unlock()
	var list []api.Rollout
	if names == nil {
		var err error
		if list, err = s.store.Rollouts(ctx, api.RolloutRunning, api.RolloutPaused, api.RolloutAborted); err != nil {
			return err
		}
		s.ro.mu.Lock()
		for n := range s.ro.byName {
			if !slices.ContainsFunc(list, func(r api.Rollout) bool { return r.Name == n }) {
				names = append(names, n) // ended meanwhile: read it to drop it
			}
		}
		s.ro.mu.Unlock()
	}
	for _, n := range names {
		r, err := s.store.Rollout(ctx, n)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		list = append(list, r)
	}
	for i := range list {
		r := &list[i]
		var wake []string
		if old, ok := s.rolloutOf(r.Name); ok {
			wake = rollout.Staged(&old)
		}
		wake = append(wake, rollout.Staged(r)...)
		s.keepRollout(r)
		slices.Sort(wake)
		s.invalidateDevices(slices.Compact(wake))
	}
	s.wakeRollouts()
	return nil
}
