package facts

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fileKeys are the facts that come from files under Root; the others come
// from the running system.
var fileKeys = []string{KeyDistro, KeyDistroVersion, KeyLibc, KeyLibcVersion, KeyInit, KeyMemoryBytes}

// fromFiles returns the file-based facts of f.
func fromFiles(f Facts) Facts {
	out := Facts{}
	for _, k := range fileKeys {
		if v, ok := f[k]; ok {
			out[k] = v
		}
	}
	return out
}

// withSystem returns tags plus the os and arch tags of f, sorted.
func withSystem(f Facts, tags ...string) []string {
	tags = append(tags, f[KeyOS], f[KeyArch])
	slices.Sort(tags)
	return slices.Compact(tags)
}

func TestDetectTestdata(t *testing.T) {
	tests := []struct {
		root     string
		want     Facts
		wantTags []string // besides os and arch
	}{
		{
			root: "testdata/debian",
			want: Facts{
				KeyDistro: "debian", KeyDistroVersion: "12",
				KeyLibc: "glibc", KeyLibcVersion: "2.36",
				KeyInit:        "systemd",
				KeyMemoryBytes: strconv.Itoa(2048000 * 1024),
			},
			wantTags: []string{"debian", "debian-12", "glibc", "glibc-2.36", "systemd"},
		},
		{
			root: "testdata/alpine",
			want: Facts{
				KeyDistro: "alpine", KeyDistroVersion: "3.19.1",
				KeyLibc: "musl", KeyLibcVersion: "1.2.4",
				KeyInit:        "openrc",
				KeyMemoryBytes: strconv.Itoa(512000 * 1024),
			},
			wantTags: []string{"alpine", "alpine-3.19", "alpine-3.19.1", "musl", "musl-1.2", "musl-1.2.4", "openrc"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.root, func(t *testing.T) {
			f, err := Detect(Config{Root: tt.root})
			if err != nil {
				t.Fatalf("Detect(%s) error = %v", tt.root, err)
			}
			if diff := cmp.Diff(tt.want, fromFiles(f)); diff != "" {
				t.Errorf("Detect(%s) (-want +got):\n%s", tt.root, diff)
			}
			if diff := cmp.Diff(withSystem(f, tt.wantTags...), Tags(f)); diff != "" {
				t.Errorf("Tags(Detect(%s)) (-want +got):\n%s", tt.root, diff)
			}
		})
	}
}

// tree writes files (path → content; content "->X" makes a symlink to X,
// a path ending in "/" a directory) under a new root and returns it.
func tree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, content := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		switch {
		case strings.HasSuffix(p, "/"):
			err = os.MkdirAll(full, 0o755)
		case strings.HasPrefix(content, "->"):
			err = os.Symlink(content[2:], full)
		default:
			err = os.WriteFile(full, []byte(content), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return root
}

const banner = "\x00GNU C Library (GNU libc) stable release version %s.\n\x00"

func glibcFile(version string) string { return strings.Replace(banner, "%s", version, 1) }

func TestDetectTrees(t *testing.T) {
	tests := []struct {
		name    string
		files   map[string]string
		want    Facts
		wantErr string
	}{
		{
			name:  "empty root",
			files: map[string]string{},
			want:  Facts{},
		},
		{
			// An image whose /lib is an absolute link must be read inside
			// the image, never on the host.
			name: "absolute symlink stays in root",
			files: map[string]string{
				"lib":                                "->/usr/lib",
				"usr/lib/x86_64-linux-gnu/libc.so.6": "->/opt/glibc/libc.so.6",
				"opt/glibc/libc.so.6":                glibcFile("2.99"),
				"etc/os-release":                     "->/usr/lib/os-release",
				"usr/lib/os-release":                 "ID=testos\nVERSION_ID=7\n",
				"usr/lib64/not-libc.so.6":            "x",
			},
			want: Facts{KeyLibc: "glibc", KeyLibcVersion: "2.99", KeyDistro: "testos", KeyDistroVersion: "7"},
		},
		{
			name: "old glibc named by its file",
			files: map[string]string{
				"lib64/libc.so.6":    "->libc-2.17.so",
				"lib64/libc-2.17.so": "no banner here",
				"etc/inittab":        "id:3:initdefault:\n",
			},
			want: Facts{KeyLibc: "glibc", KeyLibcVersion: "2.17", KeyInit: "sysvinit"},
		},
		{
			name: "glibc without a version",
			files: map[string]string{
				"usr/lib/aarch64-linux-gnu/libc.so.6": "stripped",
			},
			want: Facts{KeyLibc: "glibc"},
		},
		{
			name: "glibc wins over an installed musl",
			files: map[string]string{
				"lib/x86_64-linux-gnu/libc.so.6": glibcFile("2.36"),
				"lib/ld-musl-x86_64.so.1":        "->x86_64-linux-musl/libc.so",
				"lib/x86_64-linux-musl/libc.so":  "\x001.2.3\x00",
			},
			want: Facts{KeyLibc: "glibc", KeyLibcVersion: "2.36"},
		},
		{
			name: "musl through a relative link, version unknown",
			files: map[string]string{
				"usr/lib/ld-musl-aarch64.so.1": "no version",
				"sbin/openrc-run":              "x",
			},
			want: Facts{KeyLibc: "musl", KeyInit: "openrc"},
		},
		{
			name: "os-release only under usr/lib, no VERSION_ID",
			files: map[string]string{
				"usr/lib/os-release": "# rolling\nID='arch'\nBUILD_ID=rolling\n",
			},
			want: Facts{KeyDistro: "arch"},
		},
		{
			name: "unreadable os-release is an error beside the other facts",
			files: map[string]string{
				"etc/os-release/": "",
				"proc/meminfo":    "MemTotal: 1000 kB\n",
			},
			want:    Facts{KeyMemoryBytes: "1024000"},
			wantErr: "/etc/os-release: is a directory",
		},
		{
			name: "meminfo without MemTotal",
			files: map[string]string{
				"proc/meminfo": "MemFree: 10 kB\n",
			},
			want: Facts{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := tree(t, tt.files)
			f, err := Detect(Config{Root: root})
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("Detect error = %v, want %q", err, tt.wantErr)
			}
			if f == nil {
				t.Fatal("Detect returned nil facts")
			}
			if diff := cmp.Diff(tt.want, fromFiles(f)); diff != "" {
				t.Errorf("Detect (-want +got):\n%s", diff)
			}
			if f[KeyOS] != runtime.GOOS {
				t.Errorf("os = %q, want %q whatever the root", f[KeyOS], runtime.GOOS)
			}
		})
	}
}

func TestDetectBadRoot(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "missing")
	for _, tt := range []struct{ root, want string }{
		{missing, "root " + missing + ": no such file or directory"},
		{file, "root " + file + ": not a directory"},
	} {
		f, err := Detect(Config{Root: tt.root})
		if err == nil || err.Error() != tt.want || f != nil {
			t.Errorf("Detect(%s) = %v, %v; want nil, %q", tt.root, f, err, tt.want)
		}
	}
}

