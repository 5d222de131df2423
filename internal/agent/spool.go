package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/atomicfile"
)

// maxPending bounds the events kept while the server is away.
const maxPending = 10000

// eventQueue is the agent's events on their way to the server: in
// memory, in order, and in the spool on disk, so they survive an agent
// restart. It has its own lock; nothing else of the agent's is held while
// it sends.
type eventQueue struct {
	log *slog.Logger
	now func() time.Time

	mu        sync.Mutex
	pending   []api.Event
	dropped   int       // events dropped for maxPending, to say so
	spool     *spool    // pending, on disk
	holdUntil time.Time // the server asked for no events before this (429)
	// flushMu keeps two flushes from sending the same events twice.
	flushMu sync.Mutex
}

// openQueue opens the spool in dir and queues the events it holds.
func openQueue(dir string, log *slog.Logger, now func() time.Time) (*eventQueue, error) {
	sp, unsent, err := openSpool(dir)
	if err != nil {
		return nil, err
	}
	return &eventQueue{log: log, now: now, spool: sp, pending: unsent}, nil
}

// add queues ev, dropping the oldest past maxPending.
func (q *eventQueue) add(ev api.Event) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.pending) >= maxPending {
		q.pending = q.pending[1:]
		q.dropped++
		q.rewriteLocked()
	}
	q.pending = append(q.pending, ev)
	if err := q.spool.add(ev); err != nil {
		q.log.Warn("event spool", "err", err)
	}
}

// len is how many events wait.
func (q *eventQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.pending)
}

// rewriteLocked makes the spool hold exactly q.pending; q.mu is held.
func (q *eventQueue) rewriteLocked() {
	if err := q.spool.rewrite(q.pending); err != nil {
		q.log.Warn("event spool", "err", err)
	}
}

// flush sends the queued events in batches with send; on failure the
// rest stay queued. A warning made by droppedEvent(n) goes last when
// events were dropped. Past a server quota (429) the events the server
// accepted leave the queue and the rest wait until its Retry-After.
func (q *eventQueue) flush(ctx context.Context, send func(context.Context, []api.Event) error, droppedEvent func(n int) api.Event) {
	q.flushMu.Lock()
	defer q.flushMu.Unlock()
	q.mu.Lock()
	evs := q.pending
	dropped := q.dropped
	hold := q.holdUntil
	q.mu.Unlock()
	if q.now().Before(hold) {
		return // over the server's quota: the spool keeps them
	}
	if dropped > 0 {
		evs = append(slices.Clone(evs), droppedEvent(dropped))
	}
	for len(evs) > 0 {
		n := eventBatch(evs)
		err := send(ctx, evs[:n])
		var over *api.Error
		if errors.As(err, &over) && over.Code == api.ETOOMANY {
			// Past a quota: the first Accepted were stored; the rest
			// wait in the spool until Retry-After has passed.
			q.log.Warn("server quota reached: events wait", "retry_after", over.RetryAfter, "waiting", len(evs)-over.Accepted)
			q.mu.Lock()
			q.holdUntil = q.now().Add(time.Duration(max(over.RetryAfter, 1)) * time.Second)
			q.mu.Unlock()
			n = min(max(over.Accepted, 0), n)
		} else if err != nil {
			q.log.Debug("events not sent", "err", err)
			return
		}
		q.mu.Lock()
		q.pending = q.pending[min(n, len(q.pending)):]
		q.rewriteLocked()
		if dropped > 0 {
			q.dropped = 0
			dropped = 0
		}
		q.mu.Unlock()
		evs = evs[n:]
		if err != nil {
			return
		}
	}
}

// spool keeps the agent's unsent events on disk, so that an event the
// agent took (a `drover log` answered "queued", a step's outcome) survives
// an agent restart while the server is away. One JSON event per line in
// <home>/system/events.jsonl: appended as events are queued, rewritten
// when the server has taken some.
type spool struct {
	path string
}

// openSpool opens the spool and returns the events it holds, oldest first.
// A torn last line (a crash mid-write) is dropped.
func openSpool(dir string) (*spool, []api.Event, error) {
	path := filepath.Join(dir, "events.jsonl")
	var evs []api.Event
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, nil, fmt.Errorf("read event spool: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var ev api.Event
		if json.Unmarshal(sc.Bytes(), &ev) == nil && ev.Kind != "" {
			evs = append(evs, ev)
		}
	}
	s := &spool{path: path}
	if err := s.rewrite(evs); err != nil {
		return nil, nil, err
	}
	return s, evs, nil
}

// add appends one event. The agent goes on without the spool if the disk
// refuses: the event is still queued in memory. The file is not kept
// open: an agent holds no descriptor for it between events (thousands of
// agents in one process, in the benchmarks, would run out).
func (s *spool) add(ev api.Event) error {
	line, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(s.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(append(line, '\n'))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// rewrite replaces the spool's content with evs (atomicfile, so a crash
// leaves the old or the new list).
func (s *spool) rewrite(evs []api.Event) error {
	var buf bytes.Buffer
	for _, ev := range evs {
		line, err := json.Marshal(ev)
		if err != nil {
			return err
		}
		buf.Write(line)
		buf.WriteByte('\n')
	}
	if err := atomicfile.WriteFile(s.path, buf.Bytes(), 0o600); err != nil {
		return fmt.Errorf("event spool: %w", err)
	}
	return nil
}
