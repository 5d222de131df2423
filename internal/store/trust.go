package store

import "context"

// TrustFile is one signed TUF metadata file (drover trust): a role
// ("root", "targets", "snapshot", "timestamp", "bins-3a"), its version and
// its bytes exactly as signed.
type TrustFile struct {
	Role    string
	Version int64
	Data    []byte
}

// Trust holds the TUF metadata the server serves to agents. The store
// keeps the rule that versions never go down, so two replicas (or two
// publishers) writing at once cannot take the repository back; checking
// signatures is the caller's job.
type Trust interface {
	// PutTrustFiles stores files in one transaction, all or none. Each
	// file's Version must be above the newest stored of its role, else
	// ErrConflict (the very same bytes at the newest version are a no-op).
	// Every version of role "root" is kept (agents walk the chain of
	// roots); of other roles only the newest. Empty roles, versions below
	// 1 and empty data are invalid.
	PutTrustFiles(ctx context.Context, files []TrustFile) error

	// TrustFile returns role's file at version, or its newest when version
	// is 0. ErrNotFound if there is none.
	TrustFile(ctx context.Context, role string, version int64) (TrustFile, error)
}