// TestDetectHost runs on the machine the tests run on.
func TestDetectHost(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skipf("facts of a %s host are not checked", runtime.GOOS)
	}
	f, err := Detect(Config{})
	if err != nil {
		t.Errorf("Detect(/) error = %v", err)
	}
	if f[KeyOS] != "linux" {
		t.Errorf("os = %q, want linux", f[KeyOS])
	}
	want := map[string]string{"amd64": "amd64", "arm64": "arm64", "riscv64": "riscv64"}[runtime.GOARCH]
	if want == "" {
		want = archName(runtime.GOARCH, goarm(), f[KeyMachine])
	}
	if f[KeyArch] != want {
		t.Errorf("arch = %q, want %q (GOARCH %s)", f[KeyArch], want, runtime.GOARCH)
	}
	if f[KeyMachine] == "" || f[KeyKernel] == "" {
		t.Errorf("machine = %q, kernel = %q; want both from uname", f[KeyMachine], f[KeyKernel])
	}
	if got, want := f[KeyCPUs], strconv.Itoa(runtime.NumCPU()); got != want {
		t.Errorf("cpus = %q, want %q", got, want)
	}
	if n, err := strconv.ParseUint(f[KeyMemoryBytes], 10, 64); err != nil || n < 64<<20 {
		t.Errorf("memory_bytes = %q, want a number of at least 64 MiB", f[KeyMemoryBytes])
	}
	if h, _ := os.Hostname(); f[KeyHostname] != h {
		t.Errorf("hostname = %q, want %q", f[KeyHostname], h)
	}
	tags := Tags(f)
	for _, tag := range []string{"linux", f[KeyArch]} {
		if !slices.Contains(tags, tag) {
			t.Errorf("Tags = %v, want %q among them", tags, tag)
		}
	}
	t.Logf("facts: %v", f)
	t.Logf("tags: %v", tags)
}

