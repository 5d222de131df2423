package pkgfile

import (
	"strings"
	"testing"

	"github.com/drover-dev/drover/internal/api"
)

func TestCheckProgram(t *testing.T) {
	tree := []api.File{
		{Path: "bin", Type: api.TypeDir, Mode: 0o755},
		{Path: "bin/join", Type: api.TypeFile, Mode: 0o755},
		{Path: "bin/owner-only", Type: api.TypeFile, Mode: 0o700},
		{Path: "bin/link", Type: api.TypeSymlink, Mode: 0o777, Target: "join"},
		{Path: "README", Type: api.TypeFile, Mode: 0o644},
	}
	for _, c := range []struct{ run, want string }{
		{"bin/join", ""},
		{"bin/owner-only", ""},
		{"README", "README is not executable (mode 0644)"},
		{"bin/link", "bin/link is a symlink, not a file"},
		{"bin", "bin is a dir, not a file"},
		{"bin/none", "bin/none is not a file of the package"},
		{"/bin/join", `path "/bin/join" is absolute`},
		{"bin/../bin/join", `has a ".." element`},
		{"./bin/join", `has a "." element`},
		{"", "empty path"},
	} {
		err := CheckProgram(tree, c.run)
		if (c.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("CheckProgram(%q) = %v, want %q", c.run, err, c.want)
		}
	}
}
