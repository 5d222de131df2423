// Package dev is `drover dev`: a server, an agent and sample packages in
// one process under a temporary folder, converging in front of the user,
// for a first try. It is a composition of the real packages, not a mock:
// everything talks over loopback mTLS as a real fleet does.
package dev

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/drover-dev/drover/internal/agent"
	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/blob"
	"github.com/drover-dev/drover/internal/client"
	"github.com/drover-dev/drover/internal/pkgfile"
	"github.com/drover-dev/drover/internal/pki"
	"github.com/drover-dev/drover/internal/push"
	"github.com/drover-dev/drover/internal/server"
	"github.com/drover-dev/drover/internal/store/sqlite"
)

//go:embed all:samples
var samples embed.FS

// Config holds the settings of a dev run.
type Config struct {
	// Dir is the folder everything goes in; it is made if missing.
	Dir string
	// Listen is the server's address; "" tries 127.0.0.1:8443, then any
	// free port.
	Listen string
	// Out receives the story of the run and what to try next.
	Out    io.Writer
	Logger *slog.Logger
}

// Device is the dev agent's device id; Admin the operator's name.
const (
	Device = "dev-1"
	Admin  = "dev-admin"
)

// Run sets everything up, waits until the device has converged, prints
// what to try next and then serves until ctx is done.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	out := cfg.Out
	now := time.Now()
	pkiDir := filepath.Join(cfg.Dir, "pki")
	if err := pki.Init(pkiDir, now); err != nil {
		return err
	}
	issue := func(opt pki.IssueOptions) (string, string, error) { return pki.Issue(pkiDir, opt, now) }
	srvCert, srvKey, err := issue(pki.IssueOptions{Role: pki.RoleServer, Name: "localhost"})
	if err != nil {
		return err
	}
	devCert, devKey, err := issue(pki.IssueOptions{Role: pki.RoleDevice, Name: Device})
	if err != nil {
		return err
	}
	admCert, admKey, err := issue(pki.IssueOptions{Role: pki.RoleAdmin, Name: Admin})
	if err != nil {
		return err
	}
	caFile := filepath.Join(pkiDir, "ca.crt")
	fmt.Fprintf(out, "drover dev: everything lives in %s\n", cfg.Dir)

	// Server.
	ln, err := listen(cfg.Listen)
	if err != nil {
		return err
	}
	addr := "https://" + ln.Addr().String()
	tlsCfg, err := pki.ServerTLSConfig(srvCert, srvKey, caFile)
	if err != nil {
		return err
	}
	dataDir := filepath.Join(cfg.Dir, "server")
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return err
	}
	st, err := sqlite.Open(ctx, filepath.Join(dataDir, "drover.db"), cfg.Logger)
	if err != nil {
		return err
	}
	defer st.Close()
	blobs, err := blob.NewFileStore(blob.FileConfig{Dir: filepath.Join(dataDir, "blobs")})
	if err != nil {
		return err
	}
	srv, err := server.New(ctx, server.Config{TLS: tlsCfg, Logger: cfg.Logger.With("part", "server"),
		Transfer: server.TransferConfig{Dir: filepath.Join(dataDir, "transfer")}}, st, blobs)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 2)
	go func() { done <- srv.Serve(ctx, ln) }()
	fmt.Fprintf(out, "server listening on %s\n", addr)

	// Operator: build and push the samples, declare the desired state.
	admTLS, err := pki.ClientTLSConfig(admCert, admKey, caFile)
	if err != nil {
		return err
	}
	op, err := client.New(client.Config{Addr: addr, TLS: admTLS})
	if err != nil {
		return err
	}
	defer op.Close()
	pkgDir := filepath.Join(cfg.Dir, "packages")
	built, err := buildSamples(pkgDir)
	if err != nil {
		return err
	}
	for _, b := range built {
		if _, err := push.File(ctx, op, b, nil); err != nil {
			return err
		}
		fmt.Fprintf(out, "pushed %s\n", filepath.Base(b))
	}
	desired := api.DesiredState{ID: Device, Apps: []api.DesiredApp{
		{Name: "com.example:hello", Version: "1.0.0", Tags: []string{}},
		{Name: "com.example:motd", Version: "^1.0", Tags: []string{}},
	}}
	if _, err := op.SetState(ctx, desired); err != nil {
		return fmt.Errorf("set desired state: %w", err)
	}
	fmt.Fprintf(out, "desired state of %s: com.example:hello 1.0.0, com.example:motd ^1.0\n", Device)

	// Agent.
	devTLS, err := pki.ClientTLSConfig(devCert, devKey, caFile)
	if err != nil {
		return err
	}
	dc, err := client.New(client.Config{Addr: addr, TLS: devTLS})
	if err != nil {
		return err
	}
	defer dc.Close()
	home := filepath.Join(cfg.Dir, "agent")
	rootDir := filepath.Join(cfg.Dir, "root")
	if err := os.MkdirAll(rootDir, 0o755); err != nil {
		return err
	}
	ag, err := agent.New(agent.Config{
		Home: home, Device: Device, Root: rootDir, Tags: nil, Labels: map[string]string{"env": "dev"},
		ReportInterval: 10 * time.Second, Logger: cfg.Logger.With("part", "agent"),
	}, dc)
	if err != nil {
		return err
	}
	go func() { done <- ag.Run(ctx) }()
	fmt.Fprintf(out, "agent %s started with tags %s\n", Device, strings.Join(ag.Tags(), ","))

	if err := waitConverged(ctx, op, out, done); err != nil {
		return err
	}
	fmt.Fprintf(out, "\n%s converged: %s/com/example/hello/current -> 1.0.0, %s/etc/motd\n\n", Device, filepath.Join(home, "software"), rootDir)
	printNext(out, cfg.Dir, addr, caFile, admCert, admKey, home, rootDir)

	select {
	case <-ctx.Done():
		fmt.Fprintln(out, "\ndrover dev: stopping")
	case err := <-done:
		if err != nil {
			return err
		}
	}
	cancel()
	return nil
}

