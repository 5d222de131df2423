package server

import "github.com/drover-dev/drover/internal/api"

// stagedDocuments returns the documents a running rollout gives device id
// in place of the stored documents with the same Key (or in addition, when
// no stored document has that key), and the rollout's name. The resolver
// calls it for every device resolution. This stub (no rollouts) is
// replaced by the rollout engine.
func (s *Server) stagedDocuments(id string) (docs []api.Document, rollout string) { return nil, "" }

// rolloutHolds reports whether a running rollout holds one of these
// document keys, and which: state set and state rm of a held document are
// refused. This stub (no rollouts) is replaced by the rollout engine.
func (s *Server) rolloutHolds(keys []string) (rollout string, held bool) { return "", false }
