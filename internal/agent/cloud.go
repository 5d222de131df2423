package agent

import (
	"context"
	"maps"
	"path/filepath"

	"github.com/drover-dev/drover/internal/facts"
)

// cloudFile caches the cloud metadata answer (or that there was none)
// in the agent's system folder, so a machine outside any cloud pays the
// short detection timeout once per cache lifetime, not at every start.
const cloudFile = "cloud.json"

// withCloud adds the cloud facts of the metadata service at
// cfg.MetadataURL (none when it is "") to f. A failure is logged: cloud
// facts are a bonus, never a reason not to start.
func withCloud(cfg Config, f facts.Facts) facts.Facts {
	if cfg.MetadataURL == "" {
		return f
	}
	cf, err := facts.DetectCloud(context.Background(), facts.CloudConfig{
		URL:       cfg.MetadataURL,
		CacheFile: filepath.Join(cfg.Home, "system", cloudFile),
		Now:       cfg.Now,
	})
	if err != nil {
		cfg.Logger.Warn("cloud facts", "url", cfg.MetadataURL, "err", err)
	}
	if len(cf) == 0 {
		return f
	}
	out := maps.Clone(f)
	if out == nil {
		out = facts.Facts{}
	}
	maps.Copy(out, cf)
	return out
}
