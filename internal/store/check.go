package store

import (
	"encoding/json"
	"fmt"

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
// payload, if any, is JSON, for AppendEvents.
func CheckEvent(e *api.Event) error {
	if err := e.Normalize(); err != nil {
		return err
	}
	if e.Payload != nil && !json.Valid(e.Payload) {
		return fmt.Errorf("event %s: payload is not JSON", e.Kind)
	}
	return nil
}
