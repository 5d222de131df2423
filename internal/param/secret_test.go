package param

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/drover-dev/drover/internal/api"
)

func TestPrivateTemplates(t *testing.T) {
	tests := []struct {
		name   string
		params map[string]api.Param
		want   os.FileMode
	}{
		{"a secret parameter", map[string]api.Param{"token": {Type: "string", Secret: true}, "port": {Type: "int"}}, 0o600},
		{"no secret", map[string]api.Param{"port": {Type: "int"}}, 0o640},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			loc := t.TempDir()
			dest := filepath.Join(loc, "etc", "app.conf")
			if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(dest, []byte("x"), 0o640); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dest, 0o640); err != nil {
				t.Fatal(err)
			}
			m := &api.Manifest{Params: tt.params, Templates: []api.Template{{Src: "t", Dest: "etc/app.conf"}}}
			if err := PrivateTemplates(loc, m); err != nil {
				t.Fatal(err)
			}
			fi, err := os.Stat(dest)
			if err != nil {
				t.Fatal(err)
			}
			if got := fi.Mode().Perm(); got != tt.want {
				t.Errorf("mode after PrivateTemplates = %v, want %v", got, tt.want)
			}
		})
	}
}
