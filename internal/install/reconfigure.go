package install

import (
	"context"
	"fmt"
	"maps"
)

// Params returns the parameter values an installed app was last applied
// or reconfigured with (nil if none, or not installed).
func (e *Engine) Params(name, instance string) map[string]string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if a := e.state.find(name, instance); a != nil {
		return maps.Clone(a.Params)
	}
	return nil
}

// Reconfigure applies new parameter values to an installed app without
// reinstalling it: the configure hook (templates) and the configure
// script run again with them at the install location, then the values are
// recorded. On failure the recorded values stay as they were, so the next
// convergence tries again.
func (e *Engine) Reconfigure(ctx context.Context, name, instance string, params map[string]string, configure func(ctx context.Context, location string) error) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.ready(); err != nil {
		return err
	}
	cur := e.state.find(name, instance)
	if cur == nil {
		return fmt.Errorf("reconfigure %s: %w", name, ErrNotInstalled)
	}
	app := cur.clone()
	app.Params = maps.Clone(params)
	m, err := e.loadManifest(app.Digest)
	if err != nil {
		return fmt.Errorf("reconfigure %s: %w", app.label(), err)
	}
	coord := m.Coordinate().String()
	if configure != nil {
		if err := configure(ctx, app.Prefix); err != nil {
			return fmt.Errorf("reconfigure %s: configure: %w", coord, err)
		}
	}
	r := scriptRun{app: app, m: m, script: "configure", cwd: app.Prefix, version: app.Version, action: "reconfigure", params: app.Params}
	if err := e.runScript(ctx, r); err != nil {
		return fmt.Errorf("reconfigure %s: %w", coord, err)
	}
	next := e.state.clone()
	next.put(app)
	if err := next.write(e.cfg.StateDir); err != nil {
		return fmt.Errorf("reconfigure %s: %w", coord, err)
	}
	e.state = next
	return nil
}
