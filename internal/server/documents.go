package server

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/fleet"
	"github.com/drover-dev/drover/internal/resolve"
	"github.com/drover-dev/drover/internal/store"
)

// maxDocuments bounds one state set or plan.
const maxDocuments = 20000

// normalizeDocument derives a document's kind from what it names and
// refuses what is malformed: a bad device id, group name or selector, a
// bad tag. The error is one line naming the document.
func normalizeDocument(d *api.Document) error {
	switch {
	case d.ID != "" && d.Group != "":
		return api.Errorf(api.EINVALID, fmt.Sprintf("document names both device %q and group %q: a document is one or the other", d.ID, d.Group))
	case d.Group != "":
		if d.Kind != "" && d.Kind != api.DocGroup {
			return api.Errorf(api.EINVALID, fmt.Sprintf("group %s: kind %q", d.Group, d.Kind))
		}
		d.Kind = api.DocGroup
		if !fleet.ValidGroupName(d.Group) {
			return api.Errorf(api.EINVALID, fmt.Sprintf("group %q: want a name of lowercase letters, digits and '-', starting with a letter or digit, at most 63 long", d.Group))
		}
	case d.ID != "":
		if d.Kind != "" && d.Kind != api.DocDevice {
			return api.Errorf(api.EINVALID, fmt.Sprintf("device %s: kind %q", d.ID, d.Kind))
		}
		d.Kind = api.DocDevice
		if !api.ValidDeviceID(d.ID) {
			return api.Errorf(api.EINVALID, fmt.Sprintf("invalid device id %q", d.ID))
		}
		if d.Selector != "" {
			return api.Errorf(api.EINVALID, fmt.Sprintf("device %s: a device document has no selector", d.ID))
		}
	default:
		return api.Errorf(api.EINVALID, "document has neither id (a device) nor group")
	}
	if _, err := fleet.Compile([]api.Document{*d}); err != nil {
		return api.Errorf(api.EINVALID, err.Error())
	}
	if d.Apps == nil {
		d.Apps = []api.DesiredApp{}
	}
	for i := range d.Apps {
		if d.Apps[i].Tags == nil {
			d.Apps[i].Tags = []string{}
		}
		for _, t := range d.Apps[i].Tags {
			if !api.ValidTag(t) {
				return api.Errorf(api.EINVALID, fmt.Sprintf("%s: %s: invalid tag %q", docName(*d), d.Apps[i].Name, t))
			}
		}
	}
	d.Pinned = nil
	return nil
}

// docName names a document in messages: the device id, or "group NAME".
func docName(d api.Document) string {
	if d.Kind == api.DocGroup {
		return "group " + d.Group
	}
	return d.ID
}

// pinDocuments validates docs and resolves each constraint in them to the
// newest version that exists now, recorded in Pinned, and sets Set to now:
// the pin time, after which pushed builds are not considered for the
// document (fleet.Result.Cutoff). Nothing is stored. Errors are
// *api.Error naming the document.
func (s *Server) pinDocuments(ctx context.Context, docs []api.Document) ([]api.Document, error) {
	return s.pinDocumentsAt(ctx, docs, time.Time{})
}

