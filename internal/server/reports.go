package server

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/store"
)

const (
	maxReport     = 8 << 20
	maxEventBatch = 1000
	maxEventsBody = 16 << 20
	maxStateBody  = 4 << 20
)

func (s *Server) handleReport(w http.ResponseWriter, r *http.Request, p peer) error {
	if v := s.quota.report(p.name); v.Admit == 0 {
		return s.overQuota(r.Context(), p.name, "reports", v)
	}
	var rep api.Report
	if err := readJSON(r, maxReport, &rep); err != nil {
		return err
	}
	for _, t := range rep.Tags {
		if !api.ValidTag(t) {
			return api.Errorf(api.EINVALID, fmt.Sprintf("report: invalid tag %q", t))
		}
	}
	ctx := r.Context()
	id := p.name
	// Outcomes of network checks go to other devices' records once this
	// one's lock is released (network.go).
	defer s.netResults(ctx, id, rep.ProbeResults)
	// Reports, keepalives and the termination hook change the same record.
	unlock, err := s.lockDevice(ctx, id)
	if err != nil {
		return err
	}
	defer unlock()
	old, err := s.store.Device(ctx, id)
	isNew := errors.Is(err, store.ErrNotFound)
	if err != nil && !isNew {
		return err
	}
	tags := api.NormalizeTags(rep.Tags)
	d := api.Device{
		ID: id, Tags: tags, Labels: rep.Labels, Facts: rep.Facts, Installed: rep.Installed,
		LastSeen: s.now().UTC(), Applied: rep.Applied, Error: rep.Error, Health: old.Health,
		Services: rep.Services, Addr: remoteHost(r), NetObservations: old.NetObservations, ErrorDigest: rep.ErrorDigest, Init: rep.Init,
	}
	if len(d.Init) > maxInitRecords {
		return api.Errorf(api.EINVALID, fmt.Sprintf("report: %d init records, at most %d", len(d.Init), maxInitRecords))
	}
	if d.Installed == nil {
		d.Installed = []api.InstalledApp{}
	}
	// Keep what the server owns (keepalive, termination); health (node.go).
	nodeEvs, runHook := s.nodeReport(old, &d, rep)
	// Tags and labels decide the resolution (tag match, group selectors):
	// when they change, resolve with the reported ones before they are
	// stored, so the record and its events go in one commit, and keep that
	// resolution for the device's long-poll.
	inputsChanged := isNew || !slices.Equal(old.Tags, tags) || !maps.Equal(old.Labels, d.Labels)
	var res *resolution
	var t ticket
	if inputsChanged {
		t = s.res.ticket(id)
		res, err = s.res.compute(ctx, inputOf(d), s.res.documents())
	} else {
		res, err = s.res.get(ctx, id)
	}
	if err != nil {
		return err
	}
	converged := rep.Error == "" && rep.Applied == res.r.Digest && !res.r.Unset
	wasConverged := !isNew && old.Error == "" && old.Applied == res.r.Digest
	var evs []api.Event
	if isNew {
		evs = append(evs, api.Event{Device: id, Kind: api.KindDeviceSeen, Level: api.LevelInfo, Priority: api.PriorityLow,
			Message: fmt.Sprintf("device %s seen for the first time (%s)", id, strings.Join(tags, ","))})
	}
	if converged && !wasConverged {
		evs = append(evs, api.Event{Device: id, Kind: api.KindConverged, Level: api.LevelInfo, Priority: api.PriorityLow,
			Message: fmt.Sprintf("device %s converged", id)})
	}
	evs = append(evs, nodeEvs...)
	evs = append(evs, s.applyNetwork(&d, old.Services)...) // network.go
	if err := s.commit(ctx, store.Write{Device: &d, Events: evs}); err != nil {
		return err
	}
	if inputsChanged {
		s.res.swap(t, res)
		s.hub.notify(id)
		s.rep.tell(store.ChangeDevices, inputsKey+id)
	}
	if runHook {
		s.startHook(d) // after this report's events
	}
	s.rolloutReport(id)
	writeJSON(w, http.StatusOK, api.ReportResponse{Desired: res.r.Digest, Probes: s.probesFor(ctx, d)})
	return nil
}

