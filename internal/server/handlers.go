package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/blob"
	"github.com/drover-dev/drover/internal/pkgfile"
	"github.com/drover-dev/drover/internal/pki"
	"github.com/drover-dev/drover/internal/resolve"
	"github.com/drover-dev/drover/internal/store"
)

const (
	maxReport     = 8 << 20
	maxEventBatch = 1000
	maxEventsBody = 16 << 20
	maxStateBody  = 4 << 20
)

func (s *Server) handleReport(w http.ResponseWriter, r *http.Request, p peer) error {
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
	// Reports, keepalives and the termination hook change the same record.
	defer s.lockDevice(id)()
	old, err := s.store.Device(ctx, id)
	isNew := errors.Is(err, store.ErrNotFound)
	if err != nil && !isNew {
		return err
	}
	tags := sortedUnique(rep.Tags)
	d := api.Device{
		ID: id, Tags: tags, Labels: rep.Labels, Facts: rep.Facts, Installed: rep.Installed,
		LastSeen: s.now().UTC(), Applied: rep.Applied, Error: rep.Error, Health: old.Health,
		Services: rep.Services,
	}
	if d.Installed == nil {
		d.Installed = []api.InstalledApp{}
	}
	// Keep what the server owns (keepalive, termination); health (node.go).
	nodeEvs, runHook := s.nodeReport(old, &d, rep)
	tagsChanged := isNew || !slices.Equal(old.Tags, tags)
	var res *resolution
	if tagsChanged {
		// Resolve with the reported tags before they are stored, so the
		// record and its events go in one commit.
		res, err = s.res.with(ctx, id, tags)
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
	if err := s.commit(ctx, store.Write{Device: &d, Events: evs}); err != nil {
		return err
	}
	if tagsChanged {
		s.res.invalidate(id)
		s.hub.notify(id)
	}
	if runHook {
		s.startHook(d) // after this report's events
	}
	writeJSON(w, http.StatusOK, api.ReportResponse{Desired: res.r.Digest})
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
	if len(stored) > 0 {
		s.hub.notify(eventsKey)
		s.eventsStored(stored)
	}
	return nil
}

func (s *Server) handleDesired(w http.ResponseWriter, r *http.Request, p peer) error {
	id := r.PathValue("id")
	after := r.URL.Query().Get("after")
	wait := r.URL.Query().Get("wait") == "1"
	timer := time.NewTimer(s.cfg.PollTimeout)
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
		select {
		case <-mine:
		case <-all:
		case <-timer.C:
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
		if len(evs[i].Message) > 64<<10 {
			evs[i].Message = evs[i].Message[:64<<10]
		}
	}
	if err := s.emit(r.Context(), evs...); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// serverKinds are the event kinds only the server emits: a device that
// posts one is refused, so an event of these kinds always means what the
// server saw or did (a converged device, a termination, a push...).
var serverKinds = map[string]bool{
	api.KindDeviceSeen: true, api.KindState: true, api.KindPackage: true, api.KindConverged: true,
	api.KindKeepalive: true, api.KindTerminateRequested: true, api.KindTerminateDelayed: true,
	api.KindTerminating: true, api.KindTerminated: true, api.KindHookFailed: true,
	api.KindTerminateCleared: true, KindOutbox: true,
}

func (s *Server) handleGetBlob(w http.ResponseWriter, r *http.Request) {
	s.guard(func(w http.ResponseWriter, r *http.Request, p peer) error {
		digest := r.PathValue("digest")
		if !blob.ValidDigest(digest) {
			return api.Errorf(api.EINVALID, fmt.Sprintf("invalid digest %q", digest))
		}
		if p.role != pki.RoleAdmin {
			// A device fetches only what its own desired state refers to.
			res, err := s.res.get(r.Context(), p.name)
			if err != nil {
				return err
			}
			if !res.allowed[digest] {
				return api.Errorf(api.EFORBIDDEN, fmt.Sprintf("blob %s is not part of device %s's desired state", digest, p.name))
			}
		}
		f, err := s.blobs.Open(r.Context(), digest)
		if err != nil {
			return err
		}
		defer f.Close()
		w.Header().Set("Content-Type", "application/octet-stream")
		// Blobs never change: Range requests resume a download.
		w.Header().Set("ETag", `"`+digest+`"`)
		http.ServeContent(w, r, "", time.Time{}, f)
		return nil
	}, func(p peer, r *http.Request) error {
		if p.role != pki.RoleAdmin && p.role != pki.RoleDevice {
			return api.Errorf(api.EFORBIDDEN, fmt.Sprintf("%s %q may not read blobs", p.role, p.name))
		}
		return nil
	})(w, r)
}

func (s *Server) handleMissing(w http.ResponseWriter, r *http.Request, p peer) error {
	var req api.MissingRequest
	if err := readJSON(r, 64<<20, &req); err != nil {
		return err
	}
	out := api.MissingResponse{Missing: []string{}}
	for _, d := range req.Digests {
		if !blob.ValidDigest(d) {
			return api.Errorf(api.EINVALID, fmt.Sprintf("invalid digest %q", d))
		}
		_, err := s.blobs.Stat(r.Context(), d)
		if errors.Is(err, blob.ErrNotFound) {
			out.Missing = append(out.Missing, d)
		} else if err != nil {
			return err
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) handlePutBlob(w http.ResponseWriter, r *http.Request, p peer) error {
	digest := r.PathValue("digest")
	if !blob.ValidDigest(digest) {
		return api.Errorf(api.EINVALID, fmt.Sprintf("invalid digest %q", digest))
	}
	body := http.MaxBytesReader(w, r.Body, s.cfg.MaxBlob)
	if err := s.blobs.Put(r.Context(), digest, body); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return api.Errorf(api.EINVALID, fmt.Sprintf("blob over %d bytes", s.cfg.MaxBlob))
		}
		return fmt.Errorf("store blob %s: %w", digest, err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) handlePush(w http.ResponseWriter, r *http.Request, p peer) error {
	ctx := r.Context()
	data, err := io.ReadAll(io.LimitReader(r.Body, s.cfg.MaxManifest+1))
	if err != nil {
		return api.Errorf(api.EINVALID, fmt.Sprintf("read manifest: %v", err))
	}
	if int64(len(data)) > s.cfg.MaxManifest {
		return api.Errorf(api.EINVALID, fmt.Sprintf("manifest over %d bytes", s.cfg.MaxManifest))
	}
	m, err := pkgfile.DecodeManifest(data)
	if err != nil {
		return api.Errorf(api.EINVALID, err.Error())
	}
	sum := sha256.Sum256(data)
	digest := hex.EncodeToString(sum[:])
	var missing []string
	var size int64
	for _, d := range m.Digests() {
		if _, err := s.blobs.Stat(ctx, d); errors.Is(err, blob.ErrNotFound) {
			missing = append(missing, d)
		} else if err != nil {
			return err
		}
	}
	if len(missing) > 0 {
		return &api.Error{Code: api.ECONFLICT, Message: fmt.Sprintf("%s: %d blobs are not uploaded", m.Coordinate(), len(missing)), Missing: missing}
	}
	for _, f := range m.Files {
		size += f.Size
	}
	// The manifest is a blob too, so agents fetch it by its digest.
	if err := s.blobs.Put(ctx, digest, strings.NewReader(string(data))); err != nil {
		return fmt.Errorf("store manifest: %w", err)
	}
	b := api.Build{
		Coordinate: m.Coordinate().String(), Tags: m.Tags, Digest: digest, Install: m.Install,
		Files: len(m.Files), Size: size, Pushed: s.now().UTC(),
	}
	if b.Tags == nil {
		b.Tags = []string{}
	}
	if err := s.store.PutBuild(ctx, b, data); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return api.Errorf(api.ECONFLICT, fmt.Sprintf("%s with tags [%s] was pushed before with other content; a pushed build never changes: give it a new version",
				b.Coordinate, strings.Join(b.Tags, ",")))
		}
		return err
	}
	if err := s.packagesChanged(ctx); err != nil {
		return err
	}
	if err := s.emit(ctx, api.Event{Kind: api.KindPackage, Level: api.LevelInfo, Priority: api.PriorityLow, Package: b.Coordinate,
		Message: fmt.Sprintf("%s [%s] pushed by %s", b.Coordinate, strings.Join(b.Tags, ","), p.name)}); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, b)
	return nil
}

// packagesChanged reloads the candidates and wakes every agent: any
// device's resolution may have changed.
func (s *Server) packagesChanged(ctx context.Context) error {
	if err := s.res.loadCandidates(ctx); err != nil {
		return err
	}
	s.hub.notifyAll()
	return nil
}

func (s *Server) handlePackages(w http.ResponseWriter, r *http.Request, p peer) error {
	name := r.URL.Query().Get("name")
	if name != "" {
		if _, _, err := api.ParsePackageName(name); err != nil {
			return api.Errorf(api.EINVALID, err.Error())
		}
	}
	builds, err := s.store.Builds(r.Context(), name)
	if err != nil {
		return err
	}
	if builds == nil {
		builds = []api.Build{}
	}
	writeJSON(w, http.StatusOK, builds)
	return nil
}

func (s *Server) handleDeletePackage(w http.ResponseWriter, r *http.Request, p peer) error {
	coord := r.PathValue("coordinate")
	if _, err := api.ParseCoordinate(coord); err != nil {
		return api.Errorf(api.EINVALID, err.Error())
	}
	var tags []string
	if r.URL.Query().Has("tags") {
		tags = []string{}
		for _, t := range strings.Split(r.URL.Query().Get("tags"), ",") {
			if t = strings.TrimSpace(t); t != "" {
				tags = append(tags, t)
			}
		}
		tags = sortedUnique(tags)
	}
	n, err := s.store.DeleteBuilds(r.Context(), coord, tags)
	if errors.Is(err, store.ErrNotFound) {
		return api.Errorf(api.ENOTFOUND, fmt.Sprintf("no build of %s%s", coord, tagsNote(tags)))
	}
	if err != nil {
		return err
	}
	if err := s.packagesChanged(r.Context()); err != nil {
		return err
	}
	if err := s.emit(r.Context(), api.Event{Kind: api.KindPackage, Level: api.LevelInfo, Priority: api.PriorityLow, Package: coord,
		Message: fmt.Sprintf("%s%s removed by %s (%d builds)", coord, tagsNote(tags), p.name, n)}); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]int{"deleted": n})
	return nil
}

