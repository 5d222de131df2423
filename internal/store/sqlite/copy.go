package sqlite

import (
	"context"
	"fmt"

	"github.com/drover-dev/drover/internal/store"
)

var _ store.Exporter = (*DB)(nil)

// TrustFiles implements store.Exporter.
func (db *DB) TrustFiles(ctx context.Context) ([]store.TrustFile, error) {
	rows, err := db.read.QueryContext(ctx, `SELECT role, version, data FROM trust_files ORDER BY role, version`)
	if err != nil {
		return nil, fmt.Errorf("list trust files: %w", err)
	}
	defer rows.Close()
	var out []store.TrustFile
	for rows.Next() {
		var f store.TrustFile
		if err := rows.Scan(&f.Role, &f.Version, &f.Data); err != nil {
			return nil, fmt.Errorf("list trust files: %w", err)
		}
		out = append(out, f)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list trust files: %w", err)
	}
	return out, nil
}

// LastEventID implements store.Exporter: AUTOINCREMENT keeps the highest
// ID ever assigned in sqlite_sequence.
func (db *DB) LastEventID(ctx context.Context) (int64, error) {
	var last int64
	err := db.read.QueryRowContext(ctx, `
		SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0),
		           COALESCE((SELECT MAX(id) FROM events), 0))`).Scan(&last)
	if err != nil {
		return 0, fmt.Errorf("last event id: %w", err)
	}
	return last, nil
}
