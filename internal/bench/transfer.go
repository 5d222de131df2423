package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/client"
	"github.com/drover-dev/drover/internal/local"
	"github.com/drover-dev/drover/internal/pki"
)

// DebPair is one real update from Debian's archive: a package and two of
// its versions.
type DebPair struct {
	Name, Old, New string
}

// DefaultPairs are updates that Debian 12's archive (bookworm,
// bookworm-updates, bookworm-security) carries both versions of.
var DefaultPairs = []DebPair{
	{"libssl3", "3.0.20-1~deb12u2", "3.0.22-1~deb12u2"},
	{"openssl", "3.0.20-1~deb12u2", "3.0.22-1~deb12u2"},
	{"postgresql-15", "15.18-0+deb12u1", "15.20-0+deb12u1"},
	{"libcurl4", "7.88.1-10+deb12u5", "7.88.1-10+deb12u15"},
	{"curl", "7.88.1-10+deb12u5", "7.88.1-10+deb12u15"},
	{"tzdata", "2026b-0+deb12u1", "2026f-0+deb12u1"},
	{"libc6", "2.36-9+deb12u7", "2.36-9+deb12u14"},
	{"git", "1:2.39.5-0+deb12u2", "1:2.39.5-0+deb12u3"},
}

// SelectPairs returns the pairs of DefaultPairs named in a comma-separated
// list; all of them for "".
func SelectPairs(names string) ([]DebPair, error) {
	if names == "" {
		return DefaultPairs, nil
	}
	var out []DebPair
	for _, n := range strings.Split(names, ",") {
		found := false
		for _, p := range DefaultPairs {
			if p.Name == strings.TrimSpace(n) {
				out = append(out, p)
				found = true
			}
		}
		if !found {
			return nil, usagef("no update of %q in the list; it has libssl3, openssl, postgresql-15, libcurl4, curl, tzdata, libc6, git", n)
		}
	}
	return out, nil
}

// TransferConfig configures Transfer.
type TransferConfig struct {
	// Pairs are the updates measured; nil = DefaultPairs.
	Pairs []DebPair
	// Debs caches the downloaded .deb files; "" = the user's cache folder.
	Debs string
	// Dir is the parent of the work folder; "" = the system temp folder.
	Dir string
	// Drover is the binary run as server and agent; "" = build ./cmd/drover.
	Drover string
	// Out receives the figures.
	Out io.Writer
}

// TransferResult is one pair's figures.
type TransferResult struct {
	Pair                 DebPair
	TreeBytes            int64 // the new version's files
	DebBytes             int64 // the new .deb
	FirstBytes           int64 // received by the agent installing the old... new version from nothing
	UpgradeBytes         int64 // received by the agent upgrading old -> new
	ZstdFirst, ZstdPatch int64 // zstd -19 --long of the new tree's tar, and with --patch-from the old tar
	ServerCPU            time.Duration
	ServerPeak           int64
	FirstTime, UpTime    time.Duration
}

// Transfer measures the bytes a real agent receives from a real server
// (both processes of the drover binary) installing and then upgrading
// real Debian packages in root mode: for each pair, the new version
// installed on a fresh device, and the old version upgraded to the new
// one; against the new .deb and against zstd -19 --long with and without
// --patch-from the old tree. The server's CPU time and peak memory are
// read from /proc while it prepares the upgrade (deltas and packs).
func Transfer(ctx context.Context, cfg TransferConfig) error {
	if cfg.Pairs == nil {
		cfg.Pairs = DefaultPairs
	}
	if cfg.Debs == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			return err
		}
		cfg.Debs = filepath.Join(cache, "drover-bench", "debs")
	}
	for _, tool := range []string{"apt-get", "dpkg-deb", "tar", "zstd"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("transfer: %s not found (apt-get install zstd; the benchmark runs on Debian)", tool)
		}
	}
	if err := os.MkdirAll(cfg.Debs, 0o755); err != nil {
		return err
	}
	work, err := os.MkdirTemp(cfg.Dir, "drover-bench-transfer-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	bin := cfg.Drover
	if bin == "" {
		if bin, err = buildDrover(ctx, work); err != nil {
			return err
		}
	}
	pkiDir := filepath.Join(work, "pki")
	now := time.Now()
	if err := pki.Init(pkiDir, now); err != nil {
		return err
	}
	for _, o := range []pki.IssueOptions{{Role: pki.RoleServer, Name: "localhost"}, {Role: pki.RoleAdmin, Name: "bench-admin"}} {
		if _, _, err := pki.Issue(pkiDir, o, now); err != nil {
			return err
		}
	}
	// Deltas are waited for however loaded the machine is: the figures
	// are those of an upgrade with its deltas made.
	srv, err := startServer(ctx, bin, work, pkiDir, "--delta-wait", "10m")
	if err != nil {
		return err
	}
	defer func() { srv.stop() }()
	admin, err := newClient(srv.addr, pkiDir, "bench-admin")
	if err != nil {
		return err
	}
	defer admin.Close()
	out := cfg.Out
	fmt.Fprintf(out, "transfer: %d Debian updates, drover server and agent processes on loopback, root mode\n", len(cfg.Pairs))
	var results []TransferResult
	for i, p := range cfg.Pairs {
		r, err := transferPair(ctx, bin, work, pkiDir, &srv, admin, p, i, cfg.Debs)
		if err != nil {
			return fmt.Errorf("%s %s -> %s: %w", p.Name, p.Old, p.New, err)
		}
		results = append(results, r)
		fmt.Fprintf(out, "  %s done: first %s in %s, upgrade %s in %s\n", p.Name, mb(r.FirstBytes), secs(r.FirstTime), mb(r.UpgradeBytes), secs(r.UpTime))
	}
	printTransfer(out, results)
	return nil
}

