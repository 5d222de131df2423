package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/store"
)

// PutBuild implements store.Store. The insert does nothing on a unique
// conflict (it waits for a concurrent push of the same keys to commit or
// roll back first); the row that won then says whether this push is the
// very same build (nil) or a conflict.
func (s *Store) PutBuild(ctx context.Context, b api.Build, manifest []byte) error {
	b, err := store.CheckBuild(b, manifest)
	if err != nil {
		return fmt.Errorf("put build: %w", err)
	}
	c, _ := api.ParseCoordinate(b.Coordinate) // checked above
	pushed, pushedNS := splitTime(b.Pushed)
	// A winner removed between our insert and our look is gone again:
	// try once more rather than report a conflict with nothing.
	for range 3 {
		inserted, err := s.insertBuild(ctx, b, c, pushed, pushedNS, manifest)
		if err != nil {
			return fmt.Errorf("put build %s: %w", b.Coordinate, err)
		}
		if inserted {
			return nil
		}
		var existing string
		err = s.pool.QueryRow(ctx, `SELECT digest FROM builds WHERE coordinate = $1 AND tags = $2`, b.Coordinate, b.Tags).Scan(&existing)
		switch {
		case err == nil && existing == b.Digest:
			return nil
		case err == nil:
			return fmt.Errorf("put build %s %v: already pushed with digest %s: %w", b.Coordinate, b.Tags, existing, store.ErrConflict)
		case !errors.Is(err, pgx.ErrNoRows):
			return fmt.Errorf("put build %s: %w", b.Coordinate, err)
		}
		var otherCoord string
		var otherTags []string
		err = s.pool.QueryRow(ctx, `SELECT coordinate, tags FROM builds WHERE digest = $1`, b.Digest).Scan(&otherCoord, &otherTags)
		switch {
		case err == nil:
			return fmt.Errorf("put build %s %v: digest %s is already build %s %v: %w",
				b.Coordinate, b.Tags, b.Digest, otherCoord, otherTags, store.ErrConflict)
		case !errors.Is(err, pgx.ErrNoRows):
			return fmt.Errorf("put build %s: %w", b.Coordinate, err)
		}
	}
	return fmt.Errorf("put build %s %v: pushed and removed concurrently: %w", b.Coordinate, b.Tags, store.ErrConflict)
}

// insertBuild inserts b and its manifest unless a build with its digest,
// or its coordinate and tags, exists; it reports whether it did.
func (s *Store) insertBuild(ctx context.Context, b api.Build, c api.Coordinate, pushed time.Time, pushedNS int16, manifest []byte) (bool, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return false, err
	}
	defer tx.Rollback(ctx)
	tag, err := tx.Exec(ctx, `
		INSERT INTO builds (digest, package, version, coordinate, tags, install, files, size, pushed, pushed_ns)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
		ON CONFLICT DO NOTHING`,
		b.Digest, c.PackageName(), c.Version, b.Coordinate, b.Tags, b.Install, b.Files, b.Size, pushed, pushedNS)
	if err != nil {
		return false, err
	}
	if tag.RowsAffected() == 0 {
		return false, nil
	}
	if _, err := tx.Exec(ctx, `INSERT INTO manifests (digest, body) VALUES ($1, $2)`, b.Digest, manifest); err != nil {
		return false, err
	}
	return true, tx.Commit(ctx)
}

// Builds implements store.Store.
func (s *Store) Builds(ctx context.Context, name string) ([]api.Build, error) {
	q := `SELECT coordinate, tags, digest, install, files, size, pushed, pushed_ns FROM builds`
	var args []any
	if name != "" {
		if _, _, err := api.ParsePackageName(name); err != nil {
			return nil, fmt.Errorf("list builds: %w", err)
		}
		q += ` WHERE package = $1`
		args = append(args, name)
	}
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list builds: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (api.Build, error) {
		var b api.Build
		var ns int16
		err := row.Scan(&b.Coordinate, &b.Tags, &b.Digest, &b.Install, &b.Files, &b.Size, &b.Pushed, &ns)
		b.Pushed = joinTime(b.Pushed, ns)
		if b.Tags == nil {
			b.Tags = []string{}
		}
		return b, err
	})
	if err != nil {
		return nil, fmt.Errorf("list builds: %w", err)
	}
	if out == nil {
		out = []api.Build{}
	}
	store.SortBuilds(out)
	return out, nil
}

// Manifest implements store.Store.
func (s *Store) Manifest(ctx context.Context, digest string) ([]byte, error) {
	var body []byte
	err := s.pool.QueryRow(ctx, `SELECT body FROM manifests WHERE digest = $1`, digest).Scan(&body)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("manifest %s: %w", digest, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", digest, err)
	}
	return body, nil
}

// DeleteBuilds implements store.Store. The manifests go with the builds
// (ON DELETE CASCADE).
func (s *Store) DeleteBuilds(ctx context.Context, coordinate string, tags []string) (int, error) {
	if _, err := api.ParseCoordinate(coordinate); err != nil {
		return 0, fmt.Errorf("delete builds: %w", err)
	}
	q := `DELETE FROM builds WHERE coordinate = $1`
	args := []any{coordinate}
	what := coordinate
	if tags != nil {
		norm := api.NormalizeTags(tags)
		q += ` AND tags = $2`
		args = append(args, norm)
		what = fmt.Sprintf("%s %v", coordinate, norm)
	}
	tag, err := s.pool.Exec(ctx, q, args...)
	if err != nil {
		return 0, fmt.Errorf("delete builds %s: %w", what, err)
	}
	if tag.RowsAffected() == 0 {
		return 0, fmt.Errorf("delete builds %s: %w", what, store.ErrNotFound)
	}
	return int(tag.RowsAffected()), nil
}
