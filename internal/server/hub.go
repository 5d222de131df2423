package server

import "sync"

// eventsKey is the hub key woken by every new event.
const eventsKey = "\x00events"

// hub wakes long-polls. A waiter takes the key's current channel before it
// looks at the state, so a change between the look and the wait is never
// missed: the change closes the channel it holds.
type hub struct {
	mu    sync.Mutex
	chans map[string]chan struct{}
	all   chan struct{} // closed on a change that concerns every key
	// watchers are called, once, at the next change of their key or of
	// everything: waiters that hold no goroutine (park.go).
	watchers map[string]map[*watcher]struct{}
}

type watcher struct{ fn func() }

func newHub() *hub {
	return &hub{chans: map[string]chan struct{}{}, all: make(chan struct{}), watchers: map[string]map[*watcher]struct{}{}}
}

// watch calls fn, in a goroutine of its own and once, at the next change
// of key or of everything, unless stop is called first. As with wait, a
// caller watches before it looks at the state.
func (h *hub) watch(key string, fn func()) (stop func()) {
	w := &watcher{fn: fn}
	h.mu.Lock()
	set, ok := h.watchers[key]
	if !ok {
		set = map[*watcher]struct{}{}
		h.watchers[key] = set
	}
	set[w] = struct{}{}
	h.mu.Unlock()
	return func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if set, ok := h.watchers[key]; ok {
			delete(set, w)
			if len(set) == 0 {
				delete(h.watchers, key)
			}
		}
	}
}

// fire starts the watchers of set; h.mu is held.
func fire(set map[*watcher]struct{}) {
	for w := range set {
		go w.fn()
	}
}

// wait returns channels closed at the next change of key, and at the next
// change of everything.
func (h *hub) wait(key string) (<-chan struct{}, <-chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ch, ok := h.chans[key]
	if !ok {
		ch = make(chan struct{})
		h.chans[key] = ch
	}
	return ch, h.all
}

// notify wakes the waiters of key.
func (h *hub) notify(key string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if ch, ok := h.chans[key]; ok {
		close(ch)
		delete(h.chans, key)
	}
	if set, ok := h.watchers[key]; ok {
		fire(set)
		delete(h.watchers, key)
	}
}

// notifyAll wakes every waiter (a package push may change any device's
// resolution).
func (h *hub) notifyAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	close(h.all)
	h.all = make(chan struct{})
	for key, set := range h.watchers {
		fire(set)
		delete(h.watchers, key)
	}
}
