package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// droverBin is the real binary, built once by TestMain; end-to-end tests
// run it as a user would.
var droverBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "drover-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	droverBin = filepath.Join(dir, "drover")
	// No agent of a test asks the real link-local metadata address; the
	// tests of cloud facts point --metadata-url at a fake on loopback.
	os.Setenv("DROVER_METADATA_URL", "none")
	build := exec.Command("go", "build", "-o", droverBin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build drover:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// fleet is a real server process with a PKI and an admin certificate.
type fleet struct {
	t      *testing.T
	dir    string
	pki    string
	addr   string
	server *exec.Cmd
	pipe   *io.PipeWriter
	logs   *syncBuffer
	listen string // address to listen on; "" = any free port
	// serverArgs are added to the server's command line.
	serverArgs []string
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// result is what one run of the binary did.
type result struct {
	stdout, stderr string
	code           int
}

func runBin(t *testing.T, env []string, stdin string, args ...string) result {
	t.Helper()
	cmd := exec.Command(droverBin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run drover %v: %v", args, err)
	}
	return result{out.String(), errb.String(), code}
}

var listenRe = regexp.MustCompile(`addr=(https://127\.0\.0\.1:\d+)`)

func newFleet(t *testing.T) *fleet {
	t.Helper()
	f := &fleet{t: t, dir: t.TempDir()}
	f.pki = filepath.Join(f.dir, "pki")
	f.mustOK(nil, "pki", "init", "--dir", f.pki)
	f.mustOK(nil, "pki", "issue", "--dir", f.pki, "--server", "localhost")
	f.mustOK(nil, "pki", "issue", "--dir", f.pki, "--admin", "ops")
	f.startServer()
	return f
}

func (f *fleet) startServer() {
	t := f.t
	f.logs = &syncBuffer{}
	listen := f.listen
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	cmd := exec.Command(droverBin, "server", "--data", filepath.Join(f.dir, "data"), "--listen", listen,
		"--tls-cert", filepath.Join(f.pki, "localhost.crt"), "--tls-key", filepath.Join(f.pki, "localhost.key"),
		"--ca-cert", filepath.Join(f.pki, "ca.crt"))
	cmd.Args = append(cmd.Args, f.serverArgs...)
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatalf("start server: %v", err)
	}
	f.server = cmd
	f.pipe = pw
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sent := false
		for sc.Scan() {
			line := sc.Text()
			f.logs.Write([]byte(line + "\n"))
			if m := listenRe.FindStringSubmatch(line); m != nil && !sent {
				found <- m[1]
				sent = true
			}
		}
	}()
	t.Cleanup(func() { f.stopServer(cmd, pw) })
	select {
	case f.addr = <-found:
	case <-time.After(20 * time.Second):
		t.Fatalf("server did not start; its log:\n%s", f.logs.String())
	}
}

// stopServer stops the server as an init system would, with SIGTERM, and
// checks it stops cleanly and in time.
func (f *fleet) stopServer(cmd *exec.Cmd, pw *io.PipeWriter) {
	if cmd.ProcessState != nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			f.t.Errorf("server stopped with %v after SIGTERM; log tail:\n%s", err, tail(f.logs.String(), 2000))
		}
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		f.t.Errorf("server did not stop within 15s of SIGTERM")
	}
	pw.Close()
}

// restartServer stops the server and starts it again on the same address
// and data.
func (f *fleet) restartServer() {
	f.t.Helper()
	addr := f.addr
	f.stopServer(f.server, f.pipe)
	f.listen = strings.TrimPrefix(addr, "https://")
	f.startServer()
	if f.addr != addr {
		f.t.Fatalf("server came back on %s, not %s", f.addr, addr)
	}
}

// adminEnv is the environment of an operator with the admin certificate.
func (f *fleet) adminEnv() []string {
	return f.certEnv("ops")
}

func (f *fleet) certEnv(name string) []string {
	return []string{
		"DROVER_ADDR=" + f.addr,
		"DROVER_CACERT=" + filepath.Join(f.pki, "ca.crt"),
		"DROVER_CLIENT_CERT=" + filepath.Join(f.pki, name+".crt"),
		"DROVER_CLIENT_KEY=" + filepath.Join(f.pki, name+".key"),
	}
}

