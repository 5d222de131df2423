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
)

// spool keeps the agent's unsent events on disk, so that an event the
// agent took (a `drover log` answered "queued", a step's outcome) survives
// an agent restart while the server is away. One JSON event per line in
// <home>/system/events.jsonl: appended as events are queued, rewritten
// when the server has taken some.
type spool struct {
	path string
	f    *os.File // open for appending; nil if the file could not be opened
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
// refuses: the event is still queued in memory.
func (s *spool) add(ev api.Event) error {
	if s.f == nil {
		return errors.New("event spool is not open")
	}
	line, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	_, err = s.f.Write(append(line, '\n'))
	return err
}

// rewrite replaces the spool's content with evs (temp file and rename, so
// a crash leaves the old or the new list) and reopens it for appending.
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
	tmp := s.path + ".tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), 0o600); err != nil {
		return fmt.Errorf("write event spool: %w", err)
	}
	if err := os.Rename(tmp, s.path); err != nil {
		return fmt.Errorf("write event spool: %w", err)
	}
	if s.f != nil {
		s.f.Close()
	}
	f, err := os.OpenFile(s.path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		s.f = nil
		return fmt.Errorf("open event spool: %w", err)
	}
	s.f = f
	return nil
}
