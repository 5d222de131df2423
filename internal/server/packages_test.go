package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/client"
)

// TestPushAgainIsNoop: pushing a build the server has changes nothing:
// the answer says it was already pushed, and no second "package" event
// is stored.
func TestPushAgainIsNoop(t *testing.T) {
	ts := newTestServer(t, time.Second)
	ctx := context.Background()
	ts.push(t, "tool", "1.0.0", []string{"linux"}, "v1")
	m := api.Manifest{Group: "com.example", Name: "tool", Version: "1.0.0", Tags: []string{"linux"}, Install: api.InstallPrefix,
		Files: []api.File{{Path: "data", Type: api.TypeFile, Mode: 0o644, Size: 2, Digest: sha256hex("v1")}}}
	data, _ := json.Marshal(m)
	b, err := ts.admin.PushManifest(ctx, data)
	if err != nil {
		t.Fatalf("push again: %v", err)
	}
	if !b.AlreadyPushed {
		t.Errorf("push again: answer %+v, want already_pushed", b)
	}
	evs, err := ts.admin.Events(ctx, client.EventQuery{Kind: api.KindPackage})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 {
		t.Errorf("package events after two identical pushes = %d, want 1: %+v", len(evs), evs)
	}
	// A first push is not "already pushed".
	first, err := ts.admin.Packages(ctx, "com.example:tool")
	if err != nil || len(first) != 1 || first[0].AlreadyPushed {
		t.Errorf("builds = %+v, %v", first, err)
	}
}

func sha256hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}