func mb(n int64) string { return fmt.Sprintf("%.2f MB", float64(n)/1e6) }

func ratio(a, b int64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", float64(a)/float64(b))
}

func printTransfer(out io.Writer, rs []TransferResult) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "package\ttree\tnew .deb\tfirst install\t/deb\tzstd -19\t/deb\tupgrade\t/deb\tpatch-from\t/deb\tserver CPU\tpeak RSS\t")
	var tree, deb, first, up, zf, zp int64
	var cpu time.Duration
	var peak int64
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d MB\t\n", r.Pair.Name, mb(r.TreeBytes), mb(r.DebBytes),
			mb(r.FirstBytes), ratio(r.FirstBytes, r.DebBytes), mb(r.ZstdFirst), ratio(r.ZstdFirst, r.DebBytes),
			mb(r.UpgradeBytes), ratio(r.UpgradeBytes, r.DebBytes), mb(r.ZstdPatch), ratio(r.ZstdPatch, r.DebBytes),
			secs(r.ServerCPU), r.ServerPeak>>20)
		tree += r.TreeBytes
		deb += r.DebBytes
		first += r.FirstBytes
		up += r.UpgradeBytes
		zf += r.ZstdFirst
		zp += r.ZstdPatch
		cpu += r.ServerCPU
		peak = max(peak, r.ServerPeak)
	}
	fmt.Fprintf(tw, "total\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d MB\t\n", mb(tree), mb(deb), mb(first), ratio(first, deb),
		mb(zf), ratio(zf, deb), mb(up), ratio(up, deb), mb(zp), ratio(zp, deb), secs(cpu), peak>>20)
	tw.Flush()
}

// transferPair measures one pair with two fresh devices: one installs the
// new version from nothing, the other installs the old one and upgrades.
func transferPair(ctx context.Context, bin, work, pkiDir string, srvp **serverProc, admin *client.Client, p DebPair, i int, debs string) (TransferResult, error) {
	srv := *srvp
	r := TransferResult{Pair: p}
	dir := filepath.Join(work, fmt.Sprintf("pair-%d", i))
	trees := map[string]string{}
	for v, ver := range map[string]string{"1.0.0": p.Old, "2.0.0": p.New} {
		deb, err := fetchDeb(ctx, debs, p.Name, ver)
		if err != nil {
			return r, err
		}
		src := filepath.Join(dir, "src-"+v)
		files := filepath.Join(src, "files")
		if err := os.MkdirAll(files, 0o755); err != nil {
			return r, err
		}
		if err := runCmd(ctx, "", "dpkg-deb", "-x", deb, files); err != nil {
			return r, err
		}
		if err := relativeLinks(files); err != nil {
			return r, err
		}
		yaml := fmt.Sprintf("group: org.debian\nname: %s\nversion: %s\ninstall: root\n", p.Name, v)
		if err := os.WriteFile(filepath.Join(src, "drover.yaml"), []byte(yaml), 0o644); err != nil {
			return r, err
		}
		pkg := filepath.Join(dir, v+".drover")
		if err := runCmd(ctx, "", bin, "pkg", "build", src, "-o", pkg); err != nil {
			return r, err
		}
		if err := runAdmin(ctx, bin, srv.addr, pkiDir, "pkg", "push", pkg); err != nil {
			return r, err
		}
		trees[v] = files
		if v == "2.0.0" {
			fi, err := os.Stat(deb)
			if err != nil {
				return r, err
			}
			r.DebBytes = fi.Size()
			r.TreeBytes, _ = treeBytes(files)
		}
	}
	var err error
	if r.ZstdFirst, r.ZstdPatch, err = zstdReference(ctx, dir, trees["1.0.0"], trees["2.0.0"]); err != nil {
		return r, err
	}
	name := "org.debian:" + p.Name
	// First install of the new version on a fresh device.
	fresh, err := startBenchAgent(ctx, bin, dir, pkiDir, srv.addr, fmt.Sprintf("first-%d", i))
	if err != nil {
		return r, err
	}
	defer fresh.stop()
	t0 := time.Now()
	if r.FirstBytes, err = fresh.converge(ctx, admin, name, "2.0.0"); err != nil {
		return r, err
	}
	r.FirstTime = time.Since(t0)
	// The old version on another device, then the upgrade; the server's
	// CPU and peak memory are those of preparing and serving it.
	old, err := startBenchAgent(ctx, bin, dir, pkiDir, srv.addr, fmt.Sprintf("upgrade-%d", i))
	if err != nil {
		return r, err
	}
	defer old.stop()
	if _, err = old.converge(ctx, admin, name, "1.0.0"); err != nil {
		return r, err
	}
	fresh.stop()
	// A fresh server process on the same address and data, so its peak
	// memory is that of preparing this upgrade alone.
	srv.stop()
	if srv, err = startServer(ctx, bin, work, pkiDir, "--delta-wait", "10m", "--listen", strings.TrimPrefix(srv.addr, "https://")); err != nil {
		return r, err
	}
	*srvp = srv
	pid := srv.cmd.Process.Pid
	cpu0 := procCPU(pid)
	t0 = time.Now()
	if r.UpgradeBytes, err = old.converge(ctx, admin, name, "2.0.0"); err != nil {
		return r, err
	}
	r.UpTime = time.Since(t0)
	r.ServerCPU = procCPU(pid) - cpu0
	r.ServerPeak, _ = procStatusBytes(pid, "VmHWM")
	return r, nil
}

