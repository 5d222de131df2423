package service

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Console logs. A service's stdout and stderr are the write ends of two
// FIFOs in run/ (stdout.fifo, stderr.fifo), opened read-write for the
// service so that it never gets SIGPIPE: while no supervisor reads (an
// agent restart), its output waits in the pipe and, once the pipe is
// full, its writes wait too. The supervisor copies each FIFO into
// console/stdout.log and console/stderr.log, and rotates those files by
// size itself, at line boundaries: nothing is lost or written twice, and
// the service is never restarted for it. A supervisor that does not
// stay (Config.Detached: standalone installs) hands the service the log
// files themselves, with no rotation.

// rotator appends to a console file and rotates it: a file that reached
// max bytes is renamed NAME.1 (NAME.1 to NAME.2, ... NAME.keep is
// dropped) before the next line is written. A line longer than max
// bytes is written whole.
type rotator struct {
	path string
	max  int64
	keep int

	mu        sync.Mutex
	f         *os.File
	size      int64
	lineStart bool // the file ends at a line boundary
	refs      int  // copiers writing; the file is closed at 0
}

func newRotator(path string, max int64, keep int) *rotator {
	return &rotator{path: path, max: max, keep: keep}
}

func (r *rotator) open() error {
	f, err := os.OpenFile(r.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND|syscall.O_NOFOLLOW, 0o640)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	r.f, r.size, r.lineStart = f, fi.Size(), true
	if r.size > 0 {
		var last [1]byte
		if _, err := f.ReadAt(last[:], r.size-1); err == nil {
			r.lineStart = last[0] == '\n'
		}
	}
	return nil
}

// acquire and release count the copiers writing through r.
func (r *rotator) acquire() {
	r.mu.Lock()
	r.refs++
	r.mu.Unlock()
}

func (r *rotator) release() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.refs--; r.refs == 0 && r.f != nil {
		r.f.Close()
		r.f = nil
	}
}

// Write appends p, rotating first at a line boundary when the file is
// full.
func (r *rotator) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	written := 0
	for len(p) > 0 {
		if r.f == nil {
			if err := r.open(); err != nil {
				return written, err
			}
		}
		if r.size >= r.max && r.lineStart {
			if err := r.rotate(); err != nil {
				return written, err
			}
			continue
		}
		n := len(p)
		if r.size+int64(n) > r.max {
			// Cut after the last line that fits; else start a new file
			// at this line boundary; else (a line longer than max, or
			// one begun in this file) write up to its end here.
			room := max(r.max-r.size, 0)
			if i := bytes.LastIndexByte(p[:min(int64(n), room)], '\n'); i >= 0 {
				n = i + 1
			} else if r.lineStart && r.size > 0 {
				if err := r.rotate(); err != nil {
					return written, err
				}
				continue
			} else if i := bytes.IndexByte(p, '\n'); i >= 0 {
				n = i + 1
			}
		}
		m, err := r.f.Write(p[:n])
		written += m
		r.size += int64(m)
		if m > 0 {
			r.lineStart = p[m-1] == '\n'
		}
		if err != nil {
			return written, err
		}
		p = p[n:]
	}
	return written, nil
}

// rotate shifts NAME.i to NAME.i+1, NAME to NAME.1 and starts a new
// NAME. r.mu is held.
func (r *rotator) rotate() error {
	r.f.Close()
	r.f = nil
	_ = os.Remove(r.path + "." + strconv.Itoa(r.keep))
	for i := r.keep - 1; i >= 1; i-- {
		if err := os.Rename(r.path+"."+strconv.Itoa(i), r.path+"."+strconv.Itoa(i+1)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("rotate %s: %w", r.path, err)
		}
	}
	if err := os.Rename(r.path, r.path+".1"); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("rotate %s: %w", r.path, err)
	}
	// Files past keep, left by a larger keep before.
	for i := r.keep + 1; ; i++ {
		if err := os.Remove(r.path + "." + strconv.Itoa(i)); err != nil {
			break
		}
	}
	return r.open()
}

// consoleStreams are the console files of a service.
var consoleStreams = []string{"stdout", "stderr"}

// consoles are a supervised service's rotators, one per stream, and the
// read ends of its FIFOs being copied.
type consoles struct {
	rot     map[string]*rotator
	mu      sync.Mutex
	readers []*os.File
}

func consoleLimits(sp Spec) (maxSize int64, keep int) {
	maxSize, keep = sp.ConsoleMax, sp.ConsoleKeep
	if maxSize <= 0 {
		maxSize = 10_000_000
	}
	if keep <= 0 {
		keep = 5
	}
	return maxSize, keep
}

