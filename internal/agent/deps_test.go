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
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{"database/sql", "modernc.org/sqlite", "github.com/jackc/pgx", "/internal/server", "/internal/store"} {
			if strings.HasPrefix(dep, banned) || strings.HasSuffix(dep, banned) || strings.Contains(dep, banned+"/") {
				t.Errorf("the agent links %s", dep)
			}
		}
	}
}