// emit stores events and wakes event followers.
func (s *Server) emit(ctx context.Context, evs ...api.Event) error {
	return s.commit(ctx, store.Write{Events: evs})
}

// commit stores a change and the events that describe it in one
// transaction, then wakes event followers and hands the events to hooks
// and the publisher.
func (s *Server) commit(ctx context.Context, w store.Write) error {
	now := s.now().UTC()
	for i := range w.Events {
		if w.Events[i].Time.IsZero() {
			w.Events[i].Time = now
		}
		if err := w.Events[i].Normalize(); err != nil {
			return api.Errorf(api.EINVALID, fmt.Sprintf("event: %v", err))
		}
	}
	stored, err := s.store.Commit(ctx, w)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	if w.Device != nil {
		s.devices.put(*w.Device)
		s.rep.tell(store.ChangeDevices, w.Device.ID)
		// The leader keeps the timer of a termination held by a timed
		// keepalive (told after the commit, so it reads this record).
		if t, k := w.Device.Termination, w.Device.Keepalive; t != nil && t.State == api.TerminationRequested && k != nil && !k.Forever {
			s.rep.tell(store.ChangeDevices, timerKey+w.Device.ID)
		}
	}
	for _, id := range w.RemoveDevices {
		s.devices.drop(id)
	}
	if len(w.RemoveDevices) > 0 {
		s.rep.tell(store.ChangeDevices, w.RemoveDevices...)
	}
	if keys := documentKeys(w); len(keys) > 0 {
		s.rep.tell(store.ChangeDocuments, keys...)
	}
	if len(stored) > 0 {
		s.hub.notify(eventsKey)
		s.eventsStored(stored)
		s.rep.tell(store.ChangeEvents)
	}
	return nil
}

// documentKeys are the keys of the documents a write puts or removes.
func documentKeys(w store.Write) []string {
	keys := slices.Clone(w.RemoveDocuments)
	for _, d := range w.Documents {
		keys = append(keys, d.Key())
	}
	return keys
}

// minPollTimeout is the shortest long-poll an agent may ask for: a
// shorter one would make its heartbeat a busy loop.
const minPollTimeout = time.Second

// pollTimeout is how long a long-poll may wait: the server's poll timeout,
// or less when the agent asks for less (?timeout=30s), so that the poll
// ends when the agent's heartbeat is due and the agent reports over the
// same connection instead of opening another.
func (s *Server) pollTimeout(v string) (time.Duration, error) {
	if v == "" {
		return s.cfg.PollTimeout, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, api.Errorf(api.EINVALID, fmt.Sprintf("timeout %q: want a duration such as 30s", v))
	}
	return min(max(d, minPollTimeout), s.cfg.PollTimeout), nil
}

func (s *Server) handleDesired(w http.ResponseWriter, r *http.Request, p peer) error {
	id := r.PathValue("id")
	after := r.URL.Query().Get("after")
	wait := r.URL.Query().Get("wait") == "1"
	timeout, err := s.pollTimeout(r.URL.Query().Get("timeout"))
	if err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		mine, all := s.hub.wait(id)
		res, err := s.res.get(r.Context(), id)
		if err != nil {
			return err
		}
		if !wait || res.r.Digest != after {
			writeJSON(w, http.StatusOK, res.r)
			return nil
		}
		// Over HTTP/1.1 the poll waits with no goroutine (park.go).
		res = nil
		if s.park(w, r, id, after, deadline) {
			return nil
		}
		select {
		case <-mine:
		case <-all:
		case <-timer.C:
			res, err := s.res.get(r.Context(), id)
			if err != nil {
				return err
			}
			writeJSON(w, http.StatusOK, res.r)
			return nil
		case <-r.Context().Done():
			return r.Context().Err()
		}
	}
}

