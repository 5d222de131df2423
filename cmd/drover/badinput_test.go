package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// oneLine checks a failed command said one clear line on stderr and
// nothing like a Go panic.
func oneLine(t *testing.T, what string, r result, code int, want string) {
	t.Helper()
	if r.code != code {
		t.Errorf("%s: exit %d, want %d (stderr %q)", what, r.code, code, r.stderr)
	}
	lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	if len(lines) != 1 || strings.Contains(r.stderr, "goroutine ") || strings.Contains(r.stderr, "panic") {
		t.Errorf("%s: want one line on stderr, got:\n%s", what, r.stderr)
	}
	if !strings.Contains(strings.ToLower(r.stderr), strings.ToLower(want)) {
		t.Errorf("%s: stderr %q does not mention %q", what, r.stderr, want)
	}
	if !strings.HasPrefix(r.stderr, "drover: ") || strings.Contains(r.stderr, "drover: drover") {
		t.Errorf("%s: stderr %q: want one 'drover:' prefix", what, r.stderr)
	}
	if goType.MatchString(r.stderr) {
		t.Errorf("%s: stderr %q names a Go type", what, r.stderr)
	}
}

// goType matches a Go type name as the standard library prints it.
var goType = regexp.MustCompile(`\b(api|main|store|server|agent|client)\.[A-Z]|in type `)

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, "unknown command"},
		{[]string{"pkg"}, "verb"},
		{[]string{"device"}, "device: a verb is needed"},
		{[]string{"device", "frob"}, `device: unknown verb "frob"`},
		{[]string{"state", "set", "-f", "x.yaml", "-o", "xml"}, `output format "xml": want text, yaml or json`},
		{[]string{"pkg", "push", "x.drover", "-o", "xml"}, `output format "xml"`},
		{[]string{"events", "-o", "csv"}, `output format "csv"`},
		{[]string{"completion", "ksh"}, "bash, zsh or fish"},
		{[]string{"pkg", "build"}, "arg"},
		{[]string{"pkg", "build", "a", "b"}, "arg"},
		{[]string{"pkg", "ls", "--bogus"}, "bogus"},
		{[]string{"pkg", "rm", "not-a-coordinate"}, "coordinate"},
		{[]string{"pki", "issue", "--dir", "x"}, "--server"},
		{[]string{"state", "set"}, "-f"},
		{[]string{"device", "show"}, "arg"},
		{[]string{"events", "--min-priority", "urgent"}, "urgent"},
		{[]string{"server", "--listen", "127.0.0.1:0"}, "--data"},
		// env and region name service runtime folders: never a path.
		{[]string{"agent", "--labels", "env=../../etc,region=x"}, "label env"},
		{[]string{"agent", "--labels", "env=prod,region=eu/west"}, "label region"},
		{[]string{"agent", "--max-download-rate", "fast"}, "--max-download-rate"},
		{[]string{"agent", "--max-download-rate", "0"}, "--max-download-rate"},
		{[]string{"agent", "--blob-mirror", "ftp://mirror/blobs"}, "--blob-mirror"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, "_"), func(t *testing.T) {
			r := runBin(t, nil, "", tt.args...)
			oneLine(t, strings.Join(tt.args, " "), r, 2, tt.want)
		})
	}
}

func TestBadPackageSources(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		src  pkgSource
		want string
	}{
		{"unknown field", pkgSource{yaml: "group: com.example\nname: x\nversion: 1.0.0\ncolour: red\n"}, "colour"},
		{"bad version", pkgSource{yaml: "group: com.example\nname: x\nversion: one\n"}, "version"},
		{"malformed yaml", pkgSource{yaml: "group: [com.example\n"}, "drover.yaml"},
		{"bad install mode", pkgSource{yaml: "group: com.example\nname: x\nversion: 1.0.0\ninstall: sideways\n"}, "sideways"},
		{"unknown script", pkgSource{yaml: "group: com.example\nname: x\nversion: 1.0.0\n", scripts: map[string]string{"postinstall": "true"}}, "postinstall"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := writeSource(t, filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-")), tt.src)
			out := filepath.Join(dir, "out.drover")
			r := runBin(t, nil, "", "pkg", "build", src, "-o", out)
			oneLine(t, "pkg build", r, 1, tt.want)
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Errorf("a failed build left %s", out)
			}
		})
	}
	// A symlink that leaves the package is refused.
	src := writeSource(t, filepath.Join(dir, "escape"), pkgSource{yaml: "group: com.example\nname: x\nversion: 1.0.0\n", files: map[string]string{"files/a": "a"}})
	if err := os.Symlink("../../../etc/passwd", filepath.Join(src, "files", "evil")); err != nil {
		t.Fatal(err)
	}
	oneLine(t, "symlink out", runBin(t, nil, "", "pkg", "build", src, "-o", filepath.Join(dir, "e.drover")), 1, "evil")
}

