package bench

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/blob"
	"github.com/drover-dev/drover/internal/client"
	"github.com/drover-dev/drover/internal/pki"
	"github.com/drover-dev/drover/internal/server"
	"github.com/drover-dev/drover/internal/store"
	"github.com/drover-dev/drover/internal/store/sqlite"
)

// PlanConfig configures Plan.
type PlanConfig struct {
	Devices int    // devices in the store, each with a report
	Runs    int    // timed plans of one change
	Dir     string // parent of the work folder ("" = the system temp folder)
	Out     io.Writer
}

// Plan times `drover plan` of a group change over a fleet of reported
// devices: an in-process server over SQLite, Devices device records
// (labels, tags and installed apps as agents report them), two group
// documents, then the plan of moving one group to a new version, first
// with no resolution cached (as after a restart) and then warm. Each plan
// prints its wall time and the CPU time the process (server and client)
// spent on it, which a loaded machine changes less.
func Plan(ctx context.Context, cfg PlanConfig) error {
	if cfg.Devices < 1 || cfg.Runs < 1 {
		return usagef("plan: -n and -runs must be at least 1")
	}
	dir, err := os.MkdirTemp(cfg.Dir, "drover-bench-plan-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	now := time.Now()
	pkiDir := filepath.Join(dir, "pki")
	if err := pki.Init(pkiDir, now); err != nil {
		return err
	}
	sc, sk, err := pki.Issue(pkiDir, pki.IssueOptions{Role: pki.RoleServer, Name: "localhost"}, now)
	if err != nil {
		return err
	}
	if _, _, err := pki.Issue(pkiDir, pki.IssueOptions{Role: pki.RoleAdmin, Name: "ops"}, now); err != nil {
		return err
	}
	tlsCfg, err := pki.ServerTLSConfig(sc, sk, filepath.Join(pkiDir, pki.CACertFile))
	if err != nil {
		return err
	}
	st, err := sqlite.Open(ctx, filepath.Join(dir, "drover.db"), nil)
	if err != nil {
		return err
	}
	defer st.Close()
	blobs, err := blob.NewFileStore(blob.FileConfig{Dir: filepath.Join(dir, "blobs"), NoSync: true})
	if err != nil {
		return err
	}
	start := func() (*client.Client, func(), error) {
		srv, err := server.New(ctx, server.Config{TLS: tlsCfg}, st, blobs)
		if err != nil {
			return nil, nil, err
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, nil, err
		}
		sctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- srv.Serve(sctx, ln) }()
		cl, err := newClient("https://"+ln.Addr().String(), pkiDir, "ops")
		if err != nil {
			cancel()
			<-done
			return nil, nil, err
		}
		return cl, func() { cl.Close(); cancel(); <-done }, nil
	}
	cl, stop, err := start()
	if err != nil {
		return err
	}
	defer func() { stop() }()

	// Packages: web 1.0.0 (installed everywhere it is wanted), web 1.1.0
	// (the change, one file of 50 changed) and a base package.
	web100, err := pushBenchBuild(ctx, cl, "web", "1.0.0", 50, -1)
	if err != nil {
		return err
	}
	if _, err := pushBenchBuild(ctx, cl, "web", "1.1.0", 50, 7); err != nil {
		return err
	}
	base, err := pushBenchBuild(ctx, cl, "base", "1.0.0", 10, -1)
	if err != nil {
		return err
	}

	// Devices as agents report them: 70% web servers in three zones.
	t0 := time.Now()
	webs := 0
	for i := range cfg.Devices {
		role := "db"
		installed := []api.InstalledApp{{Name: "com.example:base", Version: "1.0.0", Digest: base, Tags: []string{}, Install: api.InstallPrefix}}
		if i%10 < 7 {
			role = "web"
			webs++
			installed = append(installed, api.InstalledApp{Name: "com.example:web", Version: "1.0.0", Digest: web100, Tags: []string{}, Install: api.InstallPrefix})
		}
		d := api.Device{ID: fmt.Sprintf("dev-%05d", i), Tags: []string{"amd64", "linux", "systemd"}, LastSeen: now,
			Labels:    map[string]string{"env": "prod", "role": role, "zone": string(rune('a' + i%3))},
			Installed: installed, Facts: map[string]string{"arch": "amd64"}}
		if _, err := st.Commit(ctx, store.Write{Device: &d}); err != nil {
			return err
		}
	}
	fmt.Fprintf(cfg.Out, "plan: %d devices stored (%d web) in %.1f s\n", cfg.Devices, webs, time.Since(t0).Seconds())

	groups := func(webVersion string) []api.Document {
		return []api.Document{
			{Group: "all", Selector: "", Apps: []api.DesiredApp{{Name: "com.example:base", Version: "1.0.0"}}},
			{Group: "web", Selector: "env=prod,role=web", Apps: []api.DesiredApp{{Name: "com.example:web", Version: webVersion, Params: map[string]any{}}}},
		}
	}
	t0 = time.Now()
	if _, err := cl.SetDocuments(ctx, groups("1.0.0")); err != nil {
		return err
	}
	fmt.Fprintf(cfg.Out, "plan: state set of two groups over %d devices: %.2f s\n", cfg.Devices, time.Since(t0).Seconds())

	change := groups("^1.0")[1:]
	timePlan := func(what string) error {
		t0, cpu0 := time.Now(), procCPU(os.Getpid())
		p, err := cl.Plan(ctx, change)
		if err != nil {
			return err
		}
		d, cpu := time.Since(t0), procCPU(os.Getpid())-cpu0
		if p.Changed != webs {
			return fmt.Errorf("plan: %d devices change, want %d", p.Changed, webs)
		}
		fmt.Fprintf(cfg.Out, "plan: %-22s %s in %.3f s (CPU %.2f s, server and client)\n", what+":", p.Summary(), d.Seconds(), cpu.Seconds())
		return nil
	}
	// Cold: a new server over the same store, nothing resolved yet.
	stop()
	if cl, stop, err = start(); err != nil {
		return err
	}
	if err := timePlan("cold (after a restart)"); err != nil {
		return err
	}
	for i := range cfg.Runs {
		if err := timePlan(fmt.Sprintf("warm run %d", i+1)); err != nil {
			return err
		}
	}
	return nil
}

