package service

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// consoleLines reads a console file and its rotated copies, oldest
// first, and returns their lines and the names of the files.
func consoleLines(t *testing.T, path string) (lines []string, files []string) {
	t.Helper()
	matches, _ := filepath.Glob(path + ".*")
	for i := len(matches); i >= 1; i-- {
		files = append(files, path+"."+strconv.Itoa(i))
	}
	files = append(files, path)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatalf("console files %v: %v", matches, err)
		}
		for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
			if l != "" {
				lines = append(lines, l)
			}
		}
	}
	return lines, files
}

func TestRotator(t *testing.T) {
	tests := []struct {
		name   string
		max    int64
		keep   int
		writes []string
		want   []string // file contents, oldest first, the current last
	}{
		{"under the limit", 100, 2, []string{"a\n", "b\n"}, []string{"a\nb\n"}},
		{"rotates at a line end", 4, 2, []string{"aa\n", "bb\n", "cc\n"}, []string{"aa\n", "bb\n", "cc\n"}},
		{"a write cut at its last line that fits", 7, 3, []string{"aa\nbb\ncc\n"}, []string{"aa\nbb\n", "cc\n"}},
		{"a partial line is never split", 4, 3, []string{"aa", "aaaa", "a\nb\n"}, []string{"aaaaaaa\n", "b\n"}},
		{"only keep old files", 2, 2, []string{"1\n", "2\n", "3\n", "4\n"}, []string{"2\n", "3\n", "4\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "stdout.log")
			r := newRotator(path, tt.max, tt.keep)
			r.acquire()
			for _, w := range tt.writes {
				if n, err := r.Write([]byte(w)); err != nil || n != len(w) {
					t.Fatalf("Write(%q) = %d, %v", w, n, err)
				}
			}
			r.release()
			_, files := consoleLines(t, path)
			var got []string
			for _, f := range files {
				b, _ := os.ReadFile(f)
				got = append(got, string(b))
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("files = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestConsoleRotation runs a chatty service through rotations: every
// line is kept exactly once, in order, while enough old files are kept,
// and only keep old files remain when fewer are.
func TestConsoleRotation(t *testing.T) {
	const n = 3000
	chatty := fmt.Sprintf("#!/bin/sh\ni=0\nwhile [ $i -lt %d ]; do echo \"line $i of the chatty service\"; i=$((i+1)); done\necho done >&2\ntrap 'exit 0' TERM\nwhile :; do sleep 0.05; done\n", n)
	tests := []struct {
		name      string
		max       int64
		keep      int
		wantAll   bool
		wantFiles int
	}{
		{"all kept", 20_000, 100, true, 0},
		{"keep 2", 20_000, 2, false, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, loc := newSup(t)
			writeScript(t, loc, "chatty", chatty)
			sp := Spec{Coordinate: "c.chatty", Service: "chatty", Location: loc, Start: "bin/chatty", Restart: RestartNever,
				ConsoleMax: tt.max, ConsoleKeep: tt.keep}
			if err := s.Start(context.Background(), sp); err != nil {
				t.Fatal(err)
			}
			pid := state(s, "c.chatty").PID
			path := filepath.Join(s.Dir("c.chatty"), "console", "stdout.log")
			last := fmt.Sprintf("line %d of the chatty service", n-1)
			poll(t, "the last line written", func() bool {
				b, _ := os.ReadFile(path)
				return strings.Contains(string(b), last)
			})
			lines, files := consoleLines(t, path)
			if tt.wantFiles > 0 && len(files) != tt.wantFiles {
				t.Errorf("console files %v, want %d (keep %d old ones)", files, tt.wantFiles, tt.keep)
			}
			first := 0
			if !tt.wantAll {
				fmt.Sscanf(lines[0], "line %d", &first)
			} else if len(files) < 3 {
				t.Errorf("files %v: want several rotations", files)
			}
			for i, l := range lines {
				if want := fmt.Sprintf("line %d of the chatty service", first+i); l != want {
					t.Fatalf("line %d = %q, want %q: a line lost or written twice", i, l, want)
				}
			}
			if first+len(lines) != n {
				t.Errorf("lines %d..%d, want up to %d", first, first+len(lines)-1, n-1)
			}
			for _, f := range files {
				fi, _ := os.Stat(f)
				if fi.Size() > tt.max+64 {
					t.Errorf("%s is %d bytes, over max-size %d", f, fi.Size(), tt.max)
				}
			}
			if st := state(s, "c.chatty"); st.PID != pid || st.Restarts != 0 {
				t.Errorf("state %+v: the service was restarted for a rotation", st)
			}
		})
	}
}