// fetchDeb returns the .deb of name at version in dir, downloading it
// with apt-get when it is not there yet.
func fetchDeb(ctx context.Context, dir, name, version string) (string, error) {
	// apt-get names files NAME_VERSION_ARCH.deb with ':' escaped.
	esc := strings.ReplaceAll(version, ":", "%3a")
	find := func() string {
		m, _ := filepath.Glob(filepath.Join(dir, name+"_"+esc+"_*.deb"))
		if len(m) == 1 {
			return m[0]
		}
		return ""
	}
	if f := find(); f != "" {
		return f, nil
	}
	if err := runCmd(ctx, dir, "apt-get", "download", name+"="+version); err != nil {
		return "", fmt.Errorf("%w (run apt-get update first; apt-cache madison %s lists the versions)", err, name)
	}
	if f := find(); f != "" {
		return f, nil
	}
	return "", fmt.Errorf("apt-get download %s=%s left no .deb in %s", name, version, dir)
}

// relativeLinks rewrites absolute symlinks of a root-mode tree as
// relative ones, which the package format requires; they point at the
// same place once installed at /.
func relativeLinks(root string) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.Type()&fs.ModeSymlink == 0 {
			return err
		}
		target, err := os.Readlink(p)
		if err != nil || !filepath.IsAbs(target) {
			return err
		}
		rel, err := filepath.Rel(filepath.Dir(p), filepath.Join(root, target))
		if err != nil {
			return err
		}
		if err := os.Remove(p); err != nil {
			return err
		}
		return os.Symlink(rel, p)
	})
}

func treeBytes(root string) (int64, error) {
	var n int64
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return err
	})
	return n, err
}

// zstdReference returns the sizes of zstd -19 --long of the new tree's
// tar, and of the same with --patch-from the old tree's tar.
func zstdReference(ctx context.Context, dir, oldTree, newTree string) (first, patch int64, err error) {
	oldTar, newTar := filepath.Join(dir, "old.tar"), filepath.Join(dir, "new.tar")
	for _, t := range [][2]string{{oldTree, oldTar}, {newTree, newTar}} {
		if err := runCmd(ctx, "", "tar", "-C", t[0], "-cf", t[1], "."); err != nil {
			return 0, 0, err
		}
	}
	size := func(args ...string) (int64, error) {
		outFile := filepath.Join(dir, "ref.zst")
		if err := runCmd(ctx, "", "zstd", append(append([]string{"-q", "-f", "-19", "--long=27", "--single-thread"}, args...), newTar, "-o", outFile)...); err != nil {
			return 0, err
		}
		fi, err := os.Stat(outFile)
		if err != nil {
			return 0, err
		}
		return fi.Size(), os.Remove(outFile)
	}
	if first, err = size(); err != nil {
		return 0, 0, err
	}
	if patch, err = size("--patch-from=" + oldTar); err != nil {
		return 0, 0, err
	}
	return first, patch, errors.Join(os.Remove(oldTar), os.Remove(newTar))
}