func (s *Server) handleDeviceEvents(w http.ResponseWriter, r *http.Request, p peer) error {
	var evs []api.Event
	if err := readJSON(r, maxEventsBody, &evs); err != nil {
		return err
	}
	if len(evs) > maxEventBatch {
		return api.Errorf(api.EINVALID, fmt.Sprintf("at most %d events in one call", maxEventBatch))
	}
	for i := range evs {
		if serverKinds[evs[i].Kind] {
			// Hooks, AMQP consumers and metrics trust these kinds to
			// come from the server: a device may not forge them.
			return api.Errorf(api.EINVALID, fmt.Sprintf("event %d: kind %q is the server's; a device may not post it", i, evs[i].Kind))
		}
		evs[i].ID = 0
		evs[i].Device = p.name // a device speaks only for itself
		s.boundEvent(&evs[i])
	}
	sizes := make([]int, len(evs))
	for i, ev := range evs {
		sizes[i] = eventSize(ev)
	}
	v := s.quota.events(p.name, sizes)
	if err := s.emitGrouped(r.Context(), evs[:v.Admit]); err != nil {
		return err
	}
	if v.Admit < len(evs) {
		return s.overQuota(r.Context(), p.name, "events", v)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// eventSize is what an event counts against the byte quota.
func eventSize(ev api.Event) int { return len(ev.Message) + len(ev.Payload) }

// boundEvent makes ev fit the one-event limit: a payload that does not
// fit is dropped (it would not be JSON once cut), then the message cut.
func (s *Server) boundEvent(ev *api.Event) {
	limit := s.quota.cfg.MaxEvent
	if eventSize(*ev) <= limit {
		return
	}
	if len(ev.Payload) > limit/2 {
		note := fmt.Sprintf(" (payload of %d bytes dropped: an event holds at most %d)", len(ev.Payload), limit)
		ev.Payload = nil
		ev.Message = cut(ev.Message, limit-len(note)) + note
	}
	ev.Message = cut(ev.Message, limit-len(ev.Payload))
}

// cut shortens s to at most n bytes without splitting a UTF-8 sequence.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// overQuota answers a device past a quota: 429 with Retry-After, and the
// window's one warning event.
func (s *Server) overQuota(ctx context.Context, device, what string, v quotaVerdict) error {
	if v.Warn {
		if err := s.emit(ctx, api.Event{Device: device, Kind: api.KindQuota, Level: api.LevelWarn, Priority: api.PriorityMedium,
			Message: fmt.Sprintf("device %s is over its %s quota: refused until the window ends in %ds", device, what, v.RetryAfter)}); err != nil {
			s.log.Warn("quota warning event", "device", device, "err", err)
		}
		s.log.Warn("device over quota", "device", device, "quota", what)
	}
	return &api.Error{Code: api.ETOOMANY, RetryAfter: v.RetryAfter, Accepted: v.Admit,
		Message: fmt.Sprintf("device %s is over its %s quota; try again in %ds", device, what, v.RetryAfter)}
}

// serverKinds are the event kinds only the server emits: a device that
// posts one is refused, so an event of these kinds always means what the
// server saw or did (a converged device, a termination, a push...).
var serverKinds = map[string]bool{
	api.KindDeviceSeen: true, api.KindState: true, api.KindPackage: true, api.KindConverged: true,
	api.KindKeepalive: true, api.KindTerminateRequested: true, api.KindTerminateDelayed: true,
	api.KindTerminating: true, api.KindTerminated: true, api.KindHookFailed: true,
	api.KindTerminateCleared: true, KindOutbox: true, api.KindQuota: true,
	api.KindRolloutStarted: true, api.KindRolloutWave: true, api.KindRolloutPaused: true, api.KindRolloutResumed: true,
	api.KindRolloutFailed: true, api.KindRolloutDone: true, api.KindRolloutAborted: true,
}
