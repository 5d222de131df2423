package api

import (
	"errors"
	"net/http"
)

// Error codes of the wire API (WTF Dial's scheme).
const (
	EINVALID      = "invalid"
	ENOTFOUND     = "not_found"
	ECONFLICT     = "conflict"
	EFORBIDDEN    = "forbidden"
	EUNAUTHORIZED = "unauthorized"
	EINTERNAL     = "internal"
	// ETOOMANY: a device is over one of its quotas (events, reports);
	// RetryAfter says when to try again.
	ETOOMANY = "too_many_requests"
	// EUNAVAILABLE: the server cannot serve the call now (its database is
	// unreachable or too busy to take a lock in time); RetryAfter says
	// when to try again. Nothing was changed.
	EUNAVAILABLE = "unavailable"
)

// Error is the one error type crossing the wire. Message is shown to users
// as is; an internal error never carries its details to the client.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// Missing lists blob digests the server lacks, for a push that
	// forgot some.
	Missing []string `json:"missing,omitempty"`
	// RetryAfter is, for ETOOMANY and EUNAVAILABLE, how many seconds to wait before trying
	// again (also sent as the Retry-After header).
	RetryAfter int `json:"retry_after,omitempty"`
	// Accepted is, for ETOOMANY on a batch of events, how many of the
	// batch's first events were stored before the quota was reached.
	Accepted int `json:"accepted,omitempty"`
}

func (e *Error) Error() string { return e.Message }

// Errorf returns an *Error with the code and message.
func Errorf(code, msg string) *Error { return &Error{Code: code, Message: msg} }

// statusOf maps each code to its HTTP status, in one table.
var statusOf = map[string]int{
	EINVALID:      http.StatusBadRequest,
	ENOTFOUND:     http.StatusNotFound,
	ECONFLICT:     http.StatusConflict,
	EFORBIDDEN:    http.StatusForbidden,
	EUNAUTHORIZED: http.StatusUnauthorized,
	EINTERNAL:     http.StatusInternalServerError,
	ETOOMANY:      http.StatusTooManyRequests,
	EUNAVAILABLE:  http.StatusServiceUnavailable,
}

// HTTPStatus returns the HTTP status for a code (500 if unknown).
func HTTPStatus(code string) int {
	if s, ok := statusOf[code]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// CodeForStatus maps an HTTP status back to a code, for answers that carry
// no JSON error body.
func CodeForStatus(status int) string {
	for c, s := range statusOf {
		if s == status {
			return c
		}
	}
	return EINTERNAL
}

// ErrorCode returns the code of err if it is (or wraps) an *Error,
// else EINTERNAL.
func ErrorCode(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}
