// Package migration reads a store's schema migrations: SQL files named
// migrations/NNNN_name.sql in the file system a store embeds, applied in
// version order. Each store applies them in its own dialect and records
// them in its own schema_migrations table; the naming rule has one home.
package migration

import (
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"strconv"
)

// Migration is one schema change. A released migration is never edited;
// the next change is the next version.
type Migration struct {
	Version int
	Name    string // the file name's words, without number and .sql
	SQL     string
}

var fileName = regexp.MustCompile(`^(\d{4})_([a-z0-9_]+)\.sql$`)

// Load reads migrations/NNNN_name.sql from fsys, sorted by version. A
// file named otherwise, or two sharing a version, is an error.
func Load(fsys fs.FS) ([]Migration, error) {
	paths, err := fs.Glob(fsys, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var ms []Migration
	for _, p := range paths {
		m := fileName.FindStringSubmatch(path.Base(p))
		if m == nil {
			return nil, fmt.Errorf("migration %s: want a name like 0002_add_x.sql", p)
		}
		v, _ := strconv.Atoi(m[1])
		body, err := fs.ReadFile(fsys, p)
		if err != nil {
			return nil, err
		}
		ms = append(ms, Migration{Version: v, Name: m[2], SQL: string(body)})
	}
	slices.SortFunc(ms, func(a, b Migration) int { return a.Version - b.Version })
	for i := 1; i < len(ms); i++ {
		if ms[i].Version == ms[i-1].Version {
			return nil, fmt.Errorf("migrations %s and %s share version %d", ms[i-1].Name, ms[i].Name, ms[i].Version)
		}
	}
	return ms, nil
}

// Newest is the highest version of ms, 0 if none.
func Newest(ms []Migration) int {
	if len(ms) == 0 {
		return 0
	}
	return ms[len(ms)-1].Version
}