func TestArchName(t *testing.T) {
	tests := []struct {
		goarch, goarm, machine, want string
	}{
		{"amd64", "", "x86_64", "amd64"},
		{"arm64", "", "aarch64", "arm64"},
		{"arm", "7", "armv7l", "armv7l"},
		{"arm", "7", "aarch64", "armv7l"}, // a 32-bit agent on a 64-bit kernel
		{"arm", "6", "armv7l", "armv6l"},
		{"arm", "5", "armv5tel", "armv5l"},
		{"arm", "7,softfloat", "armv7l", "armv7l"},
		{"arm", "", "armv7l", "armv7l"},
		{"arm", "", "aarch64", "arm"},
		{"386", "", "i686", "386"},
		{"riscv64", "", "riscv64", "riscv64"},
	}
	for _, tt := range tests {
		if got := archName(tt.goarch, tt.goarm, tt.machine); got != tt.want {
			t.Errorf("archName(%q, %q, %q) = %q, want %q", tt.goarch, tt.goarm, tt.machine, got, tt.want)
		}
	}
}

func TestTags(t *testing.T) {
	tests := []struct {
		name string
		f    Facts
		want []string
	}{
		{"empty", Facts{}, nil},
		{
			"debian",
			Facts{KeyOS: "linux", KeyArch: "amd64", KeyLibc: "glibc", KeyLibcVersion: "2.36", KeyInit: "systemd",
				KeyDistro: "debian", KeyDistroVersion: "12", KeyHostname: "h1", KeyKernel: "6.1.0", KeyMachine: "x86_64"},
			[]string{"amd64", "debian", "debian-12", "glibc", "glibc-2.36", "linux", "systemd"},
		},
		{
			"version without a name is dropped",
			Facts{KeyOS: "linux", KeyLibcVersion: "2.36", KeyDistroVersion: "12"},
			[]string{"linux"},
		},
		{
			"empty values skipped",
			Facts{KeyOS: "linux", KeyArch: "", KeyInit: "", KeyLibc: "glibc", KeyLibcVersion: ""},
			[]string{"glibc", "linux"},
		},
		{
			"invalid tag values skipped",
			Facts{KeyOS: "linux", KeyDistro: "my distro", KeyDistroVersion: "1", KeyInit: "-x"},
			[]string{"linux"},
		},
		{
			"three-part versions also give major.minor",
			Facts{KeyLibc: "musl", KeyLibcVersion: "1.2.4", KeyDistro: "alpine", KeyDistroVersion: "3.19.1"},
			[]string{"alpine", "alpine-3.19", "alpine-3.19.1", "musl", "musl-1.2", "musl-1.2.4"},
		},
		{
			"duplicates once",
			Facts{KeyOS: "linux", KeyDistro: "linux"},
			[]string{"linux"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, Tags(tt.f)); diff != "" {
				t.Errorf("Tags(%v) (-want +got):\n%s", tt.f, diff)
			}
		})
	}
}

// TestScanBoundary puts the glibc banner across every chunk boundary
// position: the version must be found whole, never cut short.
func TestScanBoundary(t *testing.T) {
	b := []byte(glibcFile("2.36"))
	for shift := 0; shift <= len(b); shift++ {
		data := append(bytes.Repeat([]byte{0}, 64<<10-shift), b...)
		data = append(data, bytes.Repeat([]byte{0}, 100)...)
		got, err := scan(bytes.NewReader(data), 64, glibcRe)
		if err != nil || got != "2.36" {
			t.Fatalf("scan with the banner %d bytes before the chunk end = %q, %v; want 2.36", shift, got, err)
		}
	}
	// Nothing past the limit is read.
	data := append(bytes.Repeat([]byte{0}, 100), b...)
	dir := t.TempDir()
	p := filepath.Join(dir, "libc.so.6")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := scanFile(p, 100, 64, glibcRe); err != nil || got != "" {
		t.Errorf("scanFile with limit 100 = %q, %v; want nothing", got, err)
	}
	if got, err := scanFile(p, int64(len(data)), 64, glibcRe); err != nil || got != "2.36" {
		t.Errorf("scanFile = %q, %v; want 2.36", got, err)
	}
}