func tagsNote(tags []string) string {
	if tags == nil {
		return ""
	}
	return " with tags [" + strings.Join(tags, ",") + "]"
}

// withStatus fills the fields derived from the current resolution.
func (s *Server) withStatus(ctx context.Context, d api.Device) (api.Device, error) {
	res, err := s.res.get(ctx, d.ID)
	if err != nil {
		return d, err
	}
	d.Desired = res.r.Digest
	d.Converged = !res.r.Unset && d.Error == "" && d.Applied == res.r.Digest
	if res.r.Error != "" && d.Error == "" {
		d.Error = res.r.Error
	}
	return d, nil
}

func (s *Server) handleDevices(w http.ResponseWriter, r *http.Request, p peer) error {
	devs, err := s.store.Devices(r.Context())
	if err != nil {
		return err
	}
	out := make([]api.Device, 0, len(devs))
	for _, d := range devs {
		d, err = s.withStatus(r.Context(), d)
		if err != nil {
			return err
		}
		out = append(out, d)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) handleDevice(w http.ResponseWriter, r *http.Request, p peer) error {
	d, err := s.store.Device(r.Context(), r.PathValue("id"))
	if errors.Is(err, store.ErrNotFound) {
		return api.Errorf(api.ENOTFOUND, fmt.Sprintf("no device %q", r.PathValue("id")))
	}
	if err != nil {
		return err
	}
	if d, err = s.withStatus(r.Context(), d); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, d)
	return nil
}