func (f *fleet) mustOK(env []string, args ...string) string {
	f.t.Helper()
	r := runBin(f.t, env, "", args...)
	if r.code != 0 {
		f.t.Fatalf("drover %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// op runs an operator verb that must succeed.
func (f *fleet) op(args ...string) string {
	f.t.Helper()
	return f.mustOK(f.adminEnv(), args...)
}

// agentProc is one real agent process with its own folders.
type agentProc struct {
	id, home, software, root string
	args                     []string
	dir                      string // working directory; "" = the test's
	cmd                      *exec.Cmd
	logs                     *syncBuffer
	f                        *fleet
}

func (f *fleet) newAgent(id string, extra ...string) *agentProc {
	f.t.Helper()
	if _, err := os.Stat(filepath.Join(f.pki, id+".crt")); err != nil {
		f.mustOK(nil, "pki", "issue", "--dir", f.pki, "--device", id)
	}
	base := filepath.Join(f.dir, "agents", id)
	a := &agentProc{id: id, f: f, home: filepath.Join(base, "home"), software: filepath.Join(base, "software"), root: filepath.Join(base, "root")}
	for _, d := range []string{a.home, a.software, a.root} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			f.t.Fatal(err)
		}
	}
	a.args = append([]string{"agent", "--home", a.home, "--software-root", a.software, "--root", a.root,
		"--runtime-root", filepath.Join(base, "runtime"), "--addr", f.addr,
		"--ca-cert", filepath.Join(f.pki, "ca.crt"),
		"--client-cert", filepath.Join(f.pki, id+".crt"), "--client-key", filepath.Join(f.pki, id+".key"),
		"--report-interval", "2s", "--log-level", "debug"}, extra...)
	return a
}

func (a *agentProc) start() {
	a.f.t.Helper()
	a.logs = &syncBuffer{}
	a.cmd = exec.Command(droverBin, a.args...)
	a.cmd.Dir = a.dir
	a.cmd.Stdout, a.cmd.Stderr = a.logs, a.logs
	if err := a.cmd.Start(); err != nil {
		a.f.t.Fatalf("start agent %s: %v", a.id, err)
	}
	cmd := a.cmd
	a.f.t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
}

// kill stops the agent with SIGKILL, as a power cut would.
func (a *agentProc) kill() {
	_ = a.cmd.Process.Kill()
	_ = a.cmd.Wait()
}

// deviceJSON is what `device show -o json` prints.
type deviceJSON struct {
	ID         string   `json:"id"`
	SystemTags []string `json:"systemtags"`
	Apps       []struct {
		Name    string   `json:"name"`
		Version string   `json:"version"`
		Tags    []string `json:"tags"`
	} `json:"apps"`
	Status struct {
		Converged bool   `json:"converged"`
		Error     string `json:"error"`
	} `json:"status"`
}

func (f *fleet) device(id string) (deviceJSON, bool) {
	r := runBin(f.t, f.adminEnv(), "", "device", "show", id, "-o", "json")
	var d deviceJSON
	if r.code != 0 {
		return d, false
	}
	if err := json.Unmarshal([]byte(r.stdout), &d); err != nil {
		f.t.Fatalf("device show %s: %v\n%s", id, err, r.stdout)
	}
	return d, true
}

// waitFor polls the device until cond holds or the deadline passes.
func (f *fleet) waitFor(id string, what string, cond func(deviceJSON) bool) deviceJSON {
	f.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last deviceJSON
	for time.Now().Before(deadline) {
		d, ok := f.device(id)
		if ok {
			last = d
			if cond(d) {
				return d
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	f.t.Fatalf("device %s: %s: not reached in 30s; last: %+v\nserver log tail:\n%s", id, what, last, tail(f.logs.String(), 3000))
	return last
}

// waitConverged waits until the device has converged with exactly the
// given apps (name=version).
func (f *fleet) waitConverged(id string, want ...string) deviceJSON {
	f.t.Helper()
	return f.waitFor(id, fmt.Sprintf("converged with %v", want), func(d deviceJSON) bool {
		if !d.Status.Converged {
			return false
		}
		var got []string
		for _, a := range d.Apps {
			got = append(got, a.Name+"="+a.Version)
		}
		return strings.Join(got, " ") == strings.Join(want, " ")
	})
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// pkgSource writes a package source folder.
type pkgSource struct {
	yaml    string
	files   map[string]string // path under the source dir -> content
	scripts map[string]string // script name -> body
}

func writeSource(t *testing.T, dir string, p pkgSource) string {
	t.Helper()
	write := func(rel, content string, mode os.FileMode) {
		path := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
	}
	write("drover.yaml", p.yaml, 0o644)
	for rel, c := range p.files {
		mode := os.FileMode(0o644)
		if strings.Contains(rel, "/bin/") {
			mode = 0o755
		}
		write(rel, c, mode)
	}
	for name, body := range p.scripts {
		write("scripts/"+name, "#!/bin/sh\n"+body+"\n", 0o755)
	}
	return dir
}

// markScripts append each script's name, the version of the package it
// belongs to, and DROVER_VERSION and DROVER_OLD_VERSION to
// $DROVER_ROOT/marks, so a test can check which ran, in what order.
func markScripts(version string) map[string]string {
	out := map[string]string{}
	for _, s := range []string{"preinst", "postinst", "prerm", "postrm"} {
		out[s] = fmt.Sprintf(`echo "%s of %s: version=$DROVER_VERSION old=$DROVER_OLD_VERSION" >> "$DROVER_ROOT/marks"`, s, version)
	}
	return out
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return string(data)
}

// jsonArray returns a decoder inside the one JSON array out must be (what
// -o json prints of a list): dec.More and dec.Decode walk its elements.
func jsonArray(t *testing.T, out string) *json.Decoder {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(out))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('[') {
		t.Fatalf("-o json of a list is not one JSON array: %v %v\n%s", tok, err, out)
	}
	return dec
}
