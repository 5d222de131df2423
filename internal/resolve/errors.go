package resolve

import "fmt"

// ErrKind is the class of a resolution error. Each kind is itself an error,
// so callers branch with errors.Is(err, resolve.ErrNoFit) and the server maps
// kinds to wire error codes in one place.
type ErrKind string

// Error returns the kind's short description.
func (k ErrKind) Error() string { return string(k) }

// Kinds of resolution errors. They are constants so no caller can replace
// them.
const (
	// ErrUnknownPackage: no build of the package was ever pushed.
	ErrUnknownPackage ErrKind = "unknown package"
	// ErrNoVersion: no version of the package matches the constraint.
	ErrNoVersion ErrKind = "no version matches"
	// ErrNoFit: the newest matching version has no build whose tags all
	// fit the device; the message names the missing tags.
	ErrNoFit ErrKind = "no build fits"
	// ErrAmbiguous: two fitting builds of one version have the same number
	// of tags; the message names both tag sets.
	ErrAmbiguous ErrKind = "ambiguous builds"
	// ErrDependency: a dependency cycle, or dependents asking for versions
	// of one package that no single version satisfies.
	ErrDependency ErrKind = "dependency conflict"
	// ErrInvalid: the desired state itself is malformed (bad name,
	// constraint, tag, instance or params; an entry listed twice).
	ErrInvalid ErrKind = "invalid desired state"
)

// Error is every error Resolve and Validate return. Message is one line,
// safe to show to the operator as is, and starts with the package it is
// about.
type Error struct {
	Kind    ErrKind
	App     string // group:name of the package the error is about
	Message string
}

// Error returns the message.
func (e *Error) Error() string { return e.Message }

// Unwrap returns the kind, for errors.Is.
func (e *Error) Unwrap() error { return e.Kind }

func errorf(kind ErrKind, app, format string, args ...any) *Error {
	return &Error{Kind: kind, App: app, Message: fmt.Sprintf(format, args...)}
}