func (s *Server) handleGetState(w http.ResponseWriter, r *http.Request, p peer) error {
	st, err := s.store.Desired(r.Context(), r.PathValue("id"))
	if errors.Is(err, store.ErrNotFound) {
		return api.Errorf(api.ENOTFOUND, fmt.Sprintf("no desired state for device %q", r.PathValue("id")))
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

func (s *Server) handleSetState(w http.ResponseWriter, r *http.Request, p peer) error {
	ctx := r.Context()
	id := r.PathValue("id")
	var st api.DesiredState
	if err := readJSON(r, maxStateBody, &st); err != nil {
		return err
	}
	if st.ID == "" {
		st.ID = id
	}
	if st.ID != id {
		return api.Errorf(api.EINVALID, fmt.Sprintf("state for %q sent to device %q", st.ID, id))
	}
	resolved, err := s.checkState(ctx, &st)
	if err != nil {
		return err
	}
	if err := s.commit(ctx, store.Write{Desired: []api.DesiredState{st}, Events: []api.Event{stateEvent(st, p.name)}}); err != nil {
		return err
	}
	s.res.invalidate(id)
	s.hub.notify(id)
	writeJSON(w, http.StatusOK, resolved)
	return nil
}

// maxStates bounds one bulk state set.
const (
	maxStates     = 20000
	maxStatesBody = 64 << 20
)

// handleSetStates sets the desired states of many devices at once: all
// are checked first, then stored in one transaction with their events,
// so either every device gets its state or none does.
func (s *Server) handleSetStates(w http.ResponseWriter, r *http.Request, p peer) error {
	ctx := r.Context()
	var sts []api.DesiredState
	if err := readJSON(r, maxStatesBody, &sts); err != nil {
		return err
	}
	if len(sts) == 0 || len(sts) > maxStates {
		return api.Errorf(api.EINVALID, fmt.Sprintf("want 1 to %d desired states, got %d", maxStates, len(sts)))
	}
	seen := make(map[string]bool, len(sts))
	out := make([]*api.Resolved, len(sts))
	evs := make([]api.Event, len(sts))
	for i := range sts {
		id := sts[i].ID
		if !pki.ValidName(id) {
			return api.Errorf(api.EINVALID, fmt.Sprintf("state %d: invalid device id %q", i, id))
		}
		if seen[id] {
			return api.Errorf(api.EINVALID, fmt.Sprintf("device %s has two desired states", id))
		}
		seen[id] = true
		res, err := s.checkState(ctx, &sts[i])
		if err != nil {
			var e *api.Error
			if errors.As(err, &e) {
				return &api.Error{Code: e.Code, Message: id + ": " + e.Message}
			}
			return err
		}
		out[i] = res
		evs[i] = stateEvent(sts[i], p.name)
	}
	if err := s.commit(ctx, store.Write{Desired: sts, Events: evs}); err != nil {
		return err
	}
	for _, st := range sts {
		s.res.invalidate(st.ID)
		s.hub.notify(st.ID)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// checkState normalizes st and refuses what cannot be resolved for its
// device, before anything is stored. A device that has not reported yet
// gets the looser check that needs no tags.
func (s *Server) checkState(ctx context.Context, st *api.DesiredState) (*api.Resolved, error) {
	id := st.ID
	st.SystemTags = nil // the device reports its tags; the operator does not set them
	if st.Apps == nil {
		st.Apps = []api.DesiredApp{}
	}
	for i := range st.Apps {
		if st.Apps[i].Tags == nil {
			st.Apps[i].Tags = []string{}
		}
		for _, t := range st.Apps[i].Tags {
			if !api.ValidTag(t) {
				return nil, api.Errorf(api.EINVALID, fmt.Sprintf("%s: invalid tag %q", st.Apps[i].Name, t))
			}
		}
	}
	dev, err := s.store.Device(ctx, id)
	switch {
	case err == nil:
		resolved, err := resolve.Resolve(id, dev.Tags, st.Apps, s.res.candidates())
		if err != nil {
			return nil, api.Errorf(api.EINVALID, err.Error())
		}
		if err := s.res.applyParams(ctx, id, resolved); err != nil {
			return nil, paramError(err)
		}
		return resolved, nil
	case errors.Is(err, store.ErrNotFound):
		if err := resolve.Validate(st.Apps, s.res.candidates()); err != nil {
			return nil, api.Errorf(api.EINVALID, err.Error())
		}
		for _, a := range st.Apps {
			if err := s.checkParamValues(ctx, a.Name, a.Params); err != nil {
				return nil, err
			}
		}
		return &api.Resolved{Device: id, Apps: []api.ResolvedApp{}}, nil
	default:
		return nil, err
	}
}

// stateEvent is the event of a desired state set by an operator.
func stateEvent(st api.DesiredState, by string) api.Event {
	var names []string
	for _, a := range st.Apps {
		names = append(names, a.Name+" "+a.Version)
	}
	return api.Event{Device: st.ID, Kind: api.KindState, Level: api.LevelInfo, Priority: api.PriorityLow,
		Message: fmt.Sprintf("desired state of %s set by %s: %s", st.ID, by, strings.Join(names, ", "))}
}

func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request, p peer) error {
	q := r.URL.Query()
	f := store.EventFilter{Device: q.Get("device"), Kind: q.Get("kind"), MinPriority: q.Get("min_priority")}
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return api.Errorf(api.EINVALID, fmt.Sprintf("after %q: want an event id", v))
		}
		f.After = n
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10000 {
			return api.Errorf(api.EINVALID, fmt.Sprintf("limit %q: want 1 to 10000", v))
		}
		f.Limit = n
	}
	if f.MinPriority != "" && api.PriorityRank(f.MinPriority) == 0 {
		return api.Errorf(api.EINVALID, fmt.Sprintf("min_priority %q: want low, medium or high", f.MinPriority))
	}
	if v := q.Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return api.Errorf(api.EINVALID, fmt.Sprintf("since %q: want an RFC 3339 time", v))
		}
		f.Since = t
	}
	if q.Get("follow") == "1" {
		return s.followEvents(w, r, p, f)
	}
	wait := q.Get("wait") == "1"
	timer := time.NewTimer(s.cfg.PollTimeout)
	defer timer.Stop()
	for {
		ch, _ := s.hub.wait(eventsKey)
		evs, err := s.store.Events(r.Context(), f)
		if err != nil {
			return err
		}
		if len(evs) > 0 || !wait {
			if evs == nil {
				evs = []api.Event{}
			}
			writeJSON(w, http.StatusOK, evs)
			return nil
		}
		select {
		case <-ch:
		case <-timer.C:
			writeJSON(w, http.StatusOK, []api.Event{})
			return nil
		case <-r.Context().Done():
			return r.Context().Err()
		}
	}
}

func sortedUnique(in []string) []string {
	out := slices.Clone(in)
	sort.Strings(out)
	out = slices.Compact(out)
	if out == nil {
		out = []string{}
	}
	return out
}
