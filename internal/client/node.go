package client

import (
	"context"
	"net/http"

	"github.com/drover-dev/drover/internal/api"
)

// Keepalive sets, extends or cancels a device's keepalive, which holds
// off a health-check termination (`drover keepalive`).
func (c *Client) Keepalive(ctx context.Context, id string, req api.KeepaliveRequest) (api.KeepaliveResponse, error) {
	var out api.KeepaliveResponse
	err := c.doJSON(ctx, http.MethodPut, "/v1/devices/"+esc(id)+"/keepalive", nil, req, &out)
	return out, err
}
