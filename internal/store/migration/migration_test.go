package migration

import (
	"testing"
	"testing/fstest"
)

func TestLoad(t *testing.T) {
	fsys := fstest.MapFS{
		"migrations/0002_more.sql": {Data: []byte("B")},
		"migrations/0001_init.sql": {Data: []byte("A")},
		"migrations/README":        {Data: []byte("not a migration")},
	}
	ms, err := Load(fsys)
	if err != nil || len(ms) != 2 || ms[0].Version != 1 || ms[0].Name != "init" || ms[1].SQL != "B" || Newest(ms) != 2 {
		t.Errorf("Load = %+v, %v, want init (1) then more (2)", ms, err)
	}
	if n := Newest(nil); n != 0 {
		t.Errorf("Newest(none) = %d, want 0", n)
	}
}

func TestLoadRefusesBadNames(t *testing.T) {
	tests := map[string]fstest.MapFS{
		"no number":      {"migrations/init.sql": {}},
		"duplicate":      {"migrations/0001_a.sql": {}, "migrations/0001_b.sql": {}},
		"capital letter": {"migrations/0001_Init.sql": {}},
	}
	for name, fsys := range tests {
		if _, err := Load(fsys); err == nil {
			t.Errorf("Load(%s) = nil error, want an error", name)
		}
	}
}