// runAdmin runs the drover binary as the benchmark's operator.
func runAdmin(ctx context.Context, bin, addr, pkiDir string, args ...string) error {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "DROVER_ADDR="+addr, "DROVER_CACERT="+filepath.Join(pkiDir, pki.CACertFile),
		"DROVER_CLIENT_CERT="+filepath.Join(pkiDir, "bench-admin.crt"), "DROVER_CLIENT_KEY="+filepath.Join(pkiDir, "bench-admin.key"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("drover %s: %w: %s", strings.Join(args, " "), err, lastLines(string(out), 3))
	}
	return nil
}

// benchAgent is one `drover agent` process installing in root mode into
// its own folder.
type benchAgent struct {
	id, home string
	cmd      *exec.Cmd
	logs     *os.File
}

func startBenchAgent(ctx context.Context, bin, dir, pkiDir, addr, id string) (*benchAgent, error) {
	now := time.Now()
	if _, _, err := pki.Issue(pkiDir, pki.IssueOptions{Role: pki.RoleDevice, Name: id}, now); err != nil {
		return nil, err
	}
	base := filepath.Join(dir, "agent-"+id)
	a := &benchAgent{id: id, home: filepath.Join(base, "home")}
	root := filepath.Join(base, "root")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, err
	}
	logs, err := os.Create(filepath.Join(base, "agent.log"))
	if err != nil {
		return nil, err
	}
	a.logs = logs
	a.cmd = exec.Command(bin, "agent", "--home", a.home, "--root", root, "--software-root", filepath.Join(base, "software"),
		"--runtime-root", filepath.Join(base, "runtime"), "--addr", addr, "--ca-cert", filepath.Join(pkiDir, pki.CACertFile),
		"--client-cert", filepath.Join(pkiDir, id+".crt"), "--client-key", filepath.Join(pkiDir, id+".key"),
		"--report-interval", "5s")
	a.cmd.Stdout, a.cmd.Stderr = logs, logs
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := a.cmd.Start(); err != nil {
		logs.Close()
		return nil, fmt.Errorf("start drover agent: %w", err)
	}
	return a, nil
}

func (a *benchAgent) stop() {
	if a.cmd.ProcessState != nil {
		return // stopped already
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = a.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = a.cmd.Process.Kill()
		<-done
	}
	a.logs.Close()
}

// converge sets the device's state to name at version, waits until it
// reports it installed, and returns the bytes its download counter grew
// by.
func (a *benchAgent) converge(ctx context.Context, admin *client.Client, name, version string) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	// Wait for the agent's first report and socket.
	var before int64
	for {
		n, err := a.downloaded(ctx)
		if err == nil {
			if _, err := admin.Device(ctx, a.id); err == nil {
				before = n
				break
			}
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("agent %s did not start: %w", a.id, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	if _, err := admin.SetState(ctx, api.DesiredState{ID: a.id, Apps: []api.DesiredApp{{Name: name, Version: version}}}); err != nil {
		return 0, err
	}
	var lastErr string
	var since time.Time
	for {
		d, err := admin.Device(ctx, a.id)
		if err == nil {
			for _, app := range d.Installed {
				if app.Name == name && app.Version == version && d.Converged {
					after, err := a.downloaded(ctx)
					return after - before, err
				}
			}
			// An error that lasts is the device's answer; one seen while
			// the server restarted is not.
			if d.Error == "" || d.Error != lastErr {
				lastErr, since = d.Error, time.Now()
			} else if time.Since(since) > time.Minute {
				return 0, fmt.Errorf("agent %s: %s; its log: %s", a.id, d.Error, a.logTail())
			}
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("agent %s did not install %s %s: %w; its log: %s", a.id, name, version, ctx.Err(), a.logTail())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// logTail returns the last warnings of the agent's log.
func (a *benchAgent) logTail() string {
	data, _ := os.ReadFile(a.logs.Name())
	var warns []string
	for _, l := range strings.Split(string(data), "\n") {
		if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
			warns = append(warns, l)
		}
	}
	return lastLines(strings.Join(warns, "\n"), 3)
}

// downloaded reads drover_agent_download_bytes_total from the agent's
// /metrics on its local socket.
func (a *benchAgent) downloaded(ctx context.Context) (int64, error) {
	sock := local.SocketPath(a.home)
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://agent/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "drover_agent_download_bytes_total "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return int64(f), err
		}
	}
	return 0, errors.New("no drover_agent_download_bytes_total in the agent's /metrics")
}
