package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFailingScript checks a failing postinst leaves the device in its last
// good state and the event carries the script's output.
func TestFailingScript(t *testing.T) {
	f := newFleet(t)
	good := writeSource(t, filepath.Join(f.dir, "src", "svc-1.0.0"), pkgSource{
		yaml:  "group: com.example\nname: svc\nversion: 1.0.0\n",
		files: map[string]string{"files/bin/svc": "#!/bin/sh\necho one\n"},
	})
	bad := writeSource(t, filepath.Join(f.dir, "src", "svc-2.0.0"), pkgSource{
		yaml:    "group: com.example\nname: svc\nversion: 2.0.0\n",
		files:   map[string]string{"files/bin/svc": "#!/bin/sh\necho two\n"},
		scripts: map[string]string{"postinst": "echo 'cannot open /dev/widget: no such device' >&2\nexit 3"},
	})
	var files []string
	for _, dir := range []string{good, bad} {
		out := filepath.Join(f.dir, filepath.Base(dir)+".drover")
		f.mustOK(nil, "pkg", "build", dir, "-o", out)
		files = append(files, out)
	}
	f.op(append([]string{"pkg", "push"}, files...)...)
	a := f.newAgent("delta")
	a.start()
	f.waitFor("delta", "reported", func(d deviceJSON) bool { return len(d.SystemTags) > 0 })
	f.op("state", "set", "-f", writeState(t, f, "delta", "id: delta\napps:\n  - name: com.example:svc\n    version: 1.0.0\n"))
	f.waitConverged("delta", "com.example:svc=1.0.0")

	f.op("state", "set", "-f", writeState(t, f, "delta", "id: delta\napps:\n  - name: com.example:svc\n    version: 2.0.0\n"))
	d := f.waitFor("delta", "failed", func(d deviceJSON) bool { return d.Status.Error != "" })
	if !strings.Contains(d.Status.Error, "postinst") {
		t.Errorf("device error = %q, want it to name postinst", d.Status.Error)
	}
	if len(d.Apps) != 1 || d.Apps[0].Version != "1.0.0" {
		t.Errorf("after a failed upgrade the device reports %+v, want svc 1.0.0", d.Apps)
	}
	cur := filepath.Join(a.software, "com", "example", "svc", "current")
	if target, _ := os.Readlink(cur); filepath.Base(target) != "1.0.0" {
		t.Errorf("current -> %q after a failed upgrade, want 1.0.0", target)
	}
	if got := readFile(t, filepath.Join(cur, "bin", "svc")); !strings.Contains(got, "one") {
		t.Errorf("bin/svc = %q after a failed upgrade", got)
	}

	out := f.op("events", "--device", "delta", "--kind", "step-failed", "-o", "json")
	dec := jsonArray(t, out)
	var found bool
	for dec.More() {
		var ev struct {
			Level    string          `json:"level"`
			Priority string          `json:"priority"`
			Payload  json.RawMessage `json:"payload"`
		}
		if err := dec.Decode(&ev); err != nil {
			t.Fatalf("events -o json: %v\n%s", err, out)
		}
		if strings.Contains(string(ev.Payload), "cannot open /dev/widget") && ev.Level == "error" && ev.Priority == "high" {
			found = true
		}
	}
	if !found {
		t.Errorf("no step-failed event at error/high carrying the script's output:\n%s", out)
	}
}
