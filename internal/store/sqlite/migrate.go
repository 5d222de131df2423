package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"

	"github.com/drover-dev/drover/internal/store/migration"
)

// migrationFS holds the schema migrations, applied in version order.
// Never edit a released migration; add the next one.
//
//go:embed migrations/*.sql
var migrationFS embed.FS

// migrate applies the migrations in fsys that the database lacks, each in
// its own transaction together with its row in schema_migrations, so a
// migration is applied whole and recorded, or not at all.
func (db *DB) migrate(ctx context.Context, fsys fs.FS) error {
	ms, err := migration.Load(fsys)
	if err != nil {
		return err
	}
	_, err = db.write.ExecContext(ctx, `
		CREATE TABLE IF NOT EXISTS schema_migrations (
			version    INTEGER NOT NULL PRIMARY KEY,
			name       TEXT    NOT NULL,
			applied_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
		) STRICT`)
	if err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	var newest sql.NullInt64
	if err := db.write.QueryRowContext(ctx, `SELECT MAX(version) FROM schema_migrations`).Scan(&newest); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	known := migration.Newest(ms)
	if int(newest.Int64) > known {
		return fmt.Errorf("database schema version %d is newer than this drover knows (%d): upgrade drover", newest.Int64, known)
	}
	for _, m := range ms {
		if err := db.apply(ctx, m); err != nil {
			return fmt.Errorf("migration %04d_%s: %w", m.Version, m.Name, err)
		}
	}
	return nil
}

func (db *DB) apply(ctx context.Context, m migration.Migration) error {
	tx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	// Checked inside the transaction: another process opening the same
	// database waits for our write lock, then sees our record.
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM schema_migrations WHERE version = ?`, m.Version).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return nil
	}
	if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name) VALUES (?, ?)`, m.Version, m.Name); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	db.logger.Info("applied schema migration", "version", m.Version, "name", m.Name)
	return nil
}