// pinDocumentsAt is pinDocuments against the builds that existed at
// cutoff (zero: now), as a rollout's documents were pinned at its start.
func (s *Server) pinDocumentsAt(ctx context.Context, docs []api.Document, cutoff time.Time) ([]api.Document, error) {
	if len(docs) == 0 || len(docs) > maxDocuments {
		return nil, api.Errorf(api.EINVALID, fmt.Sprintf("want 1 to %d documents, got %d", maxDocuments, len(docs)))
	}
	if s.rep.shared != nil {
		// A build pushed through another replica a moment ago may not
		// have been told here yet: pin against the stored builds.
		if err := s.res.loadCandidates(ctx); err != nil {
			return nil, err
		}
	}
	cands := s.res.candidatesAt(cutoff)
	now := s.now().UTC()
	if !cutoff.IsZero() {
		now = cutoff.UTC()
	}
	out := make([]api.Document, len(docs))
	seen := make(map[string]bool, len(docs))
	for i, d := range docs {
		d.Apps = slices.Clone(d.Apps)
		d.Init = slices.Clone(d.Init)
		if err := normalizeDocument(&d); err != nil {
			return nil, err
		}
		if seen[d.Key()] {
			return nil, api.Errorf(api.EINVALID, fmt.Sprintf("%s has two documents", docName(d)))
		}
		seen[d.Key()] = true
		if err := resolve.Validate(d.Apps, cands); err != nil {
			return nil, api.Errorf(api.EINVALID, docName(d)+": "+err.Error())
		}
		for _, a := range d.Apps {
			if err := s.checkParamValues(ctx, a.Name, a.Params); err != nil {
				return nil, prefixed(docName(d), err)
			}
			v, exact, err := resolve.Pin(a.Name, a.Version, cands)
			if err != nil {
				return nil, api.Errorf(api.EINVALID, docName(d)+": "+err.Error())
			}
			if !exact {
				d.Pinned = append(d.Pinned, api.Pin{Name: a.Name, Instance: a.Instance, Constraint: a.Version, Version: v})
			}
		}
		if err := s.pinInit(ctx, &d, cands); err != nil {
			return nil, err
		}
		d.Set = now
		out[i] = d
	}
	return out, nil
}

// prefixed puts who in front of an API error's message.
func prefixed(who string, err error) error {
	if e, ok := err.(*api.Error); ok {
		return &api.Error{Code: e.Code, Message: who + ": " + e.Message, Missing: e.Missing}
	}
	return err
}

// change is what a document change does to one device.
type change struct {
	dev      api.Device
	reported bool
	t        ticket
	old, new *resolution
}

// changed reports whether the device's resolution or the documents it
// takes apps from differ.
func (c change) changed() bool {
	return c.old.r.Digest != c.new.r.Digest || !slices.Equal(c.old.eff.Sources, c.new.eff.Sources)
}

// evaluate resolves every reported device under next, beside its current
// resolution. Devices alike share resolutions (resolver.resolve).
func (s *Server) evaluate(ctx context.Context, next *fleet.Set) ([]change, error) {
	devs, err := s.store.Devices(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]change, 0, len(devs))
	for _, d := range devs {
		t := s.res.ticket(d.ID)
		old, err := s.res.getFor(ctx, d)
		if err != nil {
			return nil, err
		}
		nw, err := s.res.compute(ctx, inputOf(d), next)
		if err != nil {
			return nil, err
		}
		out = append(out, change{dev: d, reported: true, t: t, old: old, new: nw})
	}
	return out, nil
}

// setDocuments is the one path that stores documents: it checks and pins
// them, refuses a change that would give a reported device a state it
// cannot have (a resolution, tie or parameter error, root-mode file
// conflicts), stores them with their events in one transaction, keeps
// the resolutions it computed, and wakes exactly the devices whose
// resolution changed.
func (s *Server) setDocuments(ctx context.Context, docs []api.Document, by string) error {
	return s.setDocumentsAt(ctx, docs, by, time.Time{})
}

