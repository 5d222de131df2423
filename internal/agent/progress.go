package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/drover-dev/drover/internal/api"
)

// KindStepProgress reports bytes and files done of a step's downloads.
const KindStepProgress = "step-progress"

// progressEvery is the least time between two progress events of this
// device: at most 4 a second, whatever the number of downloads.
const progressEvery = 250 * time.Millisecond

// Progress is the payload of a step-progress event: how far the phase
// ("download" of the blobs the cache lacks, or "install" of the files)
// is, in bytes of file content and in files. The totals are the phase's
// whole from its first event on.
type Progress struct {
	Phase      string `json:"phase"` // "download" or "install"
	BytesDone  int64  `json:"bytes_done"`
	BytesTotal int64  `json:"bytes_total"`
	FilesDone  int64  `json:"files_done"`
	FilesTotal int64  `json:"files_total"`
}

// transfer counts one step's downloads.
type transfer struct {
	pkg   string
	sizes map[string]int64 // digest -> size, from the manifest
	mu    sync.Mutex
	p     Progress
}

type transferKey struct{}

// withTransfer returns ctx carrying a progress counter for the step of
// package pkg, whose manifest m gives the blob sizes.
func withTransfer(ctx context.Context, pkg string, m *api.Manifest) context.Context {
	t := &transfer{pkg: pkg, sizes: map[string]int64{}, p: Progress{Phase: "download"}}
	if m != nil {
		for _, f := range m.Files {
			t.sizes[f.Digest] = f.Size
		}
	}
	return context.WithValue(ctx, transferKey{}, t)
}

// progressStart sets the totals of the blobs about to be downloaded.
func (a *Agent) progressStart(ctx context.Context, need []string) {
	t, _ := ctx.Value(transferKey{}).(*transfer)
	if t == nil {
		return
	}
	t.mu.Lock()
	t.p.FilesTotal += int64(len(need))
	for _, d := range need {
		t.p.BytesTotal += t.sizes[d]
	}
	t.mu.Unlock()
	a.events().prog.offer(t, false)
}

// progressReader counts body's bytes into ctx's transfer; at EOF the blob
// counts as one file done.
func (a *Agent) progressReader(ctx context.Context, digest string, body io.Reader) io.Reader {
	t, _ := ctx.Value(transferKey{}).(*transfer)
	if t == nil {
		return body
	}
	return &countingReader{r: body, fn: func(n int64, eof bool) {
		t.mu.Lock()
		if _, known := t.sizes[digest]; known {
			// Bytes count the files' contents, whose sizes the manifest
			// gives, so the total is right from the first event; scripts
			// and templates (no size, small) count as files only.
			t.p.BytesDone += n
		}
		if eof {
			t.p.FilesDone++
		}
		done := t.p.FilesDone >= t.p.FilesTotal
		t.mu.Unlock()
		a.events().prog.offer(t, eof && done)
	}}
}

type countingReader struct {
	r    io.Reader
	fn   func(n int64, eof bool)
	done bool
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if (n > 0 || err == io.EOF) && !c.done {
		c.done = err == io.EOF
		c.fn(int64(n), c.done)
	}
	return n, err
}

// progressSender posts progress events straight to the server, the
// latest state only, at most once per progressEvery: progress is a live
// view, not a record, so it skips the pending queue and is dropped when
// the server is away.
type progressSender struct {
	a    *Agent
	mu   sync.Mutex
	last time.Time
	next *api.Event
	busy bool
	kick chan struct{} // a final event cuts the throttle's wait short
}

func newProgressSender(a *Agent) *progressSender {
	return &progressSender{a: a, kick: make(chan struct{}, 1)}
}

// drain waits, at most a few seconds, until the last offered progress is
// sent, so a step's final progress comes before its step-done.
func (s *progressSender) drain() {
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		idle := !s.busy && s.next == nil
		s.mu.Unlock()
		if idle {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// offer records t's state; it is sent now if the throttle allows, else
// with the next allowed send. final forces it out (the last one of a
// step is never lost to the throttle).
func (s *progressSender) offer(t *transfer, final bool) {
	t.mu.Lock()
	payload, _ := json.Marshal(t.p)
	t.mu.Unlock()
	ev := api.Event{Time: s.a.now().UTC(), Device: s.a.cfg.Device, Kind: KindStepProgress, Level: api.LevelInfo,
		Priority: api.PriorityLow, Package: t.pkg, Message: progressMessage(t), Payload: payload}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.next = &ev
	if s.busy {
		if final {
			select {
			case s.kick <- struct{}{}:
			default:
			}
		}
		return
	}
	wait := progressEvery - time.Since(s.last)
	if final {
		wait = 0
	}
	s.busy = true
	go s.send(max(wait, 0))
}

func (s *progressSender) send(wait time.Duration) {
	if wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-s.kick:
		}
		t.Stop()
	}
	s.mu.Lock()
	ev := s.next
	s.next = nil
	s.last = time.Now()
	s.mu.Unlock()
	if ev != nil {
		s.a.tapEvent(*ev) // drover converge shows it as a bar
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		// Queued events (the step-start this progress belongs to) go
		// first, so a follower sees them in order.
		s.a.flushEvents(ctx)
		if err := s.a.srv.PostEvents(ctx, s.a.cfg.Device, []api.Event{*ev}); err != nil {
			s.a.log.Debug("progress not sent", "err", err)
		}
		cancel()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.next != nil {
		go s.send(progressEvery)
		return
	}
	s.busy = false
}

// installProgress returns the install engine's progress callback for a
// step of package pkg: files and bytes written, as step-progress events
// with phase "install", through the same throttle as downloads.
func (a *Agent) installProgress(pkg string) func(filesDone, filesTotal int, bytesDone, bytesTotal int64) {
	t := &transfer{pkg: pkg, p: Progress{Phase: "install"}}
	return func(filesDone, filesTotal int, bytesDone, bytesTotal int64) {
		t.mu.Lock()
		t.p = Progress{Phase: "install", FilesDone: int64(filesDone), FilesTotal: int64(filesTotal), BytesDone: bytesDone, BytesTotal: bytesTotal}
		t.mu.Unlock()
		a.events().prog.offer(t, filesDone == filesTotal)
	}
}

// progressMessage says where a transfer is, for people reading events:
// "download 3/5 files, 1.2 MB of 4.0 MB".
func progressMessage(t *transfer) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return fmt.Sprintf("%s %d/%d files, %s of %s", t.p.Phase, t.p.FilesDone, t.p.FilesTotal, byteSize(t.p.BytesDone), byteSize(t.p.BytesTotal))
}

// byteSize formats n bytes in decimal units.
func byteSize(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.1f GB", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.1f MB", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1f kB", float64(n)/1e3)
	}
	return fmt.Sprintf("%d B", n)
}
