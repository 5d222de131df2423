package bench

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
	}{
		{"200MB", 200_000_000},
		{"200mb", 200_000_000},
		{"1.5GiB", 3 << 29},
		{"4096", 4096},
		{"10 KiB", 10240},
		{"3k", 3000},
		{"0", 0},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSize(tt.in)
			if err != nil || got != tt.want {
				t.Errorf("ParseSize(%q) = %d, %v, want %d", tt.in, got, err, tt.want)
			}
		})
	}
	for _, bad := range []string{"", "MB", "-1MB", "ten", "1e30", "5XB"} {
		t.Run("bad "+bad, func(t *testing.T) {
			if got, err := ParseSize(bad); !errors.Is(err, ErrUsage) {
				t.Errorf("ParseSize(%q) = %d, %v, want a usage error", bad, got, err)
			}
		})
	}
}

func TestParseSizes(t *testing.T) {
	got, err := ParseSizes("100, 1000,5000")
	if diff := cmp.Diff([]int{100, 1000, 5000}, got); diff != "" || err != nil {
		t.Errorf("ParseSizes = %v, %v; diff (-want +got):\n%s", got, err, diff)
	}
	for _, bad := range []string{"", "0", "100,", "1,x", "-5", "100001"} {
		if got, err := ParseSizes(bad); !errors.Is(err, ErrUsage) {
			t.Errorf("ParseSizes(%q) = %v, %v, want a usage error", bad, got, err)
		}
	}
}

func TestTreeSizes(t *testing.T) {
	for _, tt := range []struct {
		n     int
		total int64
	}{{5000, 200e6}, {7, 10}, {3, 0}, {1, 12345}} {
		sizes := treeSizes(tt.n, tt.total)
		var sum int64
		for _, s := range sizes {
			if s < 0 {
				t.Fatalf("treeSizes(%d, %d) has a negative size %d", tt.n, tt.total, s)
			}
			sum += s
		}
		if len(sizes) != tt.n || sum != tt.total {
			t.Errorf("treeSizes(%d, %d): %d sizes summing to %d, want %d summing to %d", tt.n, tt.total, len(sizes), sum, tt.n, tt.total)
		}
		if again := treeSizes(tt.n, tt.total); !cmp.Equal(sizes, again) {
			t.Errorf("treeSizes(%d, %d) differs between calls", tt.n, tt.total)
		}
	}
	// Varied: the largest file is far larger than the median one.
	sizes := treeSizes(5000, 200e6)
	var big int64
	for _, s := range sizes {
		big = max(big, s)
	}
	if med := percentileInt(sizes, 50); big < 50*med {
		t.Errorf("treeSizes(5000, 200e6): largest %d, median %d; want a spread of at least 50x", big, med)
	}
}

func percentileInt(xs []int64, p int) int64 {
	ds := make([]time.Duration, len(xs))
	for i, x := range xs {
		ds[i] = time.Duration(x)
	}
	return int64(percentile(ds, p))
}

func TestGenTree(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	want := Tree{Files: 120, Dirs: treeDirs, Bytes: 300_000}
	for _, d := range []string{a, b} {
		got, err := genTree(d, want.Files, want.Bytes)
		if err != nil || got != want {
			t.Fatalf("genTree = %+v, %v, want %+v", got, err, want)
		}
		counted, err := countTree(d)
		if err != nil || counted != want {
			t.Errorf("countTree after genTree = %+v, %v, want %+v", counted, err, want)
		}
	}
	p := filepath.Join("d07", "f00057.bin")
	x, err1 := os.ReadFile(filepath.Join(a, p))
	y, err2 := os.ReadFile(filepath.Join(b, p))
	if err1 != nil || err2 != nil || !bytes.Equal(x, y) {
		t.Errorf("genTree twice: %s differs (%v, %v)", p, err1, err2)
	}
}

func TestMedianPercentile(t *testing.T) {
	ds := []time.Duration{5, 1, 3}
	if got := median(ds); got != 3 {
		t.Errorf("median(%v) = %v, want 3", ds, got)
	}
	if got := median([]time.Duration{4, 1, 3, 2}); got != 2 {
		t.Errorf("median(4,1,3,2) = %v, want 2 (mean of 2 and 3, truncated)", got)
	}
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(100 - i)
	}
	for _, tt := range []struct {
		p    int
		want time.Duration
	}{{50, 50}, {99, 99}, {100, 100}, {1, 1}} {
		if got := percentile(hundred, tt.p); got != tt.want {
			t.Errorf("percentile(1..100, %d) = %v, want %v", tt.p, got, tt.want)
		}
	}
}

func TestProcReaders(t *testing.T) {
	rss, err := procStatusBytes(os.Getpid(), "VmHWM")
	if err != nil || rss < 1<<20 {
		t.Errorf("procStatusBytes(self, VmHWM) = %d, %v, want at least 1 MiB", rss, err)
	}
	if _, err := procStatusBytes(os.Getpid(), "NoSuchField"); err == nil {
		t.Errorf("procStatusBytes(self, NoSuchField) = nil error, want one")
	}
	if cpu := procCPU(os.Getpid()); cpu < 0 || cpu > time.Hour {
		t.Errorf("procCPU(self) = %v, want a small positive duration", cpu)
	}
}

func TestCountingHandler(t *testing.T) {
	h := &countingHandler{}
	log := slog.New(h).With("device", "dev-1")
	log.Info("not counted")
	log.Warn("server unreachable", "err", "too many open files")
	log.Error("second")
	n, first := h.summary()
	if n != 2 || first != "server unreachable device=dev-1 err=too many open files" {
		t.Errorf("summary() = %d, %q, want 2 and the first warning with its attributes", n, first)
	}
	fl := &fleet{ids: []string{"a"}, log: h}
	if err := fl.explain(errors.New("timed out")); !strings.Contains(err.Error(), "RESOURCE LIMIT (too many open files") {
		t.Errorf("explain() = %v, want it to name the resource limit", err)
	}
}

func TestInstallSmall(t *testing.T) {
	var out bytes.Buffer
	// Warm: a test must not drop the whole machine's page cache.
	err := Install(context.Background(), InstallConfig{Files: 30, Size: 200_000, Dir: t.TempDir(), Runs: 1, Warm: true, Out: &out})
	if err != nil {
		t.Fatalf("Install: %v\n%s", err, out.String())
	}
	for _, want := range []string{"tree of 30 files, 200000 bytes", "median of 1: drover=", "drover/(tar+sync)="} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("Install output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestTrustSmall(t *testing.T) {
	var out bytes.Buffer
	if err := Trust(context.Background(), TrustConfig{Builds: 20, Pushes: 2, Dir: t.TempDir(), Out: &out}); err != nil {
		t.Fatalf("Trust: %v\n%s", err, out.String())
	}
	for _, want := range []string{"signed builds: 20 in 256 bins", "plan refresh, new agent: ", "signed push of one build"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("Trust output lacks %q:\n%s", want, out.String())
		}
	}
	if err := Trust(context.Background(), TrustConfig{Builds: 0, Pushes: 1, Out: &out}); !errors.Is(err, ErrUsage) {
		t.Errorf("Trust with no builds: %v, want ErrUsage", err)
	}
}
