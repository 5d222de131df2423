package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/store"
)

// tagKey is the stored form of a tag set: normalized and joined by ','
// (no valid tag contains one), so that equal sets compare equal in SQL.
func tagKey(tags []string) string { return strings.Join(api.NormalizeTags(tags), ",") }

func splitTagKey(k string) []string {
	if k == "" {
		return []string{}
	}
	return strings.Split(k, ",")
}

// PutBuild implements store.Store.
func (db *DB) PutBuild(ctx context.Context, b api.Build, manifest []byte) error {
	b, err := store.CheckBuild(b, manifest)
	if err != nil {
		return fmt.Errorf("put build: %w", err)
	}
	c, _ := api.ParseCoordinate(b.Coordinate) // checked above
	key := tagKey(b.Tags)

	tx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("put build %s: %w", b.Coordinate, err)
	}
	defer tx.Rollback()

	var existing string
	err = tx.QueryRowContext(ctx,
		`SELECT digest FROM builds WHERE coordinate = ? AND tag_key = ?`, b.Coordinate, key).Scan(&existing)
	switch {
	case err == nil && existing == b.Digest:
		return nil
	case err == nil:
		return fmt.Errorf("put build %s %v: already pushed with digest %s: %w", b.Coordinate, b.Tags, existing, store.ErrConflict)
	case !errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("put build %s: %w", b.Coordinate, err)
	}
	var otherCoord, otherKey string
	err = tx.QueryRowContext(ctx,
		`SELECT coordinate, tag_key FROM builds WHERE digest = ?`, b.Digest).Scan(&otherCoord, &otherKey)
	switch {
	case err == nil:
		return fmt.Errorf("put build %s %v: digest %s is already build %s %v: %w",
			b.Coordinate, b.Tags, b.Digest, otherCoord, splitTagKey(otherKey), store.ErrConflict)
	case !errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("put build %s: %w", b.Coordinate, err)
	}

	_, err = tx.ExecContext(ctx, `
		INSERT INTO builds (digest, package, version, coordinate, tag_key, install, files, size, pushed)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		b.Digest, c.PackageName(), c.Version, b.Coordinate, key, b.Install, b.Files, b.Size, formatTime(b.Pushed))
	if err != nil {
		return fmt.Errorf("put build %s: %w", b.Coordinate, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO manifests (digest, body) VALUES (?, ?)`, b.Digest, manifest); err != nil {
		return fmt.Errorf("put build %s: %w", b.Coordinate, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("put build %s: %w", b.Coordinate, err)
	}
	return nil
}

// Builds implements store.Store.
func (db *DB) Builds(ctx context.Context, name string) ([]api.Build, error) {
	q := `SELECT coordinate, tag_key, digest, install, files, size, pushed FROM builds`
	var args []any
	if name != "" {
		if _, _, err := api.ParsePackageName(name); err != nil {
			return nil, fmt.Errorf("list builds: %w", err)
		}
		q += ` WHERE package = ?`
		args = append(args, name)
	}
	rows, err := db.read.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list builds: %w", err)
	}
	defer rows.Close()
	out := []api.Build{}
	for rows.Next() {
		var b api.Build
		var key, pushed string
		if err := rows.Scan(&b.Coordinate, &key, &b.Digest, &b.Install, &b.Files, &b.Size, &pushed); err != nil {
			return nil, fmt.Errorf("list builds: %w", err)
		}
		b.Tags = splitTagKey(key)
		if b.Pushed, err = parseTime(pushed); err != nil {
			return nil, fmt.Errorf("list builds: %w", err)
		}
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list builds: %w", err)
	}
	store.SortBuilds(out)
	return out, nil
}

// Manifest implements store.Store.
func (db *DB) Manifest(ctx context.Context, digest string) ([]byte, error) {
	var body []byte
	err := db.read.QueryRowContext(ctx, `SELECT body FROM manifests WHERE digest = ?`, digest).Scan(&body)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("manifest %s: %w", digest, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", digest, err)
	}
	return body, nil
}

// DeleteBuilds implements store.Store. The manifests go with the builds
// (ON DELETE CASCADE).
func (db *DB) DeleteBuilds(ctx context.Context, coordinate string, tags []string) (int, error) {
	if _, err := api.ParseCoordinate(coordinate); err != nil {
		return 0, fmt.Errorf("delete builds: %w", err)
	}
	q := `DELETE FROM builds WHERE coordinate = ?`
	args := []any{coordinate}
	what := coordinate
	if tags != nil {
		q += ` AND tag_key = ?`
		args = append(args, tagKey(tags))
		what = fmt.Sprintf("%s %v", coordinate, api.NormalizeTags(tags))
	}
	res, err := db.write.ExecContext(ctx, q, args...)
	if err != nil {
		return 0, fmt.Errorf("delete builds %s: %w", what, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("delete builds %s: %w", what, err)
	}
	if n == 0 {
		return 0, fmt.Errorf("delete builds %s: %w", what, store.ErrNotFound)
	}
	return int(n), nil
}
