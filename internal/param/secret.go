package param

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/drover-dev/drover/internal/api"
)

// HasSecret reports whether any of decls is secret.
func HasSecret(decls map[string]api.Param) bool {
	for _, p := range decls {
		if p.Secret {
			return true
		}
	}
	return false
}

// PrivateTemplates makes the rendered templates of m, in the install
// location loc, readable by their owner only (0600) when m has a secret
// parameter: a template may render it. It is called after
// WriteTemplates.
func PrivateTemplates(loc string, m *api.Manifest) error {
	if !HasSecret(m.Params) {
		return nil
	}
	for _, t := range m.Templates {
		if err := os.Chmod(filepath.Join(loc, filepath.FromSlash(t.Dest)), 0o600); err != nil {
			return fmt.Errorf("template %s: %w", t.Dest, err)
		}
	}
	return nil
}
