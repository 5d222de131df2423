package server

import (
	"fmt"
	"math"
	"sync"
	"time"
)

// QuotaConfig bounds what one device certificate can cost the server in
// each window (default one minute): its events, counted in events and in
// bytes, and its reports. Past a quota the server answers 429 with
// Retry-After and stores one warning event per device and window.
type QuotaConfig struct {
	// Events per device and window; default 1,000.
	Events int
	// EventBytes per device and window (message and payload); default
	// 8 MB.
	EventBytes int64
	// MaxEvent bounds one event (message and payload); default 64 KiB. A
	// longer message is cut, a larger payload dropped.
	MaxEvent int
	// Reports per device and window; default 120.
	Reports int
	// Window is the period quotas are counted over; default 1 minute.
	Window time.Duration
}

// withDefaults fills the zero fields.
func (c QuotaConfig) withDefaults() QuotaConfig {
	if c.Events <= 0 {
		c.Events = 1000
	}
	if c.EventBytes <= 0 {
		c.EventBytes = 8_000_000
	}
	if c.MaxEvent <= 0 {
		c.MaxEvent = 64 << 10
	}
	if c.Reports <= 0 {
		c.Reports = 120
	}
	if c.Window <= 0 {
		c.Window = time.Minute
	}
	return c
}

// Validate refuses quotas that could never admit one whole event.
func (c QuotaConfig) Validate() error {
	c = c.withDefaults()
	if c.EventBytes < int64(c.MaxEvent) {
		return fmt.Errorf("event bytes quota %d is less than one event's limit %d", c.EventBytes, c.MaxEvent)
	}
	return nil
}

// quotas counts each device's use in the current window. It is the one
// place quota rules live. Its state is in memory and bounded: only devices
// seen in the last window have an entry, and windows that ended are
// pruned once a window.
type quotas struct {
	cfg QuotaConfig
	now func() time.Time

	mu        sync.Mutex
	devices   map[string]*quotaWindow
	nextPrune time.Time
}

// quotaWindow is one device's use since start.
type quotaWindow struct {
	start   time.Time
	events  int
	bytes   int64
	reports int
	warned  bool // the window's one warning event is stored
}

func newQuotas(cfg QuotaConfig, now func() time.Time) *quotas {
	return &quotas{cfg: cfg.withDefaults(), now: now, devices: map[string]*quotaWindow{}}
}

// window returns the device's current window, starting a new one when the
// last has ended; q.mu is held.
func (q *quotas) window(device string) *quotaWindow {
	now := q.now()
	if now.After(q.nextPrune) {
		for d, w := range q.devices {
			if !now.Before(w.start.Add(q.cfg.Window)) {
				delete(q.devices, d)
			}
		}
		q.nextPrune = now.Add(q.cfg.Window)
	}
	w := q.devices[device]
	if w == nil || !now.Before(w.start.Add(q.cfg.Window)) {
		w = &quotaWindow{start: now}
		q.devices[device] = w
	}
	return w
}

// quotaVerdict is what a device may do now.
type quotaVerdict struct {
	// Admit is how many of the asked-for items fit.
	Admit int
	// RetryAfter is when the window ends, in whole seconds (at least 1);
	// set when not everything fits.
	RetryAfter int
	// Warn is set the first time in a window that something is refused:
	// the caller stores the one warning event.
	Warn bool
}

// refuse fills the refusal part of v for window w; q.mu is held.
func (q *quotas) refuse(w *quotaWindow, v *quotaVerdict) {
	left := w.start.Add(q.cfg.Window).Sub(q.now())
	v.RetryAfter = max(1, int(math.Ceil(left.Seconds())))
	if !w.warned {
		w.warned = true
		v.Warn = true
	}
}

// events admits the longest prefix of a batch of events whose sizes (in
// bytes) fit the device's event quotas, and counts it.
func (q *quotas) events(device string, sizes []int) quotaVerdict {
	q.mu.Lock()
	defer q.mu.Unlock()
	w := q.window(device)
	var v quotaVerdict
	for _, n := range sizes {
		if w.events+1 > q.cfg.Events || w.bytes+int64(n) > q.cfg.EventBytes {
			q.refuse(w, &v)
			return v
		}
		w.events++
		w.bytes += int64(n)
		v.Admit++
	}
	return v
}

// report admits one report, or refuses it.
func (q *quotas) report(device string) quotaVerdict {
	q.mu.Lock()
	defer q.mu.Unlock()
	w := q.window(device)
	var v quotaVerdict
	if w.reports+1 > q.cfg.Reports {
		q.refuse(w, &v)
		return v
	}
	w.reports++
	v.Admit = 1
	return v
}

// tracked is how many devices have a window (for tests of the bound).
func (q *quotas) tracked() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.devices)
}
