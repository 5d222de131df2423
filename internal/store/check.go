package store

import (
	"encoding/json"
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
