package install

import (
	"context"
	"fmt"

	"github.com/drover-dev/drover/internal/api"
)

// UnpackScratch writes the tree of m for a device with the tags in have
// into dir, a folder outside the engine's installs that must not exist:
// the same checked tree and the same file writing as an install, but no
// switch, journal, scripts or record. The agent runs init programs from
// such a folder. The caller removes it; the cache must hold the blobs.
func (e *Engine) UnpackScratch(ctx context.Context, m *api.Manifest, have []string, dir string) error {
	tree, err := selectTree(m, have)
	if err != nil {
		return fmt.Errorf("unpack %s: %w", m.Coordinate(), err)
	}
	if err := e.unpack(ctx, tree, dir, nil); err != nil {
		return fmt.Errorf("unpack %s: %w", m.Coordinate(), err)
	}
	return nil
}
