package agent

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/atomicfile"
)

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
