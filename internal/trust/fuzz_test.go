package trust_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/store"
	"github.com/drover-dev/drover/internal/store/sqlite"
	"github.com/drover-dev/drover/internal/trust"
	"github.com/drover-dev/drover/internal/trustserver"
)

// served is a server's metadata as files, one of which a test replaces.
type served struct {
	files   map[string][]byte
	replace string
	with    []byte
}

func (s served) TrustMetadata(_ context.Context, name string) ([]byte, error) {
	if name == s.replace {
		return s.with, nil
	}
	if d, ok := s.files[name]; ok {
		return d, nil
	}
	return nil, &api.Error{Code: api.ENOTFOUND, Message: name}
}

type direct struct{ r *trustserver.Repository }

func (d direct) TrustMetadata(ctx context.Context, name string) ([]byte, error) {
	b, err := d.r.File(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, trust.ErrNotFound
	}
	return b, err
}

func (d direct) PutTrustMetadata(ctx context.Context, roles map[string][]byte) error {
	return d.r.Upload(ctx, roles)
}

func build(coord, content string) trust.Build {
	sum := sha256.Sum256([]byte(content))
	return trust.Build{Coordinate: coord, Digest: hex.EncodeToString(sum[:]), Length: int64(len(content))}
}

// FuzzVerifierMetadata feeds the agent's loading path hostile metadata,
// from the server or from its own folder: it must never panic, and never
// accept a build that was not signed.
func FuzzVerifierMetadata(f *testing.F) {
	ctx := context.Background()
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	keys := filepath.Join(f.TempDir(), "keys")
	if err := trust.Init(trust.InitConfig{Dir: keys, Now: now}); err != nil {
		f.Fatal(err)
	}
	st, err := sqlite.Open(ctx, filepath.Join(f.TempDir(), "db"), nil)
	if err != nil {
		f.Fatal(err)
	}
	defer st.Close()
	repo, err := trustserver.New(ctx, trustserver.Config{Dir: keys, Now: func() time.Time { return now }}, st)
	if err != nil {
		f.Fatal(err)
	}
	k, err := trust.LoadKey(filepath.Join(keys, trust.TargetsKey))
	if err != nil {
		f.Fatal(err)
	}
	good := build("com.example:a:1.0.0", "a")
	if err := trust.SignBuilds(ctx, direct{repo}, k, []trust.Build{good}, now); err != nil {
		f.Fatal(err)
	}
	names := []string{"1.root.json", "2.root.json", "timestamp.json", "snapshot.json", "targets.json"}
	files := map[string][]byte{}
	for _, n := range names[:1] {
		files[n], _ = repo.File(ctx, n)
	}
	for _, n := range names[2:] {
		files[n], _ = repo.File(ctx, n)
	}
	root, _ := os.ReadFile(filepath.Join(keys, trust.RootFile))
	// The bin of the good build.
	var bin string
	for i := range 256 {
		n := fmt.Sprintf("bins-%02x.json", i)
		if d, err := repo.File(ctx, n); err == nil {
			files[n], bin = d, n
		}
	}
	names = append(names, bin, "root.json")
	for i, n := range names {
		f.Add(uint8(i), false, files[n])
		f.Add(uint8(i), true, files[n])
	}
	f.Add(uint8(2), false, []byte(`{"signed":{"_type":"timestamp","version":99},"signatures":[]}`))
	f.Add(uint8(7), true, []byte("{"))
	evil := build("com.example:a:1.0.0", "evil")
	f.Fuzz(func(t *testing.T, which uint8, local bool, data []byte) {
		name := names[int(which)%len(names)]
		dir := t.TempDir()
		src := served{files: files}
		if local {
			if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
				t.Fatal(err)
			}
		} else {
			src.replace, src.with = name, data
		}
		v, err := trust.NewVerifier(trust.VerifierConfig{Dir: dir, Root: root, Now: func() time.Time { return now }}, src)
		if err != nil {
			t.Fatal(err)
		}
		if err := v.Check(ctx, []trust.Build{evil}); err == nil {
			t.Fatalf("an unsigned build was accepted with %s = %q", name, data)
		}
		var r *trust.Refused
		if err := v.Check(ctx, []trust.Build{good}); err != nil && !errors.As(err, &r) {
			t.Fatalf("Check: %v is not a *Refused", err)
		}
	})
}
