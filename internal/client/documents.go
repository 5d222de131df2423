package client

import (
	"context"
	"net/http"
	"net/url"
	"strings"

	"github.com/drover-dev/drover/internal/api"
)

// SetDocuments sets device and group documents at once; the server
// stores all of them or none. The answer holds, per document, the
// device's resolved state (an empty one for a group).
func (c *Client) SetDocuments(ctx context.Context, docs []api.Document) ([]api.Resolved, error) {
	var out []api.Resolved
	err := c.doJSON(ctx, http.MethodPut, "/v1/states", nil, docs, &out)
	return out, err
}

// Plan is the dry run of docs: what they would change on each device.
func (c *Client) Plan(ctx context.Context, docs []api.Document) (api.Plan, error) {
	var out api.Plan
	err := c.doJSON(ctx, http.MethodPost, "/v1/plan", nil, docs, &out)
	return out, err
}

// Documents lists every document with the devices it gives apps to.
func (c *Client) Documents(ctx context.Context) ([]api.DocumentSummary, error) {
	var out []api.DocumentSummary
	err := c.doJSON(ctx, http.MethodGet, "/v1/documents", nil, nil, &out)
	return out, err
}

// Document returns one stored document; kind is api.DocDevice or
// api.DocGroup.
func (c *Client) Document(ctx context.Context, kind, name string) (api.Document, error) {
	var out api.Document
	err := c.doJSON(ctx, http.MethodGet, "/v1/documents/"+esc(kind)+"/"+esc(name), nil, nil, &out)
	return out, err
}

// RemoveDocument removes one stored document.
func (c *Client) RemoveDocument(ctx context.Context, kind, name string) error {
	return c.doJSON(ctx, http.MethodDelete, "/v1/documents/"+esc(kind)+"/"+esc(name), nil, nil, nil)
}

// RemoveDevice forgets a device: its record and own document go, its
// events stay.
func (c *Client) RemoveDevice(ctx context.Context, id string) error {
	return c.doJSON(ctx, http.MethodDelete, "/v1/devices/"+esc(id), nil, nil, nil)
}

// RemovePackage is DeletePackage that, with force, removes builds some
// device's effective state still uses (the server refuses otherwise).
func (c *Client) RemovePackage(ctx context.Context, coordinate string, tags []string, force bool) (int, error) {
	q := url.Values{}
	if tags != nil {
		q.Set("tags", strings.Join(tags, ","))
	}
	if force {
		q.Set("force", "1")
	}
	var out struct {
		Deleted int `json:"deleted"`
	}
	err := c.doJSON(ctx, http.MethodDelete, "/v1/packages/"+esc(coordinate), q, nil, &out)
	return out.Deleted, err
}
