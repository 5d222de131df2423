package systemd

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s (-want +got):\n%s", name, diff)
	}
}

var fullConfig = Config{
	Home: "/opt/drover", Binary: "/usr/local/bin/drover", User: "drover", CreateUser: true,
	Args:      []string{"--labels", "room=a b", "--tags", "x%y"},
	AgentYAML: "addr: https://fleet.example:8443\nlabels:\n  room: a b\n",
}

func TestPlansGolden(t *testing.T) {
	tests := []struct {
		name string
		plan func() ([]Action, error)
	}{
		{"install", func() ([]Action, error) { return InstallPlan(fullConfig) }},
		{"install-image", func() ([]Action, error) {
			c := Config{Home: "/srv/drover", Binary: "/usr/bin/drover", DestDir: "/img", Name: "fleet-agent"}
			return InstallPlan(c)
		}},
		{"uninstall", func() ([]Action, error) {
			return UninstallPlan(Config{Home: "/opt/drover", User: "drover"}, true, true)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plan, err := tt.plan()
			if err != nil {
				t.Fatal(err)
			}
			var b bytes.Buffer
			if err := Describe(&b, "", plan); err != nil {
				t.Fatal(err)
			}
			if strings.Contains(strings.ToLower(b.String()), "firewall") || strings.Contains(b.String(), "iptables") || strings.Contains(b.String(), "ufw") {
				t.Errorf("plan touches the firewall:\n%s", b.String())
			}
			golden(t, tt.name, b.String())
		})
	}
}

func TestBadConfig(t *testing.T) {
	for _, c := range []Config{
		{Home: "relative", Binary: "/bin/drover"},
		{Home: "/opt/drover", Binary: "drover"},
		{Home: "/opt/drover", Binary: "/bin/drover", User: "Root;rm"},
		{Home: "/opt/drover", Binary: "/bin/drover", CreateUser: true},
		{Home: "/opt/drover", Binary: "/bin/drover", Name: "../x"},
	} {
		if _, err := InstallPlan(c); err == nil {
			t.Errorf("InstallPlan(%+v) = nil error, want one", c)
		}
	}
}

func TestApplyUnderDestDir(t *testing.T) {
	dest := t.TempDir()
	cfg := Config{Home: "/opt/drover", Binary: "/usr/local/bin/drover", AgentYAML: "addr: https://h:1\n", DestDir: dest}
	plan, err := InstallPlan(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var ran [][]string
	run := func(_ context.Context, argv []string) error { ran = append(ran, argv); return nil }
	if err := Apply(context.Background(), dest, plan, run); err != nil {
		t.Fatal(err)
	}
	if len(ran) != 0 {
		t.Errorf("Apply under a dest dir ran %v, want nothing", ran)
	}
	for _, d := range []string{"bin", "config/healthcheck.d", "config/hooks", "logs", "system"} {
		if st, err := os.Stat(filepath.Join(dest, "opt/drover", d)); err != nil || !st.IsDir() {
			t.Errorf("home folder %s: %v", d, err)
		}
	}
	unit, err := os.ReadFile(filepath.Join(dest, "etc/systemd/system/drover-agent.service"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(unit), "ExecStart=/usr/local/bin/drover agent --home /opt/drover\n") || !strings.Contains(string(unit), "Restart=always") {
		t.Errorf("unit:\n%s", unit)
	}
	agentYAML := filepath.Join(dest, "opt/drover/config/agent.yaml")
	if st, err := os.Stat(agentYAML); err != nil || st.Mode().Perm() != 0o640 {
		t.Errorf("agent.yaml: %v, %v; want mode 0640", st, err)
	} else if data, _ := os.ReadFile(agentYAML); string(data) != cfg.AgentYAML {
		t.Errorf("agent.yaml = %q, want %q", data, cfg.AgentYAML)
	}
	env, _ := os.ReadFile(filepath.Join(dest, "etc/default/drover-agent"))
	if !strings.Contains(string(env), "DROVER_HOME=/opt/drover\n") {
		t.Errorf("environment file = %q, want DROVER_HOME", env)
	}

	un, err := UninstallPlan(cfg, false, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := Apply(context.Background(), dest, un, run); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"etc/systemd/system/drover-agent.service", "etc/default/drover-agent", "etc/profile.d/drover-agent.sh"} {
		if _, err := os.Stat(filepath.Join(dest, p)); !os.IsNotExist(err) {
			t.Errorf("after uninstall %s: %v, want it gone", p, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dest, "opt/drover/system")); err != nil {
		t.Errorf("uninstall without --purge removed the home: %v", err)
	}
}

func TestApplyRunsSystemctl(t *testing.T) {
	// On the real root (no DestDir) the unit is reloaded, enabled and started.
	plan, err := InstallPlan(Config{Home: "/opt/drover", Binary: "/usr/local/bin/drover"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range plan {
		if a.Kind == KindRun {
			got = append(got, strings.Join(a.Argv, " "))
		}
	}
	want := []string{"systemctl daemon-reload", "systemctl enable --now drover-agent.service"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("install commands (-want +got):\n%s", diff)
	}
}