func listen(addr string) (net.Listener, error) {
	if addr != "" {
		return net.Listen("tcp", addr)
	}
	if ln, err := net.Listen("tcp", "127.0.0.1:8443"); err == nil {
		return ln, nil
	}
	return net.Listen("tcp", "127.0.0.1:0")
}

// waitConverged prints the device's events until it reports converged.
func waitConverged(ctx context.Context, op *client.Client, out io.Writer, done <-chan error) error {
	var after int64
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		evs, err := op.Events(ctx, client.EventQuery{After: after, Device: Device})
		if err != nil {
			return err
		}
		for _, ev := range evs {
			after = ev.ID
			fmt.Fprintf(out, "  event %-12s %s\n", ev.Kind, ev.Message)
		}
		d, err := op.Device(ctx, Device)
		if err == nil && d.Converged {
			return nil
		}
		if err == nil && d.Error != "" {
			return fmt.Errorf("device %s failed to converge: %s", Device, d.Error)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-done:
			if err == nil {
				err = errors.New("stopped")
			}
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("device %s did not converge within 60s", Device)
}

func printNext(out io.Writer, dir, addr, ca, cert, key, home, root string) {
	fmt.Fprintf(out, `Try next, in another terminal:

  export DROVER_ADDR=%s
  export DROVER_CACERT=%s
  export DROVER_CLIENT_CERT=%s
  export DROVER_CLIENT_KEY=%s

  go run ./cmd/drover device ls
  go run ./cmd/drover device show %[5]s
  go run ./cmd/drover pkg ls
  go run ./cmd/drover events
  %[6]s/software/com/example/hello/current/bin/hello

  # upgrade: ask for hello 1.1.0, then watch 'current' switch
  go run ./cmd/drover state get %[5]s | sed 's/version: 1.0.0/version: 1.1.0/' > /tmp/state.yaml
  go run ./cmd/drover state set -f /tmp/state.yaml
  %[6]s/software/com/example/hello/current/bin/hello

Root-mode files land under %[7]s. Sample sources: %[8]s/packages.
Press Ctrl-C to stop; the folder %[8]s stays for you to look at.
`, addr, ca, cert, key, Device, home, root, dir)
}

// buildSamples writes the embedded sample sources to disk with the modes a
// package author would give them, and builds each into a package file.
func buildSamples(dir string) ([]string, error) {
	src := filepath.Join(dir, "src")
	err := fs.WalkDir(samples, "samples", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel := strings.TrimPrefix(p, "samples")
		target := filepath.Join(src, filepath.FromSlash(rel))
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		data, err := samples.ReadFile(p)
		if err != nil {
			return err
		}
		mode := os.FileMode(0o644)
		if path.Base(path.Dir(p)) == "scripts" || path.Base(path.Dir(p)) == "bin" {
			mode = 0o755
		}
		return os.WriteFile(target, data, mode)
	})
	if err != nil {
		return nil, fmt.Errorf("write samples: %w", err)
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		var buf bytes.Buffer
		if _, _, _, err := pkgfile.Build(filepath.Join(src, e.Name()), &buf); err != nil {
			return nil, fmt.Errorf("build sample %s: %w", e.Name(), err)
		}
		file := filepath.Join(dir, e.Name()+".drover")
		if err := os.WriteFile(file, buf.Bytes(), 0o644); err != nil {
			return nil, err
		}
		out = append(out, file)
	}
	return out, nil
}