func (s *Supervisor) newConsoles(dir string, sp Spec) *consoles {
	maxSize, keep := consoleLimits(sp)
	c := &consoles{rot: map[string]*rotator{}}
	for _, name := range consoleStreams {
		c.rot[name] = newRotator(filepath.Join(dir, "console", name+".log"), maxSize, keep)
	}
	return c
}

// limits applies sp's rotation settings from the next write on.
func (c *consoles) limits(sp Spec) {
	maxSize, keep := consoleLimits(sp)
	for _, r := range c.rot {
		r.mu.Lock()
		r.max, r.keep = maxSize, keep
		r.mu.Unlock()
	}
}

// childFiles returns the files to give a new process as stdout and
// stderr, and starts copying what it writes; done is closed when the
// copies reach the end of the output (every writer gone). The caller
// closes the returned files once the process has them.
func (s *Supervisor) childFiles(p *supervised, dir string) (out []*os.File, done <-chan struct{}, err error) {
	if s.cfg.Detached {
		for _, name := range consoleStreams {
			f, err := os.OpenFile(filepath.Join(dir, "console", name+".log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
			if err != nil {
				closeAll(out)
				return nil, nil, err
			}
			out = append(out, f)
		}
		ch := make(chan struct{})
		close(ch)
		return out, ch, nil
	}
	var readers []*os.File
	for _, name := range consoleStreams {
		fifo := filepath.Join(dir, "run", name+".fifo")
		if fi, err := os.Lstat(fifo); err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
			_ = os.Remove(fifo)
			if err := syscall.Mkfifo(fifo, 0o600); err != nil {
				closeAll(out)
				closeAll(readers)
				return nil, nil, fmt.Errorf("console fifo: %w", err)
			}
		}
		// The read end first, non-blocking (a FIFO's open waits for the
		// other end otherwise); then the service's end, read-write.
		r, err := os.OpenFile(fifo, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOFOLLOW, 0)
		if err == nil {
			var w *os.File
			if w, err = os.OpenFile(fifo, os.O_RDWR|syscall.O_NOFOLLOW, 0); err == nil {
				readers, out = append(readers, r), append(out, w)
				continue
			}
			r.Close()
		}
		closeAll(out)
		closeAll(readers)
		return nil, nil, fmt.Errorf("console fifo: %w", err)
	}
	return out, s.copyConsoles(p, readers), nil
}

// adoptConsoles copies the output of an adopted process, if it writes to
// the FIFOs of run/; done is closed at the end of that output.
func (s *Supervisor) adoptConsoles(p *supervised, dir string) <-chan struct{} {
	if s.cfg.Detached {
		return nil
	}
	var readers []*os.File
	for _, name := range consoleStreams {
		fifo := filepath.Join(dir, "run", name+".fifo")
		fi, err := os.Lstat(fifo)
		if err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
			closeAll(readers)
			return nil // started with plain files (an older supervisor)
		}
		r, err := os.OpenFile(fifo, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOFOLLOW, 0)
		if err != nil {
			closeAll(readers)
			return nil
		}
		readers = append(readers, r)
	}
	return s.copyConsoles(p, readers)
}

// copyConsoles copies each reader (stdout, stderr) into its rotator until
// its end; the channel is closed when both are done.
func (s *Supervisor) copyConsoles(p *supervised, readers []*os.File) <-chan struct{} {
	c := p.cons
	c.mu.Lock()
	c.readers = append(c.readers, readers...)
	c.mu.Unlock()
	done := make(chan struct{})
	var wg sync.WaitGroup
	for i, r := range readers {
		rot := c.rot[consoleStreams[i]]
		rot.acquire()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer rot.release()
			buf := make([]byte, 64<<10)
			for {
				n, err := r.Read(buf)
				if n > 0 {
					if _, werr := rot.Write(buf[:n]); werr != nil {
						s.log.Warn("console", "service", p.spec.Coordinate, "err", werr)
					}
				}
				if err != nil {
					break // the end of the output, or closed by Close
				}
			}
			c.mu.Lock()
			for j, x := range c.readers {
				if x == r {
					c.readers = append(c.readers[:j], c.readers[j+1:]...)
					break
				}
			}
			c.mu.Unlock()
			r.Close()
		}()
	}
	go func() {
		wg.Wait()
		close(done)
	}()
	return done
}

// stop stops copying (the supervisor closes): what the service writes
// from now on waits in its FIFO for the next supervisor.
func (c *consoles) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range c.readers {
		_ = r.SetReadDeadline(time.Now()) // ends a Read in progress
	}
}

// drained waits up to d for done (the copies of a process's output) so
// that a message quoting the console has its last lines.
func drained(done <-chan struct{}, d time.Duration) {
	if done == nil {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

func closeAll(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}
