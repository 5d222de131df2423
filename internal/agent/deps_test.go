package agent

import (
	"os/exec"
	"strings"
	"testing"
)

// TestAgentLinksNoDatabaseNorServer guards the dependency rule: the agent
// links no database driver and never imports the server.
func TestAgentLinksNoDatabaseNorServer(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	// database/sql/driver alone is only interfaces (semver implements
	// driver.Valuer); database/sql itself or any driver is banned.
	banned := []string{"database/sql", "modernc.org/sqlite", "github.com/jackc/pgx",
		"github.com/drover-dev/drover/internal/server", "github.com/drover-dev/drover/internal/store"}
	for _, dep := range strings.Fields(string(out)) {
		for _, b := range banned {
			if dep == b || strings.HasPrefix(dep, b+"/") && dep != "database/sql/driver" {
				t.Errorf("the agent links %s", dep)
			}
		}
	}
}
