package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/drover-dev/drover/internal/api"
)

// pushSources builds each package source and pushes the files.
func (f *fleet) pushSources(srcs map[string]pkgSource) {
	f.t.Helper()
	var files []string
	for name, src := range srcs {
		dir := writeSource(f.t, filepath.Join(f.dir, "src", name), src)
		out := filepath.Join(f.dir, name+".drover")
		f.mustOK(nil, "pkg", "build", dir, "-o", out)
		files = append(files, out)
	}
	f.op(append([]string{"pkg", "push"}, files...)...)
}

// procEnv returns the value of a variable in a live process's
// environment, or "" if the process is gone.
func procEnv(pid int, name string) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return ""
	}
	for _, kv := range strings.Split(string(b), "\x00") {
		if v, ok := strings.CutPrefix(kv, name+"="); ok {
			return v
		}
	}
	return ""
}

// TestServiceUpgradeDiesAtOnce: an upgrade whose new service exits at
// once fails, names the reason with the tail of the service's console,
// and leaves the old version installed with its service running.
func TestServiceUpgradeDiesAtOnce(t *testing.T) {
	f := newFleet(t)
	broken := webSource("2.0.0")
	broken.files["files/bin/web"] = "#!/bin/sh\necho 'web 2.0.0: cannot bind :8080: address in use' >&2\nexit 2\n"
	f.pushSources(map[string]pkgSource{"web-1.0.0": webSource("1.0.0"), "web-2.0.0": broken})

	a := f.newAgent("up1", "--labels", "env=prod,region=trd")
	runtime := filepath.Join(f.dir, "agents", "up1", "runtime")
	killServices(t, runtime)
	a.start()
	f.waitFor("up1", "reported", func(d deviceJSON) bool { return d.ID == "up1" })
	const coord = "web.web.prod.trd"
	f.op("state", "set", "-f", writeState(t, f, "up1", "id: up1\napps:\n  - {name: com.example:web, version: 1.0.0}\n"))
	f.waitServices("up1", "1.0.0 running", func(v svcView) bool {
		return v.Status.Converged && svcOf(v, coord).State == api.ServiceRunning && svcOf(v, coord).Version == "1.0.0"
	})

	f.op("state", "set", "-f", writeState(t, f, "up1", "id: up1\napps:\n  - {name: com.example:web, version: 2.0.0}\n"))
	d := f.waitFor("up1", "the upgrade failed", func(d deviceJSON) bool { return strings.Contains(d.Status.Error, "2.0.0") })
	for _, want := range []string{"did not start", "exited 2", "cannot bind :8080", "back on 1.0.0"} {
		if !strings.Contains(d.Status.Error, want) {
			t.Errorf("device error = %q, want %q in it", d.Status.Error, want)
		}
	}
	if len(d.Apps) != 1 || d.Apps[0].Version != "1.0.0" {
		t.Errorf("after the failed upgrade the device has %+v, want web 1.0.0", d.Apps)
	}
	cur := filepath.Join(a.software, "com", "example", "web", "current")
	if target, _ := os.Readlink(cur); filepath.Base(target) != "1.0.0" {
		t.Errorf("current -> %q after the failed upgrade, want 1.0.0", target)
	}

	// The old version's service runs again: its pid file names a live
	// process of 1.0.0, which the device reports. (The agent retries
	// the upgrade later, so poll for a moment the service is up.)
	var pid int
	f.waitServices("up1", "1.0.0 running again", func(v svcView) bool {
		s := svcOf(v, coord)
		pid = pidIn(t, runtime, coord)
		return s.State == api.ServiceRunning && s.Version == "1.0.0" && s.PID == pid && pid > 0 &&
			syscall.Kill(pid, 0) == nil && procEnv(pid, "DROVER_VERSION") == "1.0.0"
	})
	if served := readFile(t, filepath.Join(runtime, coord, "data", "served")); served != "1.0.0 8080\n" {
		t.Errorf("data/served = %q, want the old version serving", served)
	}

	// The step-failed event carries the console tail too.
	out := f.op("events", "--device", "up1", "--kind", "step-failed", "-o", "json")
	dec := jsonArray(t, out)
	found := false
	for dec.More() {
		var ev struct {
			Level   string          `json:"level"`
			Package string          `json:"package"`
			Payload json.RawMessage `json:"payload"`
		}
		if err := dec.Decode(&ev); err != nil {
			t.Fatalf("events -o json: %v\n%s", err, out)
		}
		found = found || ev.Level == api.LevelError && strings.Contains(string(ev.Payload), "cannot bind :8080")
	}
	if !found {
		t.Errorf("no step-failed event whose payload has the console tail:\n%s", out)
	}
}

