package bench

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/drover-dev/drover/internal/store"
	"github.com/drover-dev/drover/internal/store/sqlite"
	"github.com/drover-dev/drover/internal/trust"
	"github.com/drover-dev/drover/internal/trustserver"
)

// TrustConfig configures the trust benchmark.
type TrustConfig struct {
	Builds int    // signed builds in the repository
	Pushes int    // single signed pushes timed on top of them
	Dir    string // parent of the work folder ("" = system temp)
	Out    io.Writer
}

// repoRemote is the server's repository as the publisher and the agent
// reach it, counting the bytes the agent fetches.
type repoRemote struct {
	r       *trustserver.Repository
	fetched atomic.Int64
	files   atomic.Int64
}

func (rr *repoRemote) TrustMetadata(ctx context.Context, name string) ([]byte, error) {
	d, err := rr.r.File(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, trust.ErrNotFound
	}
	rr.fetched.Add(int64(len(d)))
	rr.files.Add(1)
	return d, err
}

func (rr *repoRemote) PutTrustMetadata(ctx context.Context, roles map[string][]byte) error {
	return rr.r.Upload(ctx, roles)
}

func fakeBuild(i int) trust.Build {
	content := fmt.Sprintf("manifest of build %d", i)
	sum := sha256.Sum256([]byte(content))
	return trust.Build{Coordinate: fmt.Sprintf("com.example:pkg%05d:1.0.0", i), Tags: []string{"amd64", "linux"},
		Digest: hex.EncodeToString(sum[:]), Length: int64(len(content))}
}

// Trust measures what a signed fleet pays: the metadata bytes an agent
// fetches and the time of one plan's refresh with cfg.Builds signed
// builds (a new agent, and one that refreshed before), and the time of a
// signed push of one build.
func Trust(ctx context.Context, cfg TrustConfig) error {
	if cfg.Builds < 1 || cfg.Pushes < 1 {
		return usagef("trust: -builds and -pushes must be at least 1")
	}
	dir, err := os.MkdirTemp(cfg.Dir, "drover-bench-trust-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	keys := filepath.Join(dir, "keys")
	if err := trust.Init(trust.InitConfig{Dir: keys, Now: time.Now()}); err != nil {
		return err
	}
	st, err := sqlite.Open(ctx, filepath.Join(dir, "drover.db"), nil)
	if err != nil {
		return err
	}
	defer st.Close()
	repo, err := trustserver.New(ctx, trustserver.Config{Dir: keys}, st)
	if err != nil {
		return err
	}
	remote := &repoRemote{r: repo}
	key, err := trust.LoadKey(filepath.Join(keys, trust.TargetsKey))
	if err != nil {
		return err
	}
	builds := make([]trust.Build, cfg.Builds)
	for i := range builds {
		builds[i] = fakeBuild(i)
	}
	start := time.Now()
	if err := trust.SignBuilds(ctx, remote, key, builds, time.Now()); err != nil {
		return err
	}
	fill := time.Since(start)
	root, err := os.ReadFile(filepath.Join(keys, trust.RootFile))
	if err != nil {
		return err
	}
	agentDir := filepath.Join(dir, "agent")
	v, err := trust.NewVerifier(trust.VerifierConfig{Dir: agentDir, Root: root}, remote)
	if err != nil {
		return err
	}
	refresh := func(b trust.Build) (int64, int64, time.Duration, error) {
		remote.fetched.Store(0)
		remote.files.Store(0)
		t0 := time.Now()
		err := v.Check(ctx, []trust.Build{b})
		return remote.fetched.Load(), remote.files.Load(), time.Since(t0), err
	}
	coldBytes, coldFiles, cold, err := refresh(builds[cfg.Builds/2])
	if err != nil {
		return err
	}
	// Single signed pushes on top, each followed by a warm refresh of an
	// agent that wants the new build.
	var push, warm time.Duration
	var warmBytes, warmFiles int64
	for i := range cfg.Pushes {
		b := fakeBuild(cfg.Builds + i)
		t0 := time.Now()
		if err := trust.SignBuilds(ctx, remote, key, []trust.Build{b}, time.Now()); err != nil {
			return err
		}
		push += time.Since(t0)
		n, f, d, err := refresh(b)
		if err != nil {
			return err
		}
		warm += d
		warmBytes += n
		warmFiles += f
	}
	top, _ := repo.File(ctx, "targets.json")
	snap, _ := repo.File(ctx, "snapshot.json")
	bin, _ := repo.File(ctx, "bins-00.json")
	fmt.Fprintf(cfg.Out, "signed builds: %d in 256 bins (targets.json %d B, snapshot.json %d B, one bin ~%d B)\n", cfg.Builds, len(top), len(snap), len(bin))
	fmt.Fprintf(cfg.Out, "fill: %d builds signed in one push: %.2f s\n", cfg.Builds, fill.Seconds())
	fmt.Fprintf(cfg.Out, "plan refresh, new agent: %d B in %d files, %.3f s\n", coldBytes, coldFiles, cold.Seconds())
	fmt.Fprintf(cfg.Out, "plan refresh after a push: %d B in %.1f files, %.3f s (mean of %d)\n",
		warmBytes/int64(cfg.Pushes), float64(warmFiles)/float64(cfg.Pushes), warm.Seconds()/float64(cfg.Pushes), cfg.Pushes)
	fmt.Fprintf(cfg.Out, "signed push of one build (sign + upload + server's snapshot/timestamp): %.1f ms (mean of %d)\n",
		float64(push.Microseconds())/1000/float64(cfg.Pushes), cfg.Pushes)
	return nil
}
