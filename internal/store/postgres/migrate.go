package postgres

import (
	"context"
	"embed"
	"fmt"
	"io/fs"

	"github.com/jackc/pgx/v5"

	"github.com/drover-dev/drover/internal/store/migration"
)

// migrationFS holds the schema migrations, applied in version order.
// Never edit a released migration; add the next one.
//
//go:embed migrations/*.sql
var migrationFS embed.FS

// migrate applies the migrations in fsys that the schema lacks, each in
// its own transaction together with its row in schema_migrations
// (PostgreSQL's DDL is transactional), so a migration is applied whole
// and recorded, or not at all. All of it runs under a session advisory
// lock: replicas starting at once take turns, and the later ones find
// the work done.
func (s *Store) migrate(ctx context.Context, fsys fs.FS) error {
	ms, err := migration.Load(fsys)
	if err != nil {
		return err
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	key := s.lockKey("migrate")
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, key); err != nil {
		return fmt.Errorf("lock for migrations: %w", err)
	}
	defer func() {
		// A cancelled ctx may leave the lock held: then the connection
		// goes, and the lock with it.
		if _, err := conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, key); err != nil {
			conn.Conn().Close(context.WithoutCancel(ctx))
		}
	}()
	_, err = conn.Exec(ctx, `
		CREATE TABLE IF NOT EXISTS schema_migrations (
			version    integer PRIMARY KEY,
			name       text NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now()
		)`)
	if err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	var newest int
	if err := conn.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&newest); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if known := migration.Newest(ms); newest > known {
		return fmt.Errorf("database schema version %d is newer than this drover knows (%d): upgrade drover", newest, known)
	}
	for _, m := range ms {
		if m.Version <= newest {
			continue
		}
		if err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, m.Version, m.Name)
			return err
		}); err != nil {
			return fmt.Errorf("migration %04d_%s: %w", m.Version, m.Name, err)
		}
		s.logger.Info("applied schema migration", "version", m.Version, "name", m.Name, "schema", s.schema)
	}
	return nil
}
