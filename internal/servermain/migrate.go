package servermain

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/drover-dev/drover/internal/store/postgres"
	"github.com/drover-dev/drover/internal/store/sqlite"
	"github.com/drover-dev/drover/internal/store/storecopy"
)

// MigrateConfig is what Migrate copies from and to.
type MigrateConfig struct {
	// From is the data folder of an embedded server (its drover.db).
	From string
	// To is the PostgreSQL URL of an empty store.
	To     string
	Logger *slog.Logger
}

// Migrate copies the embedded SQLite store of cfg.From into the empty
// PostgreSQL store at cfg.To (storecopy.Copy: a non-empty target is
// refused with storecopy.ErrNotEmpty) and reports both stores' counts.
// The server must be stopped meanwhile. Blobs are files, not copied:
// the servers on PostgreSQL use From/blobs as it is (--blobs).
func Migrate(ctx context.Context, cfg MigrateConfig) (storecopy.Report, error) {
	if !isPostgres(cfg.To) {
		return storecopy.Report{}, badDB{fmt.Sprintf("--to %q: want postgres://USER@HOST/DB", Redact(cfg.To))}
	}
	path := filepath.Join(cfg.From, "drover.db")
	// sqlite.Open would make a missing database: say it is not there.
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return storecopy.Report{}, fmt.Errorf("--from %s: no drover.db in it: want the data folder of a drover server", cfg.From)
	}
	from, err := sqlite.Open(ctx, path, cfg.Logger)
	if err != nil {
		return storecopy.Report{}, fmt.Errorf("--from %s: %w", cfg.From, err)
	}
	defer from.Close()
	to, err := postgres.Open(ctx, postgres.Config{URL: cfg.To, Logger: cfg.Logger})
	if err != nil {
		return storecopy.Report{}, fmt.Errorf("--to %s: %w", Redact(cfg.To), err)
	}
	defer to.Close()
	r, err := storecopy.Copy(ctx, from, to)
	if err != nil {
		return storecopy.Report{}, fmt.Errorf("--to %s: %w", Redact(cfg.To), err)
	}
	return r, nil
}
