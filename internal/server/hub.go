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
}

func newHub() *hub {
	return &hub{chans: map[string]chan struct{}{}, all: make(chan struct{})}
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
}

// notifyAll wakes every waiter (a package push may change any device's
// resolution).
func (h *hub) notifyAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	close(h.all)
	h.all = make(chan struct{})
}