// TestServiceHealth: a service's health command is run by the agent;
// its verdict shows in `service ls` and `device show`, with the output
// of a failing check, and a service that stays unhealthy is restarted
// when its policy allows. Two services of one package: web (restart:
// never) stays unhealthy for the test to see; api (restart: always) is
// restarted.
func TestServiceHealth(t *testing.T) {
	f := newFleet(t)
	src := webSource("1.0.0")
	src.yaml = strings.Replace(src.yaml, "  - {name: web, start: bin/web, restart: always}\n",
		"  - {name: web, start: bin/web, health: bin/health, restart: never}\n  - {name: api, start: bin/web, health: bin/health, restart: always}\n", 1)
	src.files["files/bin/health"] = `#!/bin/sh
for a in "$@"; do case "$a" in --port=*) port="${a#--port=}";; esac; done
if [ -e data/sick ]; then echo "port $port: connection refused"; exit 1; fi
echo "ok on $port"
`
	f.pushSources(map[string]pkgSource{"web-1.0.0": src})
	a := f.newAgent("h1", "--health-interval", "100ms", "--labels", "env=prod,region=trd")
	runtime := filepath.Join(f.dir, "agents", "h1", "runtime")
	killServices(t, runtime)
	a.start()
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(tail(a.logs.String(), 6000))
		}
	})
	f.waitFor("h1", "reported", func(d deviceJSON) bool { return d.ID == "h1" })
	const web, api_ = "web.web.prod.trd", "web.api.prod.trd"
	f.op("state", "set", "-f", writeState(t, f, "h1", "id: h1\napps:\n  - {name: com.example:web, version: 1.0.0}\n"))
	f.waitServices("h1", "healthy", func(v svcView) bool {
		return svcOf(v, web).Health == api.ServiceHealthy && svcOf(v, api_).Health == api.ServiceHealthy
	})
	if ls := f.mustOK(nil, "service", "ls", "--home", a.home); !strings.Contains(ls, "HEALTH") || !strings.Contains(ls, "healthy") {
		t.Errorf("service ls:\n%s", ls)
	}
	if log := readFile(t, filepath.Join(runtime, web, "console", "health.log")); log != "ok on 8080\n" {
		t.Errorf("console/health.log = %q", log)
	}

	webPID, apiPID := pidIn(t, runtime, web), pidIn(t, runtime, api_)
	for _, c := range []string{web, api_} {
		if err := os.WriteFile(filepath.Join(runtime, c, "data", "sick"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	v := f.waitServices("h1", "web unhealthy", func(v svcView) bool { return svcOf(v, web).Health == api.ServiceUnhealthy })
	if out := svcOf(v, web).HealthOutput; !strings.Contains(out, "exited 1") || !strings.Contains(out, "port 8080: connection refused") {
		t.Errorf("health_output = %q, want the exit status and the check's output", out)
	}
	show := f.op("device", "show", "h1")
	if !strings.Contains(show, "health: unhealthy") || !strings.Contains(show, "health_output:") {
		t.Errorf("device show:\n%s", show)
	}
	if ls := f.mustOK(nil, "service", "ls", "--home", a.home); !strings.Contains(ls, "unhealthy") {
		t.Errorf("service ls:\n%s", ls)
	}
	v = f.waitServices("h1", "api restarted for its health", func(v svcView) bool {
		s := svcOf(v, api_)
		return s.Restarts >= 1 || strings.Contains(s.Error, "failed health checks")
	})
	if s := svcOf(v, api_); s.PID == apiPID || s.State == api.ServiceRunning && s.Restarts == 0 {
		t.Errorf("api after its health failed: %+v, want stopped or restarted", s)
	}
	if syscall.Kill(apiPID, 0) == nil {
		t.Errorf("unhealthy api process %d still alive after its restart", apiPID)
	}
	if s := svcOf(v, web); s.PID != webPID || s.Restarts != 0 || s.State != api.ServiceRunning {
		t.Errorf("web (restart: never) = %+v, want still pid %d, no restarts", s, webPID)
	}

	for _, c := range []string{web, api_} {
		if err := os.Remove(filepath.Join(runtime, c, "data", "sick")); err != nil {
			t.Fatal(err)
		}
	}
	v = f.waitServices("h1", "healthy again", func(v svcView) bool {
		w, a := svcOf(v, web), svcOf(v, api_)
		return w.Health == api.ServiceHealthy && a.State == api.ServiceRunning && a.Health == api.ServiceHealthy
	})
	if s := svcOf(v, web); s.HealthOutput != "" {
		t.Errorf("healthy service: health_output %q, want none", s.HealthOutput)
	}
}