// pushBenchBuild pushes com.example:NAME:VERSION with files small files;
// file changed (if >= 0) gets content of its own, so versions share the
// rest. It returns the manifest digest.
func pushBenchBuild(ctx context.Context, cl *client.Client, name, version string, files, changed int) (string, error) {
	m := api.Manifest{Group: "com.example", Name: name, Version: version, Tags: []string{}, Install: api.InstallPrefix}
	for i := range files {
		content := fmt.Sprintf("%s file %d\n%s", name, i, bytes.Repeat([]byte("x"), 4096))
		if i == changed {
			content += version
		}
		sum := sha256.Sum256([]byte(content))
		d := hex.EncodeToString(sum[:])
		if err := cl.PutBlob(ctx, d, int64(len(content)), bytes.NewReader([]byte(content))); err != nil {
			return "", err
		}
		m.Files = append(m.Files, api.File{Path: fmt.Sprintf("share/f%03d", i), Type: api.TypeFile, Mode: 0o644, Size: int64(len(content)), Digest: d})
	}
	slices.SortFunc(m.Files, func(a, b api.File) int {
		switch {
		case a.Path < b.Path:
			return -1
		case a.Path > b.Path:
			return 1
		}
		return 0
	})
	data, err := json.Marshal(m)
	if err != nil {
		return "", err
	}
	b, err := cl.PushManifest(ctx, data)
	if err != nil {
		return "", fmt.Errorf("push %s %s: %w", name, version, err)
	}
	return b.Digest, nil
}
