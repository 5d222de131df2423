package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestDocsAreForUsers: users have no design document, so the docs never
// cite it (or issue numbers), and the older tools drover descends from
// are named once, in the README's lineage note, not as explanations.
func TestDocsAreForUsers(t *testing.T) {
	root := filepath.Join("..", "..")
	files, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, filepath.Join(root, "README.md"))
	internal := regexp.MustCompile(`DESIGN|\bissue \d+|\(issue\b`)
	older := regexp.MustCompile(`(?i)\b(copkg|jamesd|jpackages|jetpack|gtools)\b`)
	mentions := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(data), "\n") {
			if internal.MatchString(line) {
				t.Errorf("%s:%d cites an internal document: %s", f, i+1, line)
			}
			if older.MatchString(line) {
				if filepath.Base(f) != "README.md" {
					t.Errorf("%s:%d names an older tool (keep that to the README's lineage note): %s", f, i+1, line)
				}
				mentions++
			}
		}
	}
	if mentions == 0 {
		t.Error("the README has no lineage note naming the older tools")
	}
}
