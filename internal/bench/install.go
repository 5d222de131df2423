package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/blob"
	"github.com/drover-dev/drover/internal/install"
	"github.com/drover-dev/drover/internal/pkgfile"
)

// InstallConfig configures Install.
type InstallConfig struct {
	// Files is how many files the tree has; 0 = 5000.
	Files int
	// Size is their total size in bytes; 0 = 200 MB.
	Size int64
	// Dir holds the work folder; empty = the system temp folder. It must
	// be a real disk: durability is what is measured.
	Dir string
	// Runs is how many times each installer runs; 0 = 3.
	Runs int
	// Warm reads each installer's input (blob cache, tar, .deb) into the
	// page cache before its run instead of dropping the cache: the case
	// of an agent that has just downloaded its blobs.
	Warm bool
	// Out receives the figures.
	Out io.Writer
}

// Tree is what genTree made.
type Tree struct {
	Files int
	Dirs  int
	Bytes int64
}

// treeDirs is how many subfolders the generated tree spreads its files
// over.
const treeDirs = 50

// Installers timed by Install, by name.
const (
	byDrover = "drover"
	byTar    = "tar+sync"
	byDpkg   = "dpkg"
)

// Install times three ways of putting the same tree of files durably on
// disk, each from a local copy and with a cold page cache where the
// process may drop it: drover's install engine from its blob cache (its
// own durability included), `tar -xf` of an uncompressed tar followed by
// `sync`, and `dpkg -i` of an uncompressed .deb (which fsyncs its files
// itself). Each runs cfg.Runs times, the order alternating; it prints
// every run, the medians and the ratios.
func Install(ctx context.Context, cfg InstallConfig) error {
	if cfg.Files == 0 {
		cfg.Files = 5000
	}
	if cfg.Size == 0 {
		cfg.Size = 200e6
	}
	if cfg.Runs == 0 {
		cfg.Runs = 3
	}
	if cfg.Files < 1 || cfg.Size < 0 || cfg.Runs < 1 {
		return usagef("want at least one file, a size of zero or more and at least one run")
	}
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	if cfg.Dir == "" {
		cfg.Dir = os.TempDir()
	}
	out := cfg.Out
	work, err := os.MkdirTemp(cfg.Dir, "drover-bench-install-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	fsType := fsName(work)
	fmt.Fprintf(out, "install: work folder %s (%s)\n", work, fsType)
	if fsType == "tmpfs" {
		fmt.Fprintln(out, "install: WARNING: a tmpfs makes durability free; these figures say little about a real disk")
	}

	src := filepath.Join(work, "src")
	start := time.Now()
	tree, err := genTree(filepath.Join(src, "files"), cfg.Files, cfg.Size)
	if err != nil {
		return fmt.Errorf("generate tree: %w", err)
	}
	fmt.Fprintf(out, "install: tree of %d files, %d bytes (%.1f MB) in %d folders, generated in %s\n",
		tree.Files, tree.Bytes, float64(tree.Bytes)/1e6, tree.Dirs, secs(time.Since(start)))

	start = time.Now()
	m, digest, cache, err := prepareDrover(ctx, work, src)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "install: package built and its blobs loaded into a blob cache in %s\n", secs(time.Since(start)))

	start = time.Now()
	tarPath := filepath.Join(work, "tree.tar")
	if err := runCmd(ctx, "", "tar", "-cf", tarPath, "-C", filepath.Join(src, "files"), "."); err != nil {
		return fmt.Errorf("make the tar: %w", err)
	}
	fmt.Fprintf(out, "install: tar made in %s\n", secs(time.Since(start)))

	start = time.Now()
	debPath, debErr := buildDeb(ctx, work, filepath.Join(src, "files"))
	if debErr != nil {
		fmt.Fprintf(out, "install: dpkg skipped: %v\n", debErr)
	} else {
		fmt.Fprintf(out, "install: .deb made in %s\n", secs(time.Since(start)))
	}

	// Each runner prepares outside the clock, runs timed, then checks
	// the result and cleans up outside the clock.
	type runner struct {
		name string
		prep func(dir string) error
		run  func(dir string) error
		// installed is where the tree must have landed.
		installed func(dir string) string
		// input is what the run reads, warmed by a Warm run.
		input string
	}
	var (
		eng    *install.Engine // the drover runner's, opened by its prep
		marks  = &pointClock{}
		phases [][]phase // of each drover run
	)
	runners := []runner{
		{
			name:  byDrover,
			input: filepath.Join(work, "cache"),
			prep: func(dir string) (err error) {
				eng, err = newEngine(ctx, dir, cache, marks)
				return err
			},
			run: func(string) error {
				marks.start()
				_, err := eng.Apply(ctx, install.Target{Manifest: m, Digest: digest, Have: []string{"linux", "amd64"}})
				phases = append(phases, marks.phases())
				return err
			},
			installed: func(dir string) string {
				return filepath.Join(dir, "software", "bench", "tree", "current")
			},
		},
		{
			name:  byTar,
			input: tarPath,
			run: func(dir string) error {
				if err := runCmd(ctx, "", "tar", "-xf", tarPath, "-C", dir); err != nil {
					return err
				}
				return runCmd(ctx, "", "sync")
			},
			installed: func(dir string) string { return dir },
		},
	}
	if debErr == nil {
		runners = append(runners, runner{
			name:  byDpkg,
			input: debPath,
			prep:  prepareDpkgRoot,
			run: func(dir string) error {
				return runCmd(ctx, "", "dpkg", "--root="+dir, "--force-not-root", "--force-script-chrootless", "-i", debPath)
			},
			installed: func(dir string) string { return filepath.Join(dir, "opt", "drover-bench-tree") },
		})
	}
	var dropErr error
	times := map[string][]time.Duration{}
	for r := range cfg.Runs {
		order := make([]runner, len(runners))
		copy(order, runners)
		if r%2 == 1 {
			for i, j := 0, len(order)-1; i < j; i, j = i+1, j-1 {
				order[i], order[j] = order[j], order[i]
			}
		}
		var line []string
		for _, rn := range order {
			dir := filepath.Join(work, "runs", fmt.Sprintf("%s-%d", strings.TrimSuffix(rn.name, "+sync"), r))
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			if rn.prep != nil {
				if err := rn.prep(dir); err != nil {
					return fmt.Errorf("%s: prepare: %w", rn.name, err)
				}
			}
			if cfg.Warm {
				if err := warm(rn.input); err != nil {
					return fmt.Errorf("%s: warm the page cache: %w", rn.name, err)
				}
			} else if err := dropCaches(); err != nil {
				dropErr = err
			}
			t := time.Now()
			err := rn.run(dir)
			d := time.Since(t)
			if err != nil {
				return fmt.Errorf("%s run %d: %w", rn.name, r+1, err)
			}
			got, err := countTree(rn.installed(dir))
			if err != nil {
				return fmt.Errorf("%s run %d: check result: %w", rn.name, r+1, err)
			}
			if got.Files != tree.Files || got.Bytes != tree.Bytes {
				return fmt.Errorf("%s run %d: installed %d files, %d bytes; want %d files, %d bytes", rn.name, r+1, got.Files, got.Bytes, tree.Files, tree.Bytes)
			}
			times[rn.name] = append(times[rn.name], d)
			line = append(line, rn.name+"="+secs(d))
			if err := os.RemoveAll(dir); err != nil {
				return err
			}
		}
		fmt.Fprintf(out, "run %d: %s\n", r+1, strings.Join(line, " "))
	}
	switch {
	case cfg.Warm:
		fmt.Fprintln(out, "install: warm: each run's input was read into the page cache, then sync, before the run")
	case dropErr != nil:
		fmt.Fprintf(out, "install: page cache NOT dropped (%v): runs may read from memory\n", dropErr)
	default:
		fmt.Fprintln(out, "install: page cache dropped before each timed run (sync; echo 3 > /proc/sys/vm/drop_caches)")
	}
	md, mt := median(times[byDrover]), median(times[byTar])
	summary := fmt.Sprintf("median of %d: drover=%s tar+sync=%s", cfg.Runs, secs(md), secs(mt))
	if debErr == nil {
		summary += " dpkg=" + secs(median(times[byDpkg]))
	}
	fmt.Fprintln(out, summary)
	ratios := fmt.Sprintf("drover/(tar+sync)=%.2f", md.Seconds()/mt.Seconds())
	if debErr == nil {
		ratios += fmt.Sprintf(" drover/dpkg=%.2f", md.Seconds()/median(times[byDpkg]).Seconds())
	} else {
		ratios += " drover/dpkg=n/a"
	}
	fmt.Fprintln(out, ratios)
	fmt.Fprintf(out, "drover phases (median run): %s\n", phaseLine(phases, times[byDrover]))
	return nil
}

