package main

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/drover-dev/drover/internal/agentfile"
	"github.com/drover-dev/drover/internal/pki"
)

// TestAgentFileKeys: every flag of drover agent but --home and
// --recover-only has a key in agent.yaml, so install can write it.
func TestAgentFileKeys(t *testing.T) {
	c := &cobra.Command{}
	var f agentFlags
	f.register(c)
	fl := c.Flags()
	fl.AddFlagSet(c.PersistentFlags())
	for _, k := range agentfile.Keys {
		if fl.Lookup(k.Flag) == nil {
			t.Errorf("agent.yaml key %s: no flag --%s", k.Name(), k.Flag)
		}
	}
	fl.VisitAll(func(p *pflag.Flag) {
		if _, ok := agentfile.Lookup(strings.ReplaceAll(p.Name, "-", "_")); !ok && p.Name != "home" && p.Name != "recover-only" {
			t.Errorf("flag --%s has no agent.yaml key", p.Name)
		}
	})
}

func TestAgentFilePrecedence(t *testing.T) {
	pkiDir := t.TempDir()
	now := time.Now()
	if err := pki.Init(pkiDir, now); err != nil {
		t.Fatal(err)
	}
	cert, key, err := pki.Issue(pkiDir, pki.IssueOptions{Role: pki.RoleDevice, Name: "node-1"}, now)
	if err != nil {
		t.Fatal(err)
	}
	fileYAML := "addr: https://file:1\nclient_cert: " + cert + "\nclient_key: " + key + "\n" +
		"tags: [from-file]\nlabels: {rack: file}\nsoftware_root: sw\nhealth_interval: 7s\nreport_interval: 9s\nlog_level: debug\n"
	type view struct {
		Addr, SoftwareRoot, Root string
		Tags                     []string
		Labels                   map[string]string
		HealthInterval, Report   time.Duration
	}
	tests := []struct {
		name    string
		file    string   // agent.yaml; "" = none
		env     []string // KEY=VALUE
		args    []string
		want    view
		homeEnv bool // give the home as DROVER_HOME, not --home
	}{
		{name: "file only", file: fileYAML,
			want: view{Addr: "https://file:1", SoftwareRoot: "HOME/sw", Root: "/", Tags: []string{"from-file"},
				Labels: map[string]string{"rack": "file"}, HealthInterval: 7 * time.Second, Report: 9 * time.Second}},
		{name: "home from DROVER_HOME", file: fileYAML, homeEnv: true,
			want: view{Addr: "https://file:1", SoftwareRoot: "HOME/sw", Root: "/", Tags: []string{"from-file"},
				Labels: map[string]string{"rack": "file"}, HealthInterval: 7 * time.Second, Report: 9 * time.Second}},
		{name: "flags win", file: fileYAML,
			args: []string{"--addr", "https://flag:1", "--tags", "a,b", "--labels", "rack=flag", "--software-root", "/sw", "--health-interval", "1s", "--root", "/r"},
			want: view{Addr: "https://flag:1", SoftwareRoot: "/sw", Root: "/r", Tags: []string{"a", "b"},
				Labels: map[string]string{"rack": "flag"}, HealthInterval: time.Second, Report: 9 * time.Second}},
		{name: "environment beats file", file: fileYAML, env: []string{"DROVER_ADDR=https://env:1"},
			want: view{Addr: "https://env:1", SoftwareRoot: "HOME/sw", Root: "/", Tags: []string{"from-file"},
				Labels: map[string]string{"rack": "file"}, HealthInterval: 7 * time.Second, Report: 9 * time.Second}},
		{name: "flag beats environment", file: fileYAML, env: []string{"DROVER_ADDR=https://env:1"}, args: []string{"--addr", "https://flag:1"},
			want: view{Addr: "https://flag:1", SoftwareRoot: "HOME/sw", Root: "/", Tags: []string{"from-file"},
				Labels: map[string]string{"rack": "file"}, HealthInterval: 7 * time.Second, Report: 9 * time.Second}},
		{name: "no file: defaults", args: []string{"--client-cert", cert},
			want: view{Addr: defaultAddr, Root: "/", Labels: map[string]string{}, HealthInterval: time.Minute, Report: 30 * time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, v := range []string{"DROVER_HOME", "DROVER_ADDR", "DROVER_CACERT", "DROVER_CLIENT_CERT", "DROVER_CLIENT_KEY"} {
				t.Setenv(v, "")
			}
			for _, kv := range tt.env {
				k, v, _ := strings.Cut(kv, "=")
				t.Setenv(k, v)
			}
			home := t.TempDir()
			if tt.file != "" {
				if err := os.MkdirAll(filepath.Join(home, "config"), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(agentfile.Path(home), []byte(tt.file), 0o640); err != nil {
					t.Fatal(err)
				}
			}
			args := tt.args
			if tt.homeEnv {
				t.Setenv("DROVER_HOME", home)
			} else {
				args = append([]string{"--home", home}, args...)
			}
			c := &cobra.Command{}
			var f agentFlags
			f.register(c)
			if err := c.ParseFlags(args); err != nil {
				t.Fatal(err)
			}
			cfg, err := agentConfig(&env{stderr: io.Discard}, c.Flags(), &f)
			if err != nil {
				t.Fatalf("agentConfig: %v", err)
			}
			got := view{Addr: cfg.Node.ServerAddr, SoftwareRoot: strings.Replace(cfg.SoftwareRoot, home, "HOME", 1), Root: cfg.Root,
				Tags: cfg.Tags, Labels: cfg.Labels, HealthInterval: cfg.Node.HealthInterval, Report: cfg.ReportInterval}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("agent config (-want +got):\n%s", diff)
			}
			if cfg.Device != "node-1" {
				t.Errorf("device = %q, want node-1 (the certificate's name)", cfg.Device)
			}
		})
	}
}

