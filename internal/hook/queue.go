package hook

import (
	"context"
	"sync"

	"github.com/drover-dev/drover/internal/api"
)

// Queue runs hooks in the background, one event after the other in the
// order they were queued, so a slow hook never blocks whoever emits
// events. It holds at most a fixed number of events; beyond that Add
// refuses and counts the event as dropped.
type Queue struct {
	run    *Runner
	done   func(ev api.Event, results []Result)
	ch     chan queued
	mu     sync.Mutex
	drops  int64
	closed bool
}

type queued struct {
	kind string
	ev   api.Event
}

// NewQueue returns a queue of at most size events for r. done, if not
// nil, is called after each event's hooks ran, on the queue's goroutine.
func NewQueue(r *Runner, size int, done func(ev api.Event, results []Result)) *Queue {
	if size <= 0 {
		size = 1000
	}
	return &Queue{run: r, done: done, ch: make(chan queued, size)}
}

// Add queues ev for the hooks of its kind. It never blocks: when the
// queue is full it returns false and counts a drop.
func (q *Queue) Add(ev api.Event) bool {
	// Listed before taking the lock: the Runner's Ignored callback may
	// emit an event, which may come back here.
	if len(q.run.Hooks(ev.Kind)) == 0 {
		return true // nothing to run: keep the queue for events that have hooks
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return false
	}
	select {
	case q.ch <- queued{ev.Kind, ev}:
		return true
	default:
		q.drops++
		return false
	}
}

// Dropped returns how many events Add refused so far.
func (q *Queue) Dropped() int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.drops
}

// Run runs queued hooks until ctx is done.
func (q *Queue) Run(ctx context.Context) {
	defer func() {
		q.mu.Lock()
		q.closed = true
		q.mu.Unlock()
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case it := <-q.ch:
			res := q.run.Run(ctx, it.kind, it.ev)
			if q.done != nil && len(res) > 0 {
				q.done(it.ev, res)
			}
		}
	}
}