func TestParseOSRelease(t *testing.T) {
	in := "# comment\n" +
		"NAME=\"Ubuntu\"\n" +
		"ID=ubuntu\n" +
		"ID_LIKE=debian\n" +
		"VERSION_ID=\"22.04\"\n" +
		`PRETTY_NAME="Say \"hi\" \$x \\ \` + "`" + ` end"` + "\n" +
		"SINGLE='a b'\n" +
		" SPACED = x\n" +
		"=novalue\n" +
		"broken line\n" +
		"EMPTY=\n"
	want := map[string]string{
		"NAME": "Ubuntu", "ID": "ubuntu", "ID_LIKE": "debian", "VERSION_ID": "22.04",
		"PRETTY_NAME": "Say \"hi\" $x \\ ` end", "SINGLE": "a b", "EMPTY": "",
	}
	if diff := cmp.Diff(want, parseOSRelease(in)); diff != "" {
		t.Errorf("parseOSRelease (-want +got):\n%s", diff)
	}
}

func TestParseMemTotal(t *testing.T) {
	tests := []struct {
		in     string
		want   uint64
		wantOK bool
	}{
		{"MemTotal:       24684092 kB\nMemFree: 1 kB\n", 24684092 * 1024, true},
		{"MemFree: 1 kB\nMemTotal: 3 mB\n", 3 << 20, true},
		{"MemTotal: 77\n", 77, true},
		{"MemTotal: x kB\n", 0, false},
		{"MemTotal: 5 GB\n", 0, false},
		{"MemTotal:\n", 0, false},
		{"MemTotal: 18446744073709551615 kB\n", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		got, ok := parseMemTotal(tt.in)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("parseMemTotal(%q) = %d, %v; want %d, %v", tt.in, got, ok, tt.want, tt.wantOK)
		}
	}
}

func TestParseLdd(t *testing.T) {
	tests := []struct {
		out, libc, version string
	}{
		{"ldd (Debian GLIBC 2.36-9+deb12u14) 2.36\nCopyright (C) 2022 Free Software Foundation, Inc.\n", "glibc", "2.36"},
		{"ldd (GNU libc) 2.38\n", "glibc", "2.38"},
		{"musl libc (x86_64)\nVersion 1.2.4\nDynamic Program Loader\n", "musl", "1.2.4"},
		{"musl libc (x86_64)\n", "musl", ""},
		{"ldd: command not found\n", "", ""},
		{"", "", ""},
	}
	for _, tt := range tests {
		libc, version := parseLdd(tt.out)
		if libc != tt.libc || version != tt.version {
			t.Errorf("parseLdd(%q) = %q, %q; want %q, %q", tt.out, libc, version, tt.libc, tt.version)
		}
	}
}

func TestParseVersion(t *testing.T) {
	for in, want := range map[string]string{
		"2.36.": "2.36", "1.2.4-r1": "1.2.4", "2.36": "2.36", "12": "", "": "", "1..2": "", ".5": "", "x1.2": "",
	} {
		if got := parseVersion(in); got != want {
			t.Errorf("parseVersion(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzParseOSRelease(f *testing.F) {
	f.Add("ID=debian\nVERSION_ID=\"12\"\n")
	f.Add("ID='x'\n# c\nA=\"\\\"\"\n")
	f.Add("=\n\"\n'")
	f.Fuzz(func(t *testing.T, s string) {
		for k := range parseOSRelease(s) {
			if k == "" || strings.ContainsAny(k, "=\n") {
				t.Errorf("parseOSRelease(%q) has key %q", s, k)
			}
		}
	})
}

func FuzzParseMemTotal(f *testing.F) {
	f.Add("MemTotal: 1024 kB\n")
	f.Add("MemTotal: 99999999999999999999 kB")
	f.Fuzz(func(t *testing.T, s string) {
		_, _ = parseMemTotal(s)
	})
}

func FuzzParseLdd(f *testing.F) {
	f.Add("ldd (GNU libc) 2.38\n")
	f.Add("musl libc (x86_64)\nVersion 1.2.4\n")
	f.Fuzz(func(t *testing.T, s string) {
		libc, version := parseLdd(s)
		if libc == "" && version != "" {
			t.Errorf("parseLdd(%q) = %q, %q: a version without a libc", s, libc, version)
		}
	})
}
