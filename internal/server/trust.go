package server

import (
	"net/http"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/pki"
	"github.com/drover-dev/drover/internal/trustserver"
)

// maxTrustUpload bounds PUT /v1/trust/targets: every bin of a big
// repository (about 2 MB at 10,000 builds), base64 in JSON.
const maxTrustUpload = 64 << 20

// trustRoutes serve the TUF metadata (drover trust) to agents and take
// the bins publishers sign. Without --trust-dir they answer not found.
func (s *Server) trustRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/trust/{name}", s.guard(s.handleTrustFile, func(p peer, r *http.Request) error {
		if p.role != pki.RoleAdmin && p.role != pki.RoleDevice {
			return api.Errorf(api.EFORBIDDEN, string(p.role)+" "+p.name+" may not read trust metadata")
		}
		return nil
	}))
	mux.HandleFunc("PUT /v1/trust/targets", s.admin(s.handleTrustUpload))
}

func (s *Server) trustRepo() (*trustserver.Repository, error) {
	if s.cfg.Trust == nil {
		return nil, api.Errorf(api.ENOTFOUND, "this server serves no trust metadata (it runs without --trust-dir)")
	}
	return s.cfg.Trust, nil
}

func (s *Server) handleTrustFile(w http.ResponseWriter, r *http.Request, _ peer) error {
	repo, err := s.trustRepo()
	if err != nil {
		return err
	}
	data, err := repo.File(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(data)
	return nil
}

func (s *Server) handleTrustUpload(w http.ResponseWriter, r *http.Request, _ peer) error {
	repo, err := s.trustRepo()
	if err != nil {
		return err
	}
	var up api.TrustUpload
	if err := readJSON(r, maxTrustUpload, &up); err != nil {
		return err
	}
	if err := repo.Upload(r.Context(), up.Roles); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
