package param

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/template"

	securejoin "github.com/cyphar/filepath-securejoin"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/atomicfile"
)

// Data is what a template sees: .Params.NAME, .Device.ID,
// .Device.Labels.KEY, .Package.Name, .Package.Version and .Instance.
type Data struct {
	Params   map[string]any
	Device   Device
	Package  Package
	Instance string
}

// Device is the device a template is rendered for.
type Device struct {
	ID     string
	Labels map[string]string
}

// Package is the package a template belongs to.
type Package struct {
	Name    string // group:name
	Version string
}

// maxTemplate bounds a template's source and its output.
const maxTemplate = 4 << 20

// Render renders one template. A key that is not there (an undeclared
// parameter, a label the device lacks) is an error, never "<no value>".
func Render(name string, src []byte, d Data) ([]byte, error) {
	if len(src) > maxTemplate {
		return nil, fmt.Errorf("template %s: larger than %d bytes", name, maxTemplate)
	}
	if d.Params == nil {
		d.Params = map[string]any{}
	}
	if d.Device.Labels == nil {
		d.Device.Labels = map[string]string{}
	}
	t, err := template.New(name).Option("missingkey=error").Parse(string(src))
	if err != nil {
		return nil, fmt.Errorf("template %s: %w", name, err)
	}
	var b bytes.Buffer
	if err := t.Execute(&b, d); err != nil {
		return nil, fmt.Errorf("template %s: %w", name, err)
	}
	if b.Len() > maxTemplate {
		return nil, fmt.Errorf("template %s: output larger than %d bytes", name, maxTemplate)
	}
	return b.Bytes(), nil
}

// Rendered is one template of a manifest, rendered.
type Rendered struct {
	Dest string // the template's dest, relative to the install location
	Data []byte
}

// RenderTemplates renders each template of m (its source read through
// open, by digest) with d.
func RenderTemplates(ctx context.Context, m *api.Manifest, d Data, open func(ctx context.Context, digest string) (io.ReadCloser, error)) ([]Rendered, error) {
	var out []Rendered
	for _, t := range m.Templates {
		f, err := open(ctx, t.Digest)
		if err != nil {
			return nil, fmt.Errorf("template %s: %w", t.Src, err)
		}
		src, err := io.ReadAll(io.LimitReader(f, maxTemplate+1))
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("template %s: %w", t.Src, err)
		}
		data, err := Render(t.Src, src, d)
		if err != nil {
			return nil, err
		}
		out = append(out, Rendered{Dest: t.Dest, Data: data})
	}
	return out, nil
}

// WriteTemplates renders each template of m (its source read through
// open, by digest) with d and writes it to its dest under loc, atomically,
// never outside loc. It is for a prefix-mode version folder, which the
// package owns whole; in root mode templates go through the install
// engine as files the package owns (install.Target.Templates).
func WriteTemplates(ctx context.Context, loc string, m *api.Manifest, d Data, open func(ctx context.Context, digest string) (io.ReadCloser, error)) error {
	rendered, err := RenderTemplates(ctx, m, d, open)
	if err != nil {
		return err
	}
	for _, r := range rendered {
		dest, err := securejoin.SecureJoin(loc, filepath.FromSlash(r.Dest))
		if err != nil {
			return fmt.Errorf("template dest %s: %w", r.Dest, err)
		}
		if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
			return fmt.Errorf("template dest %s: %w", r.Dest, err)
		}
		if err := writeNew(dest, r.Data); err != nil {
			return fmt.Errorf("template dest %s: %w", r.Dest, err)
		}
	}
	return nil
}

// writeNew replaces dest with data (atomicfile: a temp file of its own,
// O_EXCL|O_NOFOLLOW, so nothing planted beside dest can redirect the
// write). Rendered templates hold parameter values, which may be secrets:
// a new file is 0640, and a file already there keeps its mode (the
// package's or the operator's).
func writeNew(dest string, data []byte) error {
	mode := os.FileMode(0o640)
	if fi, err := os.Lstat(dest); err == nil && fi.Mode().IsRegular() {
		mode = fi.Mode().Perm()
	}
	return atomicfile.WriteFile(dest, data, mode)
}
