package privdir

import (
	"os"
	"path/filepath"
	"testing"
)

func TestMake(t *testing.T) {
	base := t.TempDir()
	open := filepath.Join(base, "open")
	if err := os.Mkdir(open, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{open, filepath.Join(base, "new", "deeper")} {
		if err := Make(dir); err != nil {
			t.Fatalf("Make(%s) = %v", dir, err)
		}
		fi, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != Mode {
			t.Errorf("Make(%s): mode %v, want %v", dir, fi.Mode().Perm(), Mode)
		}
	}
}
