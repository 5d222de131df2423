package store

import "context"

// Params holds fleet-wide and per-device parameter values of packages
// (DESIGN §2): the middle layers between a package's defaults and a
// desired-state entry. Values are stored as given (JSON-compatible); the
// server checks them against each build's declarations when it resolves.
type Params interface {
	// ParamValues returns the values of package pkg ("group:name") for
	// device, or the fleet-wide values when device is "". None is an
	// empty, non-nil map, not an error.
	ParamValues(ctx context.Context, device, pkg string) (map[string]any, error)

	// SetParamValues replaces the values of pkg for device ("" = fleet).
	// An empty map removes them.
	SetParamValues(ctx context.Context, device, pkg string, values map[string]any) error

	// AllParamValues returns every package's values for device ("" =
	// fleet), by package name.
	AllParamValues(ctx context.Context, device string) (map[string]map[string]any, error)

	// ParamDevices returns the ids of the devices that have values of
	// their own, sorted, so a caller resolving many devices reads values
	// only for those.
	ParamDevices(ctx context.Context) ([]string, error)
}