// setDocumentsAt is setDocuments with the documents set (and pinned) as
// of cutoff (zero: now): a rollout that ends done stores its documents as
// they were pinned at its start, so a build pushed meanwhile reaches no
// device through it.
func (s *Server) setDocumentsAt(ctx context.Context, docs []api.Document, by string, cutoff time.Time) error {
	keys := make([]string, len(docs))
	for i := range docs {
		d := docs[i]
		if err := normalizeDocument(&d); err != nil {
			return err
		}
		keys[i] = d.Key()
	}
	unlock, err := s.lockDocuments(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	if name, held := s.rolloutHolds(keys); held {
		return api.Errorf(api.ECONFLICT, fmt.Sprintf("rollout %s holds %s: wait for it to end, or abort it", name, strings.Join(keys, ", ")))
	}
	pinned, err := s.pinDocumentsAt(ctx, docs, cutoff)
	if err != nil {
		return err
	}
	for i := range pinned {
		pinned[i].SetBy = by
	}
	old := s.res.documents()
	next, err := old.With(pinned, "")
	if err != nil {
		return api.Errorf(api.EINVALID, err.Error())
	}
	changes, err := s.evaluate(ctx, next)
	if err != nil {
		return err
	}
	if err := s.refuse(ctx, changes, keys); err != nil {
		return err
	}
	evs := make([]api.Event, len(pinned))
	for i, d := range pinned {
		evs[i] = documentEvent(d, by)
	}
	if err := s.commit(ctx, store.Write{Documents: pinned, Events: evs}); err != nil {
		return err
	}
	s.res.setDocuments(next)
	s.applyChanges(changes, deviceIDs(pinned))
	s.documentsStored(keys)
	return nil
}

// removeDocuments removes stored documents (state rm): the devices they
// gave apps to resolve again without them.
func (s *Server) removeDocuments(ctx context.Context, keys []string, by string) error {
	unlock, err := s.lockDocuments(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	if name, held := s.rolloutHolds(keys); held {
		return api.Errorf(api.ECONFLICT, fmt.Sprintf("rollout %s holds %s: wait for it to end, or abort it", name, strings.Join(keys, ", ")))
	}
	var evs []api.Event
	var ids []string
	for _, k := range keys {
		d, err := s.store.Document(ctx, k)
		if err != nil {
			return err
		}
		if d.Kind == api.DocDevice {
			ids = append(ids, d.ID)
		}
		evs = append(evs, api.Event{Device: d.ID, Kind: api.KindState, Level: api.LevelInfo, Priority: api.PriorityLow,
			Message: fmt.Sprintf("%s removed by %s", describeDoc(d), by)})
	}
	next := s.res.documents().Without(keys)
	changes, err := s.evaluate(ctx, next)
	if err != nil {
		return err
	}
	// What the devices fall back to must be possible too (a tie between
	// the groups left, say).
	if err := s.refuse(ctx, changes, nil); err != nil {
		return err
	}
	if err := s.commit(ctx, store.Write{RemoveDocuments: keys, Events: evs}); err != nil {
		return err
	}
	s.res.setDocuments(next)
	s.applyChanges(changes, ids)
	s.documentsStored(keys)
	return nil
}

// refuse returns an error when a change gives a reported device a state
// it cannot have: one line, naming the first such device and how many
// more there are. A device the documents set (keys) do not give apps to
// and whose resolution does not change is not held against them.
func (s *Server) refuse(ctx context.Context, changes []change, keys []string) error {
	var first string
	n := 0
	for _, c := range changes {
		touched := slices.ContainsFunc(c.new.eff.Sources, func(k string) bool { return slices.Contains(keys, k) }) ||
			slices.Contains(keys, api.DocDevice+"/"+c.dev.ID)
		if c.old.r.Digest == c.new.r.Digest && !touched {
			continue
		}
		msg := c.new.r.Error
		if msg == "" {
			conflicts, err := s.conflicts(ctx, c.new.r, c.dev.Tags...)
			if err != nil {
				return err
			}
			if len(conflicts) > 0 {
				msg = "root-mode file conflicts: " + strings.Join(conflicts, "; ")
			}
		}
		if msg == "" {
			continue
		}
		if n == 0 {
			first = c.dev.ID + ": " + msg
		}
		n++
	}
	switch {
	case n == 1:
		return api.Errorf(api.EINVALID, first)
	case n > 1:
		return api.Errorf(api.EINVALID, fmt.Sprintf("%s (and %d more devices; drover plan shows each)", first, n-1))
	}
	return nil
}

// applyChanges keeps the resolutions a document change computed and
// wakes the devices whose resolution changed; ids (device documents of
// devices that may not have reported) are invalidated too.
func (s *Server) applyChanges(changes []change, ids []string) {
	var wake []string
	seen := map[string]bool{}
	for _, c := range changes {
		seen[c.dev.ID] = true
		if !c.changed() {
			continue
		}
		s.res.swap(c.t, c.new)
		if c.old.r.Digest != c.new.r.Digest {
			wake = append(wake, c.dev.ID)
		}
	}
	for _, id := range ids {
		if !seen[id] {
			s.res.invalidate(id)
			wake = append(wake, id)
		}
	}
	for _, id := range wake {
		s.hub.notify(id)
	}
}

// lockDocuments serializes document writes, on this replica and among
// replicas: each is checked against the documents it replaces, so with
// others writing too the documents are read from the store first. It
// returns an error, with nothing locked, when the lock cannot be had or
// the documents cannot be read: a write checked against a stale view
// could undo another replica's.
func (s *Server) lockDocuments(ctx context.Context) (func(), error) {
	s.docMu.Lock()
	unlock, err := s.sharedLock(ctx, "documents")
	if err != nil {
		s.docMu.Unlock()
		return nil, err
	}
	if s.rep.shared != nil {
		if err := s.res.loadDocuments(ctx); err != nil {
			unlock()
			s.docMu.Unlock()
			return nil, fmt.Errorf("read documents: %w", err)
		}
	}
	return func() {
		unlock()
		s.docMu.Unlock()
	}, nil
}

// invalidateDevices drops the cached resolutions of these devices and
// wakes their long-polls.
func (s *Server) invalidateDevices(ids []string) {
	for _, id := range ids {
		s.res.invalidate(id)
		s.hub.notify(id)
	}
}

func deviceIDs(docs []api.Document) []string {
	var ids []string
	for _, d := range docs {
		if d.Kind == api.DocDevice {
			ids = append(ids, d.ID)
		}
	}
	return ids
}

// describeDoc names a document for events: "desired state of ID" or
// "group NAME".
func describeDoc(d api.Document) string {
	if d.Kind == api.DocGroup {
		return "group " + d.Group
	}
	return "desired state of " + d.ID
}

// documentEvent is the event of a document set by an operator.
func documentEvent(d api.Document, by string) api.Event {
	var names []string
	pins := map[string]string{}
	for _, p := range d.Pinned {
		k := p.Name + "\x00" + p.Instance
		if p.Init {
			k = "init\x00" + p.Name
		}
		pins[k] = p.Version
	}
	for _, a := range d.Apps {
		n := a.Name + " " + a.Version
		if v, ok := pins[a.Name+"\x00"+a.Instance]; ok {
			n += " (" + v + ")"
		}
		names = append(names, n)
	}
	for _, e := range d.Init {
		n := "init " + e.Name
		if e.Version != "" {
			n += " " + e.Version
		}
		if v, ok := pins["init\x00"+e.Name]; ok {
			n += " (" + v + ")"
		}
		names = append(names, n+" "+e.Run)
	}
	what := describeDoc(d)
	if d.Kind == api.DocGroup {
		what += fmt.Sprintf(" (selector %q)", d.Selector)
	}
	return api.Event{Device: d.ID, Kind: api.KindState, Level: api.LevelInfo, Priority: api.PriorityLow,
		Message: fmt.Sprintf("%s set by %s: %s", what, by, strings.Join(names, ", "))}
}

// summaries answers state ls: every document with the devices it gives
// apps to and the newer versions its constraints would fit now.
func (s *Server) summaries(ctx context.Context) ([]api.DocumentSummary, error) {
	set := s.res.documents()
	docs := set.Documents()
	count := map[string]int{}
	devs, err := s.store.Devices(ctx)
	if err != nil {
		return nil, err
	}
	for _, d := range devs {
		res, err := s.res.getFor(ctx, d)
		if err != nil {
			return nil, err
		}
		for _, k := range res.eff.Sources {
			count[k]++
		}
	}
	cands := s.res.candidates()
	out := make([]api.DocumentSummary, 0, len(docs))
	for _, d := range docs {
		sum := api.DocumentSummary{Document: d, Devices: count[d.Key()]}
		for _, p := range d.Pinned {
			for _, v := range resolve.Newer(p.Name, p.Constraint, p.Version, cands) {
				who := p.Name
				if p.Instance != "" {
					who += "[" + p.Instance + "]"
				}
				if p.Init {
					who = "init " + who
				}
				sum.Newer = append(sum.Newer, who+" "+v)
			}
		}
		out = append(out, sum)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Kind < out[j].Kind })
	return out, nil
}
