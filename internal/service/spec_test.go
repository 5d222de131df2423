package service

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/drover-dev/drover/internal/api"
)

func TestSpecs(t *testing.T) {
	keep := 2
	m := &api.Manifest{
		Params: map[string]api.Param{"port": {Type: "int"}, "token": {Type: "string", Secret: true}},
		Services: []api.Service{
			{Name: "web", Start: "bin/web", Restart: RestartAlways},
			{Name: "api", Start: "bin/api", Stop: "bin/stop", Health: "bin/health", Restart: RestartNever,
				Ports: []int{8081}, Startup: "45s", Console: &api.ServiceConsole{MaxSize: "1MiB", Keep: &keep}},
		},
	}
	app := App{Name: "com.example:web", Version: "1.0.0", Instance: "blue", Location: "/loc",
		Params: map[string]string{"port": "8081", "token": "t0ken"}, Labels: map[string]string{"env": "prod", "region": "trd"}}
	secret := map[string]bool{"token": true}
	want := []Spec{
		{Coordinate: "blue.web.prod.trd", Package: "com.example:web", Version: "1.0.0", Instance: "blue", Service: "web",
			Location: "/loc", Start: "bin/web", Restart: RestartAlways, Params: app.Params, Secret: secret,
			Startup: 30 * time.Second, ConsoleMax: 10_000_000, ConsoleKeep: 5},
		{Coordinate: "blue.api.prod.trd", Package: "com.example:web", Version: "1.0.0", Instance: "blue", Service: "api",
			Location: "/loc", Start: "bin/api", Stop: "bin/stop", Health: "bin/health", Restart: RestartNever, Params: app.Params, Secret: secret,
			Ports: []int{8081}, Startup: 45 * time.Second, ConsoleMax: 1 << 20, ConsoleKeep: 2},
	}
	if diff := cmp.Diff(want, Specs(m, app)); diff != "" {
		t.Errorf("Specs() mismatch (-want +got):\n%s", diff)
	}
}

// FuzzPIDFiles: run/start.pid is written by the service and
// run/drover-supervised may be damaged; reading them never panics and
// never yields pid 0 or 1 as a process to watch.
func FuzzPIDFiles(f *testing.F) {
	for _, s := range []string{"123\n", "123 456\n", "", "1", "-5", "99999999999999999999", "12 x", " 7\t8 \n", "0x10"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.MkdirAll(filepath.Join(dir, "run"), 0o755); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"start.pid", identFile} {
			if err := os.WriteFile(filepath.Join(dir, "run", name), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if pid := readPID(filepath.Join(dir, "run", "start.pid")); pid < 0 || pid == 1 {
			t.Fatalf("readPID(%q) = %d", data, pid)
		}
		_, _, _ = readIdent(dir)
	})
}
