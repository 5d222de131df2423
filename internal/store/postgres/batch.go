package postgres

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/drover-dev/drover/internal/api"
)

// Group commit. Event writers take turns (the event lock, events.go), and
// a turn costs a commit's log flush plus the round trips inside it, so
// one turn per write caps a server at a few hundred writes a second
// however many devices report at once. The batcher gives every write
// waiting when a turn comes the same turn: one transaction, one pipeline
// (one round trip), one flush. Writes that arrive while a batch runs form
// the next, so a lone write waits for no timer and a crowd shares.
//
// A write the database refuses (a device id with a NUL byte, a key too
// long for its index) fails alone: the batch is rolled back and run again
// without it. Savepoints would keep the others' work instead, but every
// savepoint that writes is a subtransaction, and past 64 of them in one
// transaction PostgreSQL's snapshots overflow and every reader of the
// database slows down; a refusal is rare, a full batch is not.

const (
	// batchWrites and batchEvents bound one batch, so that one
	// transaction's pipeline and lock turn stay short.
	batchWrites = 256
	batchEvents = 2048
)

// errClosed answers writes queued after (or still queued at) Close.
var errClosed = errors.New("store closed")

// Request states: the batcher takes a pending request, its caller
// abandons one (ctx done) that was not taken; whichever is first wins.
const (
	pending int32 = iota
	taken
	abandoned
)

// change is one statement of a write other than its events: it touches
// one row, named by its table and key.
type change struct {
	table int // tableDocuments or tableDevices: the order rows are locked in
	key   string
	sql   string
	args  []any
}

const (
	tableDocuments = iota
	tableDevices
)

// request is one Commit's write waiting for, or in, a batch.
type request struct {
	changes []change
	events  []api.Event // checked; the batch sets their IDs
	state   atomic.Int32
	done    chan result // buffered: the batcher never waits for a caller
}

type result struct {
	events []api.Event
	err    error
}

// batcher is the queue of writes and the goroutine that commits them,
// owned by the Store: started in Open, stopped (after the writes queued
// so far) in Close.
type batcher struct {
	mu     sync.Mutex
	queue  []*request
	closed bool
	wake   chan struct{} // a request was queued (capacity 1)
	stop   chan struct{} // closed by Close
	done   chan struct{} // closed when the goroutine has ended
}

func (s *Store) startBatcher() {
	s.batch = &batcher{wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go s.runBatches()
}

// stopBatcher commits what is queued, then ends the goroutine.
func (s *Store) stopBatcher() {
	b := s.batch
	b.mu.Lock()
	already := b.closed
	b.closed = true
	b.mu.Unlock()
	if !already {
		close(b.stop)
	}
	<-b.done
}

// commitBatched queues r and waits for its batch. A caller whose ctx ends
// while r is still queued gets ctx.Err() and r is never applied; once the
// batcher took r, the caller waits for the batch (one transaction, not
// long) and gets what it did, so ctx.Err() always means "not applied".
func (s *Store) commitBatched(ctx context.Context, r *request) ([]api.Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r.done = make(chan result, 1)
	b := s.batch
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, errClosed
	}
	b.queue = append(b.queue, r)
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default: // already woken
	}
	select {
	case res := <-r.done:
		return res.events, res.err
	case <-ctx.Done():
		if r.state.CompareAndSwap(pending, abandoned) {
			return nil, ctx.Err()
		}
		res := <-r.done
		return res.events, res.err
	}
}

// take removes the next batch from the queue: pending requests in queue
// order up to the bounds, at least one. Abandoned ones are dropped.
func (b *batcher) take() []*request {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []*request
	events := 0
	i := 0
	for ; i < len(b.queue) && len(out) < batchWrites; i++ {
		r := b.queue[i]
		if len(out) > 0 && events+len(r.events) > batchEvents {
			break
		}
		if r.state.CompareAndSwap(pending, taken) {
			out = append(out, r)
			events += len(r.events)
		}
	}
	b.queue = slices.Delete(b.queue, 0, i)
	return out
}

func (s *Store) runBatches() {
	b := s.batch
	defer close(b.done)
	for {
		if reqs := b.take(); len(reqs) > 0 {
			s.runBatch(reqs)
			continue
		}
		select {
		case <-b.wake:
		case <-b.stop:
			// Close: what was queued before it is committed above;
			// nothing can be queued after it.
			for reqs := b.take(); len(reqs) > 0; reqs = b.take() {
				s.runBatch(reqs)
			}
			return
		}
	}
}

// runBatch commits reqs in one transaction and answers each. A write the
// database refused is answered with its error and the rest run again.
func (s *Store) runBatch(reqs []*request) {
	// The batch runs to its end whatever its callers' contexts do (they
	// wait for it); Close waits for it too.
	ctx := context.Background()
	for len(reqs) > 0 {
		failed, err := s.tryBatch(ctx, reqs)
		if err == nil {
			for _, r := range reqs {
				r.done <- result{events: r.events}
			}
			return
		}
		if failed < 0 {
			for _, r := range reqs {
				r.done <- result{err: fmt.Errorf("commit: %w", err)}
			}
			return
		}
		reqs[failed].done <- result{err: fmt.Errorf("commit: %w", err)}
		reqs = slices.Delete(reqs, failed, failed+1)
	}
}