func TestServerRefusals(t *testing.T) {
	f := newFleet(t)
	files := buildFleetPackages(t, f)
	f.op(append([]string{"pkg", "push"}, files...)...)
	dev := f.newAgent("gamma")
	dev.start()
	f.waitFor("gamma", "reported", func(d deviceJSON) bool { return len(d.SystemTags) > 0 })

	// A state naming an unknown package, or a constraint nothing fits,
	// is refused and changes nothing.
	f.op("state", "set", "-f", writeState(t, f, "gamma", "id: gamma\napps:\n  - name: com.example:tool\n    version: 1.0.0\n"))
	for _, tt := range []struct{ name, yaml, want string }{
		{"unknown package", "id: gamma\napps:\n  - name: com.example:nope\n    version: 1.0.0\n", "com.example:nope"},
		{"no version fits", "id: gamma\napps:\n  - name: com.example:tool\n    version: \">=5.0.0\"\n", ">=5.0.0"},
		{"no build fits", "id: gamma\napps:\n  - name: com.example:tool\n    version: 1.0.0\n    tags: []\n  - name: com.example:conf\n    version: 9.9.9\n", "9.9.9"},
		{"unknown field", "id: gamma\napps:\n  - name: com.example:tool\n    versoin: 1.0.0\n", `bad.yaml: malformed desired state: document 1, line 4: unknown field "versoin"`},
		{"unknown field, second document", "id: gamma\napps: []\n---\nid: zeta\napps:\n  - name: com.example:tool\n    tags: linux\n", `document 2, line 7: "linux" where a list is wanted`},
		{"malformed", "id: gamma\napps: [\n", "malformed"},
	} {
		r := runBin(t, f.adminEnv(), "", "state", "set", "-f", writeState(t, f, "bad", tt.yaml))
		oneLine(t, "state set "+tt.name, r, 1, tt.want)
	}
	if got := f.op("state", "get", "gamma"); !strings.Contains(got, "com.example:tool") || strings.Contains(got, "nope") {
		t.Errorf("a refused state changed the stored one:\n%s", got)
	}
	// Several devices in one file: one bad state refuses them all.
	r := runBin(t, f.adminEnv(), "", "state", "set", "-f", writeState(t, f, "bulk",
		"id: gamma\napps: []\n---\nid: zeta\napps:\n  - name: com.example:nope\n"))
	oneLine(t, "bulk state set with a bad state", r, 1, "zeta")
	if got := f.op("state", "get", "gamma"); !strings.Contains(got, "com.example:tool") {
		t.Errorf("a refused bulk state set changed gamma's state:\n%s", got)
	}

	// A pushed build never changes: other content under the same
	// coordinate and tags is refused.
	other := writeSource(t, filepath.Join(f.dir, "src", "tool-1.0.0-other"), pkgSource{
		yaml: "group: com.example\nname: tool\nversion: 1.0.0\ntags: [linux]\n", files: map[string]string{"files/bin/tool": "#!/bin/sh\necho changed\n"}})
	out := filepath.Join(f.dir, "other.drover")
	f.mustOK(nil, "pkg", "build", other, "-o", out)
	oneLine(t, "push changed build", runBin(t, f.adminEnv(), "", "pkg", "push", out), 1, "pushed before")

	// A device certificate is no operator.
	oneLine(t, "device cert on operator verb", runBin(t, f.certEnv("gamma"), "", "device", "ls"), 1, "admin certificate")

	// A certificate of another CA is refused at the handshake.
	otherPKI := filepath.Join(f.dir, "other-pki")
	f.mustOK(nil, "pki", "init", "--dir", otherPKI)
	f.mustOK(nil, "pki", "issue", "--dir", otherPKI, "--admin", "mallory")
	env := []string{
		"DROVER_ADDR=" + f.addr,
		"DROVER_CACERT=" + filepath.Join(f.pki, "ca.crt"),
		"DROVER_CLIENT_CERT=" + filepath.Join(otherPKI, "mallory.crt"),
		"DROVER_CLIENT_KEY=" + filepath.Join(otherPKI, "mallory.key"),
	}
	oneLine(t, "cert of another CA", runBin(t, env, "", "device", "ls"), 1, "TLS failure")
	oneLine(t, "cert of another CA", runBin(t, env, "", "device", "ls"), 1, "signed by an authority the server does not know")
	// A server not signed by the CA the operator trusts.
	env = []string{
		"DROVER_ADDR=" + f.addr,
		"DROVER_CACERT=" + filepath.Join(otherPKI, "ca.crt"),
		"DROVER_CLIENT_CERT=" + filepath.Join(f.pki, "ops.crt"),
		"DROVER_CLIENT_KEY=" + filepath.Join(f.pki, "ops.key"),
	}
	oneLine(t, "server of another CA", runBin(t, env, "", "events", "--follow"), 1, "signed by an unknown authority")
	// A server certificate where a client one is wanted.
	env = []string{
		"DROVER_ADDR=" + f.addr,
		"DROVER_CACERT=" + filepath.Join(f.pki, "ca.crt"),
		"DROVER_CLIENT_CERT=" + filepath.Join(f.pki, "gamma.crt"),
		"DROVER_CLIENT_KEY=" + filepath.Join(f.pki, "gamma.key"),
	}
	oneLine(t, "device cert on operator verb", runBin(t, env, "", "events"), 1, "an admin certificate is needed")
}
