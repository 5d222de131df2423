package server

import (
	"errors"
	"net/http"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/pki"
)

// maxCSR bounds a certificate request.
const maxCSR = 64 << 10

// certRoutes let a device renew its own certificate (server
// --issuer-cert/--issuer-key).
func (s *Server) certRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/devices/{id}/certificate", s.device(s.handleRenew))
}

// revoked refuses a certificate on the revocation list (server --crl),
// at every request, so a connection opened before the revocation is
// refused at its next request too.
func (s *Server) revoked(r *http.Request) error {
	if s.cfg.CRL == nil || r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
		return nil
	}
	cert := r.TLS.VerifiedChains[0][0]
	if s.cfg.CRL.Revoked(cert) {
		return api.Errorf(api.EUNAUTHORIZED, "certificate "+cert.Subject.CommonName+" is revoked")
	}
	return nil
}

func (s *Server) handleRenew(w http.ResponseWriter, r *http.Request, _ peer) error {
	if s.cfg.Issuer == nil {
		return api.Errorf(api.ENOTFOUND, "this server renews no certificates (it runs without --issuer-cert)")
	}
	var req api.RenewRequest
	if err := readJSON(r, maxCSR, &req); err != nil {
		return err
	}
	cert, err := s.cfg.Issuer.Renew([]byte(req.CSR), r.TLS.VerifiedChains[0][0], s.now())
	if errors.Is(err, pki.ErrRenew) {
		return api.Errorf(api.EINVALID, err.Error())
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.RenewResponse{Certificate: string(cert)})
	return nil
}
