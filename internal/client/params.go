package client

import (
	"context"
	"net/http"
	"net/url"
)

// ParamValues are the parameter values of one scope (the fleet's when
// Device is empty), by package name.
type ParamValues struct {
	Device   string                    `json:"device,omitempty" yaml:"device,omitempty"`
	Packages map[string]map[string]any `json:"packages" yaml:"packages"`
}

func paramQuery(device string) url.Values {
	if device == "" {
		return nil
	}
	return url.Values{"device": {device}}
}

// Params returns the fleet's values (device "") or a device's, of one
// package or (pkg "") of all.
func (c *Client) Params(ctx context.Context, device, pkg string) (ParamValues, error) {
	var out ParamValues
	path := "/v1/params"
	if pkg != "" {
		path += "/" + esc(pkg)
	}
	err := c.doJSON(ctx, http.MethodGet, path, paramQuery(device), nil, &out)
	return out, err
}

// SetParams sets and unsets values of a package for the fleet (device
// "") or a device; the server checks them against the package's
// declarations and wakes the devices concerned.
func (c *Client) SetParams(ctx context.Context, device, pkg string, set map[string]any, unset []string) (ParamValues, error) {
	var out ParamValues
	in := struct {
		Set   map[string]any `json:"set,omitempty"`
		Unset []string       `json:"unset,omitempty"`
	}{set, unset}
	err := c.doJSON(ctx, http.MethodPut, "/v1/params/"+esc(pkg), paramQuery(device), in, &out)
	return out, err
}
