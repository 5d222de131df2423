package install

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/atomicfile"
)

// appState is one installed app as state.json records it.
type appState struct {
	Name     string   `json:"name"` // group:name
	Version  string   `json:"version"`
	Digest   string   `json:"digest"` // manifest digest
	Tags     []string `json:"tags"`
	Instance string   `json:"instance,omitempty"`
	Install  string   `json:"install"`
	// Prefix is the install location: the version folder in prefix
	// mode, the root in root mode.
	Prefix string `json:"prefix"`
	// Have selected the overlays; the same manifest and Have give the
	// same tree again (for a check, a rollback, a removal).
	Have   []string          `json:"have,omitempty"`
	Params map[string]string `json:"params,omitempty"`
	// Paths are the files and symlinks the app owns (root mode),
	// relative slash paths; Dirs the directories it created.
	Paths []string `json:"paths,omitempty"`
	Dirs  []string `json:"dirs,omitempty"`
	// Templates are the app's rendered templates, as tree entries whose
	// content is in the engine's rendered store.
	Templates []api.File `json:"templates,omitempty"`
	// Previous is the build kept for a rollback without download.
	Previous *prevState `json:"previous,omitempty"`
}

// prevState is the build an app had before its last upgrade.
type prevState struct {
	Version string   `json:"version"`
	Digest  string   `json:"digest"`
	Prefix  string   `json:"prefix,omitempty"`
	Have    []string `json:"have,omitempty"`
	// Templates are the previous build's rendered templates.
	Templates []api.File `json:"templates,omitempty"`
}

func (a *appState) key() string { return a.Name + "\x00" + a.Instance }

// label names the app in messages and log file names.
func (a *appState) label() string {
	if a.Instance == "" {
		return a.Name
	}
	return a.Name + "@" + a.Instance
}

func (a *appState) clone() *appState {
	if a == nil {
		return nil
	}
	b := *a
	b.Tags = slices.Clone(a.Tags)
	b.Have = slices.Clone(a.Have)
	b.Paths = slices.Clone(a.Paths)
	b.Dirs = slices.Clone(a.Dirs)
	b.Templates = slices.Clone(a.Templates)
	if a.Params != nil {
		b.Params = make(map[string]string, len(a.Params))
		for k, v := range a.Params {
			b.Params[k] = v
		}
	}
	if a.Previous != nil {
		p := *a.Previous
		p.Have = slices.Clone(a.Previous.Have)
		p.Templates = slices.Clone(a.Previous.Templates)
		b.Previous = &p
	}
	return &b
}

// stateFile is StateDir/state.json.
type stateFile struct {
	Format int         `json:"format"`
	Apps   []*appState `json:"apps"`
}

const stateFormat = 1

func loadState(path string) (*stateFile, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &stateFile{Format: stateFormat}, nil
	}
	if err != nil {
		return nil, err
	}
	var s stateFile
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("state %s: %w", path, err)
	}
	if s.Format != stateFormat {
		return nil, fmt.Errorf("state %s: format %d, want %d", path, s.Format, stateFormat)
	}
	s.sort()
	return &s, nil
}

func (s *stateFile) find(name, instance string) *appState {
	for _, a := range s.Apps {
		if a.Name == name && a.Instance == instance {
			return a
		}
	}
	return nil
}

// put replaces the app of the same name and instance, or adds it.
func (s *stateFile) put(a *appState) {
	for i, x := range s.Apps {
		if x.key() == a.key() {
			s.Apps[i] = a
			return
		}
	}
	s.Apps = append(s.Apps, a)
	s.sort()
}

func (s *stateFile) drop(name, instance string) {
	s.Apps = slices.DeleteFunc(s.Apps, func(a *appState) bool { return a.Name == name && a.Instance == instance })
}

func (s *stateFile) sort() {
	slices.SortFunc(s.Apps, func(a, b *appState) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return strings.Compare(a.Instance, b.Instance)
	})
}

func (s *stateFile) clone() *stateFile {
	c := &stateFile{Format: s.Format}
	for _, a := range s.Apps {
		c.Apps = append(c.Apps, a.clone())
	}
	return c
}

// write stores the state atomically (temp file, fsync, rename, fsync
// the directory).
func (s *stateFile) write(dir string) error {
	s.sort()
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(dir, "state.json"), b, 0o600)
}