// phase is the time from the previous named point of the install engine
// (or the start of Apply) to this one.
type phase struct {
	point string
	d     time.Duration
}

// pointClock records when the install engine passes its named points. It
// is hooked in as Config.Crash, which the engine calls at each point; it
// always returns nil, so the engine runs as it would without it.
type pointClock struct {
	mu    sync.Mutex
	t0    time.Time
	marks []phase
	last  time.Time
}

func (c *pointClock) start() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t0, c.last, c.marks = time.Now(), time.Now(), nil
}

func (c *pointClock) point(name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	c.marks = append(c.marks, phase{name, now.Sub(c.last)})
	c.last = now
	return nil
}

func (c *pointClock) phases() []phase {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append(c.marks, phase{"return", time.Since(c.last)})
}

// phaseLine prints the phases of the drover run whose time is the median,
// the ones that took 10 ms or more.
func phaseLine(phases [][]phase, times []time.Duration) string {
	if len(phases) == 0 || len(phases) != len(times) {
		return "none"
	}
	med := median(times)
	best := 0
	for i, t := range times {
		if (t - med).Abs() < (times[best] - med).Abs() {
			best = i
		}
	}
	var parts []string
	for _, p := range phases[best] {
		if p.d >= 10*time.Millisecond {
			parts = append(parts, "→"+p.point+"="+secs(p.d))
		}
	}
	return strings.Join(parts, " ")
}

