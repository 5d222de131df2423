package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/drover-dev/drover/internal/api"
)

// CheckBuild validates a build for PutBuild and returns it in canonical
// form: tags normalized (api.NormalizeTags), Pushed in UTC. Every
// implementation calls it so all refuse the same input.
func CheckBuild(b api.Build, manifest []byte) (api.Build, error) {
	if _, err := api.ParseCoordinate(b.Coordinate); err != nil {
		return api.Build{}, fmt.Errorf("build: %w", err)
	}
	if !api.ValidDigest(b.Digest) {
		return api.Build{}, fmt.Errorf("build %s: digest %q is not 64 lowercase hex digits", b.Coordinate, b.Digest)
	}
	b.Tags = api.NormalizeTags(b.Tags)
	for _, t := range b.Tags {
		if !api.ValidTag(t) {
			return api.Build{}, fmt.Errorf("build %s: invalid tag %q", b.Coordinate, t)
		}
	}
	if len(manifest) == 0 {
		return api.Build{}, fmt.Errorf("build %s: empty manifest", b.Coordinate)
	}
	b.Pushed = b.Pushed.UTC()
	return b, nil
}

// CheckEvent normalizes e (api.Event.Normalize) and checks that its
// payload, if any, is JSON, for AppendEvents. Its text fields become
// valid UTF-8 without NUL bytes (U+FFFD for each NUL and each run of
// bytes that are not UTF-8), which is all PostgreSQL's text holds: a
// device's log line with a stray byte is stored, the same by every
// store, instead of refusing its whole batch.
func CheckEvent(e *api.Event) error {
	if err := e.Normalize(); err != nil {
		return err
	}
	for _, f := range []*string{&e.Device, &e.Package, &e.Message} {
		*f = storableText(*f)
	}
	if e.Payload != nil && !json.Valid(e.Payload) {
		return fmt.Errorf("event %s: payload is not JSON", e.Kind)
	}
	return nil
}

// storableText is s as valid UTF-8 without NUL bytes.
func storableText(s string) string {
	if utf8.ValidString(s) && !strings.ContainsRune(s, 0) {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// CheckedWrite is a Write checked and encoded for Commit, the same by
// every implementation.
type CheckedWrite struct {
	Events    []api.Event    // checked (CheckEvent), IDs still to set
	Device    []byte         // the device record as JSON; nil: none
	Documents []api.Document // Write.Desired as device documents, then Write.Documents
	DocData   [][]byte       // each document as JSON
}

// Empty reports whether the write changes nothing.
func (c CheckedWrite) Empty(w Write) bool {
	return len(c.Events) == 0 && c.Device == nil && len(c.Documents) == 0 && len(w.RemoveDocuments) == 0 && len(w.RemoveDevices) == 0
}

// CheckWrite validates w for Commit and encodes what it stores: a
// malformed event, document or an empty id refuses the whole write.
func CheckWrite(w Write) (CheckedWrite, error) {
	var c CheckedWrite
	c.Events = make([]api.Event, len(w.Events))
	for i, e := range w.Events {
		if err := CheckEvent(&e); err != nil {
			return c, fmt.Errorf("commit: event %d: %w", i, err)
		}
		c.Events[i] = e
	}
	if w.Device != nil {
		if w.Device.ID == "" {
			return c, errors.New("commit: device with an empty id")
		}
		var err error
		if c.Device, err = json.Marshal(w.Device); err != nil {
			return c, fmt.Errorf("commit: device %s: %w", w.Device.ID, err)
		}
	}
	c.Documents = make([]api.Document, 0, len(w.Desired)+len(w.Documents))
	for _, st := range w.Desired {
		if st.ID == "" {
			return c, errors.New("commit: desired state with an empty device id")
		}
		c.Documents = append(c.Documents, api.Document{Kind: api.DocDevice, ID: st.ID, Apps: st.Apps})
	}
	c.Documents = append(c.Documents, w.Documents...)
	c.DocData = make([][]byte, len(c.Documents))
	for i, d := range c.Documents {
		if err := CheckDocument(d); err != nil {
			return c, fmt.Errorf("commit: %w", err)
		}
		var err error
		if c.DocData[i], err = json.Marshal(d); err != nil {
			return c, fmt.Errorf("commit: document %s: %w", d.Key(), err)
		}
	}
	for _, id := range w.RemoveDevices {
		if id == "" {
			return c, errors.New("commit: removal of a device with an empty id")
		}
	}
	return c, nil
}

// CheckRollout validates a SaveRollout call and encodes what it stores:
// the rollout as JSON and its events checked (CheckEvent).
func CheckRollout(r api.Rollout, evs []api.Event) ([]byte, []api.Event, error) {
	if r.Name == "" {
		return nil, nil, errors.New("save rollout: empty name")
	}
	out := make([]api.Event, len(evs))
	for i, e := range evs {
		if err := CheckEvent(&e); err != nil {
			return nil, nil, fmt.Errorf("save rollout %s: event %d: %w", r.Name, i, err)
		}
		out[i] = e
	}
	data, err := json.Marshal(r)
	if err != nil {
		return nil, nil, fmt.Errorf("save rollout %s: %w", r.Name, err)
	}
	return data, out, nil
}

// CheckTrustFiles refuses trust files PutTrustFiles cannot store: an
// empty role, a version below 1, empty data.
func CheckTrustFiles(files []TrustFile) error {
	for _, f := range files {
		if f.Role == "" || f.Version < 1 || len(f.Data) == 0 {
			return fmt.Errorf("put trust files: invalid file %q version %d", f.Role, f.Version)
		}
	}
	return nil
}
