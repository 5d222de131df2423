package pkgfile

import (
	"fmt"

	"github.com/drover-dev/drover/internal/api"
)

// maxNetChecks bounds a service's network checks.
const maxNetChecks = 16

// validateNetChecks checks a service's net-checks: each valid, none
// twice, at most maxNetChecks.
func validateNetChecks(s api.Service) error {
	if len(s.NetChecks) > maxNetChecks {
		return fmt.Errorf("service %s: net-checks: %d, at most %d", s.Name, len(s.NetChecks), maxNetChecks)
	}
	seen := map[string]bool{}
	for i, c := range s.NetChecks {
		if err := c.Validate(); err != nil {
			return fmt.Errorf("service %s: net-checks[%d]: %w", s.Name, i, err)
		}
		if seen[c.String()] {
			return fmt.Errorf("service %s: net-checks[%d]: %s listed twice", s.Name, i, c)
		}
		seen[c.String()] = true
	}
	return nil
}
