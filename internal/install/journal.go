package install

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/drover-dev/drover/internal/atomicfile"
)

// Journal phases (docs/install.md). Each is written, fsynced, before the
// disk changes it announces.
const (
	// phaseStaging: new content is being written beside the old;
	// nothing the old version uses has changed. Recovery rolls back.
	phaseStaging = "staging"
	// phaseCommit: the switch is under way (prefix: `current`; root:
	// renames of staged files, removal of obsolete ones). Recovery
	// rolls back.
	phaseCommit = "commit"
	// phaseSwitched: the new files are in place; postinst and configure
	// run. Recovery rolls back: a build whose scripts did not finish is
	// never left installed.
	phaseSwitched = "switched"
	// phaseRollback: the step is being undone. Recovery finishes it.
	phaseRollback = "rollback"
	// phaseConfigured: postinst and configure succeeded; state.json,
	// postrm of the old and garbage collection follow. Recovery rolls
	// forward.
	phaseConfigured = "configured"
)

// Journal operations.
const (
	opApply  = "apply"
	opRemove = "remove"
)

// journal is StateDir/journal.json: one step in flight.
type journal struct {
	Op     string `json:"op"`
	Mode   string `json:"mode"`
	Phase  string `json:"phase"`
	Action string `json:"action"`
	// Package is the coordinate of the build being installed (or
	// removed); OldDigest and NewDigest the manifests involved.
	Package   string    `json:"package"`
	OldDigest string    `json:"old_digest,omitempty"`
	NewDigest string    `json:"new_digest,omitempty"`
	Old       *appState `json:"old,omitempty"`
	New       *appState `json:"new,omitempty"`

	// Prefix mode.
	PkgDir  string `json:"pkg_dir,omitempty"`
	Dest    string `json:"dest,omitempty"`    // the new version folder
	Partial string `json:"partial,omitempty"` // hidden staging folder
	Reuse   bool   `json:"reuse,omitempty"`   // Dest is the kept previous folder

	// Root mode.
	Entries      []rootEntry `json:"entries,omitempty"`
	Obsolete     []rootEntry `json:"obsolete,omitempty"`
	CreatedDirs  []string    `json:"created_dirs,omitempty"`  // absolute, parents first
	ObsoleteDirs []string    `json:"obsolete_dirs,omitempty"` // absolute, children first
	// DebsBefore is what dpkg had of the step's Debian packages before
	// it ran (debs.go): recovery puts them back when it rolls back.
	DebsBefore map[string]debState `json:"debs_before,omitempty"`
}

// rootEntry is one path a root-mode step changes.
type rootEntry struct {
	Path   string `json:"path"`             // relative slash path
	Target string `json:"target"`           // absolute, parents resolved inside the root
	Staged string `json:"staged,omitempty"` // the new content beside Target
	// OldDigest is the old version's content at the path ("" when the
	// old version did not own it or it is a symlink); Owned says the
	// old version owned the path; Adopted that an identical file
	// nobody owned was there.
	OldDigest string `json:"old_digest,omitempty"`
	Owned     bool   `json:"owned,omitempty"`
	Adopted   bool   `json:"adopted,omitempty"`
}

func (e *Engine) journalPath() string { return filepath.Join(e.cfg.StateDir, "journal.json") }

// writeJournal stores j atomically; when it returns, the phase is on
// disk.
func (e *Engine) writeJournal(j *journal) error {
	b, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(e.journalPath(), b, 0o600); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	return nil
}

// setPhase moves j to phase, durably.
func (e *Engine) setPhase(j *journal, phase string) error {
	j.Phase = phase
	return e.writeJournal(j)
}

func (e *Engine) readJournal() (*journal, error) {
	b, err := os.ReadFile(e.journalPath())
	if err != nil {
		return nil, err
	}
	var j journal
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, fmt.Errorf("journal %s: %w", e.journalPath(), err)
	}
	return &j, nil
}

func (e *Engine) deleteJournal() error {
	if err := os.Remove(e.journalPath()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return atomicfile.SyncDir(e.cfg.StateDir)
}
