package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/blob"
	"github.com/drover-dev/drover/internal/pki"
	"github.com/drover-dev/drover/internal/store"
)

// peer is who is calling, from the verified client certificate.
type peer struct {
	name string // certificate CN: device id or admin name
	role pki.Role
}

// peerOf returns the caller. The TLS layer already verified the chain
// against the fleet CA when one was given (VerifyClientCertIfGiven); a
// request without one has no peer and is refused. Here we only read the
// name and role. A request without a verified certificate (a plain-HTTP
// test server) has no peer.
func peerOf(r *http.Request) (peer, error) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return peer{}, api.Errorf(api.EUNAUTHORIZED, "a client certificate of the fleet CA is required")
	}
	cert := r.TLS.VerifiedChains[0][0]
	role, err := pki.RoleOf(cert)
	if err != nil {
		return peer{}, api.Errorf(api.EFORBIDDEN, fmt.Sprintf("certificate %q: %v", cert.Subject.CommonName, err))
	}
	// The name is a device id or an admin name: the one rule for ids holds
	// for it too, whoever signed the certificate, so a name with a
	// newline or a slash never reaches the store or a listing.
	if cn := cert.Subject.CommonName; !api.ValidDeviceID(cn) {
		return peer{}, api.Errorf(api.EFORBIDDEN, fmt.Sprintf("certificate name %.64q is not a valid name: want 1 to 63 letters, digits, '.', '_' or '-'", cn))
	}
	return peer{name: cert.Subject.CommonName, role: role}, nil
}

func peerName(r *http.Request) string {
	p, err := peerOf(r)
	if err != nil {
		return ""
	}
	return string(p.role) + ":" + p.name
}

type handler func(w http.ResponseWriter, r *http.Request, p peer) error

// admin allows operator certificates only.
func (s *Server) admin(h handler) http.HandlerFunc {
	return s.guard(h, func(p peer, r *http.Request) error {
		if p.role != pki.RoleAdmin {
			return api.Errorf(api.EFORBIDDEN, fmt.Sprintf("%s %q may not use operator calls: an admin certificate is needed", p.role, p.name))
		}
		return nil
	})
}

// device allows only the device named in the path, with its own
// certificate: a device reads only its own state and writes only its own
// reports.
func (s *Server) device(h handler) http.HandlerFunc {
	return s.guard(h, func(p peer, r *http.Request) error {
		if p.role != pki.RoleDevice || p.name != r.PathValue("id") {
			return api.Errorf(api.EFORBIDDEN, fmt.Sprintf("%s %q may not act for device %q", p.role, p.name, r.PathValue("id")))
		}
		return nil
	})
}

// deviceOrAdmin allows the device itself or an operator.
func (s *Server) deviceOrAdmin(h handler) http.HandlerFunc {
	return s.guard(h, func(p peer, r *http.Request) error {
		if p.role == pki.RoleAdmin || (p.role == pki.RoleDevice && p.name == r.PathValue("id")) {
			return nil
		}
		return api.Errorf(api.EFORBIDDEN, fmt.Sprintf("%s %q may not read device %q", p.role, p.name, r.PathValue("id")))
	})
}

func (s *Server) guard(h handler, allow func(peer, *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, err := peerOf(r)
		if err == nil {
			err = s.revoked(r) // certs.go
		}
		if err == nil {
			err = allow(p, r)
		}
		if err == nil {
			err = checkPathID(r)
		}
		if err == nil {
			err = h(w, r, p)
		}
		if err != nil {
			s.writeError(w, r, err)
		}
	}
}

// checkPathID refuses a route's {id} that is not a valid device id, on
// every route that has one.
func checkPathID(r *http.Request) error {
	if id := r.PathValue("id"); id != "" && !api.ValidDeviceID(id) {
		return api.Errorf(api.EINVALID, fmt.Sprintf("invalid device id %.64q", id))
	}
	return nil
}

// writeError answers with the one API error type. Anything that is not
// already an *api.Error or a known sentinel is logged and shown to the
// user only as "internal error".
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var e *api.Error
	switch {
	case errors.As(err, &e):
	case errors.Is(err, store.ErrNotFound), errors.Is(err, blob.ErrNotFound):
		e = api.Errorf(api.ENOTFOUND, err.Error())
	case errors.Is(err, store.ErrConflict):
		e = api.Errorf(api.ECONFLICT, err.Error())
	case errors.Is(err, blob.ErrDigestMismatch), errors.Is(err, blob.ErrInvalidDigest):
		e = api.Errorf(api.EINVALID, err.Error())
	case errors.Is(err, r.Context().Err()):
		return // the caller went away
	default:
		s.log.Error("internal error", "method", r.Method, "path", r.URL.Path, "err", err)
		e = api.Errorf(api.EINTERNAL, "internal error")
	}
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	writeJSON(w, api.HTTPStatus(e.Code), e)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// readJSON decodes a bounded JSON body into v.
func readJSON(r *http.Request, limit int64, v any) error {
	data, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return api.Errorf(api.EINVALID, fmt.Sprintf("read request: %v", err))
	}
	if int64(len(data)) > limit {
		return api.Errorf(api.EINVALID, fmt.Sprintf("request body over %d bytes", limit))
	}
	if err := json.Unmarshal(data, v); err != nil {
		return api.Errorf(api.EINVALID, fmt.Sprintf("malformed JSON: %v", err))
	}
	return nil
}