// warm reads the file, or every file under the folder, at path into the
// page cache, then syncs, so the timed run starts with nothing dirty.
func warm(path string) error {
	err := filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(io.Discard, f)
		return err
	})
	unix.Sync()
	return err
}

// genTree writes n files totalling size bytes into dir, spread over
// treeDirs subfolders. Sizes follow a log-normal law (many small files, a
// few large ones, as in real software) and contents are pseudo-random, so
// nothing deduplicates or compresses; both are the same on every run.
func genTree(dir string, n int, size int64) (Tree, error) {
	sizes := treeSizes(n, size)
	content := rand.NewChaCha8([32]byte{'d', 'r', 'o', 'v', 'e', 'r'})
	buf := make([]byte, 1<<20)
	dirs := min(n, treeDirs)
	for d := range dirs {
		if err := os.MkdirAll(filepath.Join(dir, fmt.Sprintf("d%02d", d)), 0o755); err != nil {
			return Tree{}, err
		}
	}
	for i, sz := range sizes {
		p := filepath.Join(dir, fmt.Sprintf("d%02d", i%dirs), fmt.Sprintf("f%05d.bin", i))
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return Tree{}, err
		}
		for left := sz; left > 0; {
			chunk := buf[:min(left, int64(len(buf)))]
			_, _ = content.Read(chunk)
			if _, err := f.Write(chunk); err != nil {
				f.Close()
				return Tree{}, err
			}
			left -= int64(len(chunk))
		}
		if err := f.Close(); err != nil {
			return Tree{}, err
		}
	}
	return Tree{Files: n, Dirs: dirs, Bytes: size}, nil
}

// treeSizes returns n file sizes summing to exactly total, drawn from a
// log-normal law (σ = 2: the median file is about a seventh of the mean,
// the largest a few hundred times it) with a fixed seed.
func treeSizes(n int, total int64) []int64 {
	rng := rand.New(rand.NewPCG(1, 2))
	w := make([]float64, n)
	var sum float64
	for i := range w {
		w[i] = math.Exp(2 * rng.NormFloat64())
		sum += w[i]
	}
	sizes := make([]int64, n)
	var given int64
	for i := range w {
		sizes[i] = int64(w[i] / sum * float64(total))
		given += sizes[i]
	}
	// Rounding down left a few bytes: one more to each of the first.
	for i := 0; given < total; i = (i + 1) % n {
		sizes[i]++
		given++
	}
	return sizes
}

// countTree counts the regular files under dir and their bytes.
func countTree(dir string) (Tree, error) {
	var t Tree
	// drover's `current` is a symlink, which WalkDir would not enter.
	if r, err := filepath.EvalSymlinks(dir); err == nil {
		dir = r
	}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			t.Files++
			t.Bytes += fi.Size()
		} else if d.IsDir() && p != dir {
			t.Dirs++
		}
		return nil
	})
	return t, err
}