// TestAgentFileErrorExit: a bad agent.yaml is a failure (exit 1), not bad
// usage, and one line naming the file, line and key.
func TestAgentFileErrorExit(t *testing.T) {
	home := t.TempDir()
	if err := os.MkdirAll(filepath.Join(home, "config"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(agentfile.Path(home), []byte("addr: https://h:1\nhealth_interval: soon\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	r := runBin(t, nil, "", "agent", "--home", home)
	want := "drover: " + agentfile.Path(home) + `:2: health_interval: "soon" is not a duration (like 30s, 5m, 1h)` + "\n"
	if r.code != 1 || r.stderr != want {
		t.Errorf("agent with a bad agent.yaml: exit %d, stderr %q; want exit 1, %q", r.code, r.stderr, want)
	}
}

// TestAgentFromFile: an agent started with only --home takes its server,
// certificates, roots, tags and labels from <home>/config/agent.yaml, paths
// in it relative to the home whatever the working directory, and converges.
func TestAgentFromFile(t *testing.T) {
	f := newFleet(t)
	src := writeSource(t, filepath.Join(f.dir, "src", "note"), pkgSource{
		yaml:  "group: com.example\nname: note\nversion: 1.0.0\n",
		files: map[string]string{"files/share/note.txt": "from agent.yaml\n"},
	})
	pkgFile := filepath.Join(f.dir, "note.drover")
	f.mustOK(nil, "pkg", "build", src, "-o", pkgFile)
	f.op("pkg", "push", pkgFile)

	a := f.newAgent("filed")
	// The device's certificate lives in the home, named relative to it.
	tls := filepath.Join(a.home, "config", "tls")
	if err := os.MkdirAll(tls, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, ext := range []string{".crt", ".key"} {
		if err := os.WriteFile(filepath.Join(tls, "filed"+ext), []byte(readFile(t, filepath.Join(f.pki, "filed"+ext))), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	a.software = filepath.Join(a.home, "software")
	file := "addr: " + f.addr + "\nca_cert: " + filepath.Join(f.pki, "ca.crt") + "\n" +
		"client_cert: config/tls/filed.crt\nclient_key: config/tls/filed.key\n" +
		"software_root: software\nruntime_root: runtime\nroot: " + a.root + "\n" +
		"tags: [from-file, lab]\nlabels:\n  rack: r7\n  env: filetest\nreport_interval: 2s\nlog_level: debug\n"
	if err := os.WriteFile(agentfile.Path(a.home), []byte(file), 0o640); err != nil {
		t.Fatal(err)
	}
	a.args = []string{"agent", "--home", a.home}
	a.dir = t.TempDir()
	// Nothing from the test's environment may stand in for the file.
	for _, v := range []string{"DROVER_ADDR", "DROVER_CACERT", "DROVER_CLIENT_CERT", "DROVER_CLIENT_KEY", "DROVER_HOME"} {
		t.Setenv(v, "")
	}
	a.start()
	f.waitFor("filed", "reported", func(d deviceJSON) bool { return len(d.SystemTags) > 0 })

	f.op("state", "set", "-f", writeState(t, f, "filed", "id: filed\napps:\n  - name: com.example:note\n    version: 1.0.0\n"))
	f.waitConverged("filed", "com.example:note=1.0.0")
	if got := readFile(t, filepath.Join(a.software, "com", "example", "note", "current", "share", "note.txt")); got != "from agent.yaml\n" {
		t.Errorf("installed note.txt = %q", got)
	}

	var d struct {
		SystemTags []string          `json:"systemtags"`
		Labels     map[string]string `json:"labels"`
	}
	if err := json.Unmarshal([]byte(f.op("device", "show", "filed", "-o", "json")), &d); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(d.SystemTags, "from-file") || !slices.Contains(d.SystemTags, "lab") {
		t.Errorf("device show systemtags = %v, want from-file and lab from agent.yaml", d.SystemTags)
	}
	if want := map[string]string{"rack": "r7", "env": "filetest"}; !cmp.Equal(d.Labels, want) {
		t.Errorf("device show labels = %v, want %v from agent.yaml", d.Labels, want)
	}
}
