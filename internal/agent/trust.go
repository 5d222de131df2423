package agent

import (
	"context"
	"errors"
	"fmt"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/trust"
)

// Trust checks builds against signed metadata (agent --trust-root);
// *trust.Verifier has it. Check refreshes the metadata and returns a
// *trust.Refused for the first build that fails.
type Trust interface {
	Check(ctx context.Context, builds []trust.Build) error
}

// checkTrust refuses, before any of their files is fetched or any script
// runs, the builds of res this machine does not have yet and that no valid
// signed metadata lists. Each refusal is a step-failed event naming the
// check; nothing on the machine changes.
func (a *Agent) checkTrust(ctx context.Context, res *api.Resolved) error {
	if a.cfg.Trust == nil {
		return nil
	}
	var builds []trust.Build
	for _, app := range res.Apps {
		if _, err := a.engine.Manifest(app.Digest); err == nil {
			continue // installed before, checked then
		}
		builds = append(builds, trust.Build{Coordinate: app.Name + ":" + app.Version, Tags: app.BuildTags, Digest: app.Digest})
	}
	// Init programs run as the agent does: they must be signed too.
	for _, in := range res.Init {
		builds = append(builds, trust.Build{Coordinate: in.Name + ":" + in.Version, Tags: in.BuildTags, Digest: in.Digest})
	}
	if len(builds) == 0 {
		return nil
	}
	err := a.cfg.Trust.Check(ctx, builds)
	if err == nil {
		return nil
	}
	var r *trust.Refused
	if !errors.As(err, &r) {
		r = &trust.Refused{Check: trust.CheckUnavailable, Err: err}
	}
	pkg := r.Target
	if pkg == "" {
		pkg = builds[0].Coordinate
	}
	payload := map[string]any{"check": r.Check, "target": r.Target, "error": r.Err.Error()}
	a.event(api.Event{Kind: api.KindStepFailed, Level: api.LevelError, Priority: api.PriorityHigh, Package: pkg,
		Message: fmt.Sprintf("install %s refused: %s check failed: %v", pkg, r.Check, r.Err), Payload: mustJSON(payload)})
	a.flushEvents(ctx)
	err = fmt.Errorf("install %s refused: %s check failed: %w", pkg, r.Check, r.Err)
	a.failed(res.Digest, err)
	return err
}