// prepareDrover builds the package of the tree in src (prefix mode) and
// loads its blobs into a blob cache under work, as an agent's cache would
// hold them after a download.
func prepareDrover(ctx context.Context, work, src string) (*api.Manifest, string, *blob.FileStore, error) {
	spec := "group: bench\nname: tree\nversion: 1.0.0\ninstall: prefix\n"
	if err := os.WriteFile(filepath.Join(src, pkgfile.SpecFile), []byte(spec), 0o644); err != nil {
		return nil, "", nil, err
	}
	pkgPath := filepath.Join(work, "tree.drover")
	f, err := os.Create(pkgPath)
	if err != nil {
		return nil, "", nil, err
	}
	m, _, digest, err := pkgfile.Build(src, f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, "", nil, fmt.Errorf("build package: %w", err)
	}
	// Loading the cache is not timed; one sync afterwards makes it as
	// durable as a synced Put would, much faster.
	cache, err := blob.NewFileStore(blob.FileConfig{Dir: filepath.Join(work, "cache"), NoSync: true})
	if err != nil {
		return nil, "", nil, err
	}
	pf, err := os.Open(pkgPath)
	if err != nil {
		return nil, "", nil, err
	}
	defer pf.Close()
	r, err := pkgfile.NewReader(pf, pkgfile.Limits{})
	if err != nil {
		return nil, "", nil, fmt.Errorf("read package: %w", err)
	}
	defer r.Close()
	for {
		d, _, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, "", nil, fmt.Errorf("read package: %w", err)
		}
		if err := cache.Put(ctx, d, r); err != nil {
			return nil, "", nil, fmt.Errorf("load blob cache: %w", err)
		}
	}
	return m, digest, cache, os.Remove(pkgPath)
}

// newEngine opens an install engine over a fresh software root under dir
// and the blob cache, the way an agent holds one: the engine Apply then
// installs from the cache, with no network.
func newEngine(ctx context.Context, dir string, cache *blob.FileStore, clock *pointClock) (*install.Engine, error) {
	eng, err := install.New(install.Config{
		SoftwareRoot: filepath.Join(dir, "software"),
		Root:         filepath.Join(dir, "root"),
		StateDir:     filepath.Join(dir, "state"),
		Blobs:        cache,
		Crash:        clock.point,
	})
	if err != nil {
		return nil, err
	}
	if err := eng.Recover(ctx); err != nil {
		return nil, err
	}
	return eng, nil
}

// buildDeb makes an uncompressed .deb holding the tree under
// /opt/drover-bench-tree. The tree is hard-linked into the build folder,
// not copied.
func buildDeb(ctx context.Context, work, tree string) (string, error) {
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		return "", fmt.Errorf("no dpkg-deb: %w", err)
	}
	if _, err := exec.LookPath("dpkg"); err != nil {
		return "", fmt.Errorf("no dpkg: %w", err)
	}
	root := filepath.Join(work, "debroot")
	dest := filepath.Join(root, "opt", "drover-bench-tree")
	err := filepath.WalkDir(tree, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(tree, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dest, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		return os.Link(p, target)
	})
	if err != nil {
		return "", err
	}
	control := "Package: drover-bench-tree\nVersion: 1.0.0\nArchitecture: all\nMaintainer: drover bench <bench@drover.invalid>\n" +
		"Description: generated tree for drover-bench install\n"
	if err := os.MkdirAll(filepath.Join(root, "DEBIAN"), 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(root, "DEBIAN", "control"), []byte(control), 0o644); err != nil {
		return "", err
	}
	deb := filepath.Join(work, "tree.deb")
	if err := runCmd(ctx, "", "dpkg-deb", "--build", "--root-owner-group", "-Znone", root, deb); err != nil {
		return "", err
	}
	return deb, os.RemoveAll(root)
}

// prepareDpkgRoot makes the empty dpkg database that `dpkg --root=DIR`
// wants in DIR.
func prepareDpkgRoot(dir string) error {
	admin := filepath.Join(dir, "var", "lib", "dpkg")
	for _, d := range []string{"info", "updates", "triggers", "alternatives"} {
		if err := os.MkdirAll(filepath.Join(admin, d), 0o755); err != nil {
			return err
		}
	}
	for _, f := range []string{"status", "available"} {
		if err := os.WriteFile(filepath.Join(admin, f), nil, 0o644); err != nil {
			return err
		}
	}
	return os.MkdirAll(filepath.Join(dir, "var", "log"), 0o755)
}