// tryBatch runs reqs as one transaction in one pipeline: BEGIN, every
// write's changes (ordered by row, so that batches of several servers
// lock rows in one order and never deadlock; a row's changes keep their
// queue order, so the last write of a row wins as it would alone), the
// event lock, every write's events in queue order, COMMIT. The lock is
// taken after the changes, so it is held for the event inserts and the
// commit only. On a failure it returns the index of the write to blame,
// or -1 if the failure is the batch's (connection, commit): then nothing
// tells whether it committed, as with any write whose commit got no
// answer.
func (s *Store) tryBatch(ctx context.Context, reqs []*request) (int, error) {
	type step struct {
		owner int    // index in reqs, or -1
		id    *int64 // where an event's ID goes
		tag   string // for owner -1: the command tag wanted
	}
	type ordered struct {
		c     *change
		owner int
	}
	var cs []ordered
	events := 0
	for i, r := range reqs {
		for j := range r.changes {
			cs = append(cs, ordered{&r.changes[j], i})
		}
		events += len(r.events)
	}
	slices.SortStableFunc(cs, func(a, b ordered) int {
		return cmp.Or(cmp.Compare(a.c.table, b.c.table), cmp.Compare(a.c.key, b.c.key))
	})

	b := &pgx.Batch{}
	steps := make([]step, 0, 3+len(cs)+events)
	b.Queue(`BEGIN`)
	steps = append(steps, step{owner: -1})
	for _, o := range cs {
		b.Queue(o.c.sql, o.c.args...)
		steps = append(steps, step{owner: o.owner})
	}
	if events > 0 {
		b.Queue(`SELECT pg_advisory_xact_lock($1)`, s.eventLock)
		steps = append(steps, step{owner: -1})
		outbox := s.outbox.Load()
		for i, r := range reqs {
			for j := range r.events {
				if err := queueEvent(b, &r.events[j], outbox); err != nil {
					return i, err
				}
				steps = append(steps, step{owner: i, id: &r.events[j].ID})
			}
		}
	}
	b.Queue(`COMMIT`)
	steps = append(steps, step{owner: -1, tag: "COMMIT"})

	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return -1, err
	}
	defer conn.Release()
	br := conn.SendBatch(ctx, b)
	failed := -1
	for _, st := range steps {
		if st.id != nil {
			err = br.QueryRow().Scan(st.id)
		} else {
			var ct pgconn.CommandTag
			ct, err = br.Exec()
			if err == nil && st.tag != "" && ct.String() != st.tag {
				err = fmt.Errorf("transaction ended in %s", ct)
			}
		}
		if err != nil {
			failed = st.owner
			break
		}
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		return -1, nil
	}
	// The pipeline stopped at the error; end the transaction it left
	// open (a closed connection is dropped by the pool anyway).
	_, _ = conn.Exec(ctx, `ROLLBACK`)
	if failed >= 0 && refused(err) {
		return failed, err
	}
	return -1, err
}

// refused says whether err is the database refusing a statement's data
// (invalid text, a constraint, a limit), which another try would meet
// again, rather than a failure of the connection or the transaction.
func refused(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || len(pe.Code) < 2 {
		return false
	}
	switch pe.Code[:2] {
	case "22", "23", "54": // data exception, integrity constraint, program limit
		return true
	}
	return false
}

// queueEvent queues the insert of checked event e, setting its ID on
// reading. With the outbox on, the same statement queues the event in
// the outbox: its body is e as JSON, whose ID the database splices in,
// so that neither a second statement nor a second round trip is needed.
func queueEvent(b *pgx.Batch, e *api.Event, outbox bool) error {
	at, ns := splitTime(e.Time)
	args := []any{at, ns, e.Device, e.Kind, e.Level, e.Priority, api.PriorityRank(e.Priority),
		e.Package, e.Message, []byte(e.Payload)}
	if !outbox {
		b.Queue(insertEvent, args...)
		return nil
	}
	c := *e
	c.ID = 0
	body, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	rest, ok := bytes.CutPrefix(body, []byte(`{"id":0`))
	if !ok {
		return errors.New("outbox: event JSON does not start with its id")
	}
	b.Queue(insertEventOutbox, append(args, rest)...)
	return nil
}

// insertEventOutbox is insertEvent that also queues the event in the
// outbox: $11 is its JSON after the id.
const insertEventOutbox = `
	WITH e AS (` + insertEvent + `)
	INSERT INTO outbox (id, body) SELECT id, convert_to('{"id":' || id, 'UTF8') || $11 FROM e RETURNING id`
