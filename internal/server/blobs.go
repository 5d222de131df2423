package server

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/blob"
	"github.com/drover-dev/drover/internal/pki"
)

func (s *Server) handleGetBlob(w http.ResponseWriter, r *http.Request) {
	s.guard(func(w http.ResponseWriter, r *http.Request, p peer) error {
		digest := r.PathValue("digest")
		if !api.ValidDigest(digest) {
			return api.Errorf(api.EINVALID, fmt.Sprintf("invalid digest %q", digest))
		}
		if p.role != pki.RoleAdmin {
			// A device fetches only what its own desired state refers to.
			res, err := s.res.get(r.Context(), p.name)
			if err != nil {
				return err
			}
			if !res.allowed[digest] {
				return api.Errorf(api.EFORBIDDEN, fmt.Sprintf("blob %s is not part of device %s's desired state", digest, p.name))
			}
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Vary", "Accept-Encoding")
		if s.xfer != nil && acceptsZstd(r) {
			// The cached zstd form (transfer.go), when it is smaller.
			zf, err := s.xfer.compressed(r.Context(), digest)
			if err != nil {
				return err
			}
			if zf != nil {
				defer zf.Close()
				w.Header().Set("Content-Encoding", "zstd")
				w.Header().Set("ETag", `"`+digest+`.zst"`)
				http.ServeContent(w, r, "", time.Time{}, zf)
				return nil
			}
		}
		f, err := s.blobs.Open(r.Context(), digest)
		if err != nil {
			return err
		}
		defer f.Close()
		// Blobs never change: Range requests resume a download.
		w.Header().Set("ETag", `"`+digest+`"`)
		http.ServeContent(w, r, "", time.Time{}, f)
		return nil
	}, mayReadBlobs)(w, r)
}

// mayReadBlobs lets devices and operators call the blob readers; which
// blobs a device may read is checked per blob.
func mayReadBlobs(p peer, r *http.Request) error {
	if p.role != pki.RoleAdmin && p.role != pki.RoleDevice {
		return api.Errorf(api.EFORBIDDEN, fmt.Sprintf("%s %q may not read blobs", p.role, p.name))
	}
	return nil
}

func (s *Server) handleMissing(w http.ResponseWriter, r *http.Request, p peer) error {
	var req api.MissingRequest
	if err := readJSON(r, 64<<20, &req); err != nil {
		return err
	}
	out := api.MissingResponse{Missing: []string{}}
	for _, d := range req.Digests {
		if !api.ValidDigest(d) {
			return api.Errorf(api.EINVALID, fmt.Sprintf("invalid digest %q", d))
		}
		_, err := s.blobs.Stat(r.Context(), d)
		if errors.Is(err, blob.ErrNotFound) {
			out.Missing = append(out.Missing, d)
		} else if err != nil {
			return err
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) handlePutBlob(w http.ResponseWriter, r *http.Request, p peer) error {
	digest := r.PathValue("digest")
	if !api.ValidDigest(digest) {
		return api.Errorf(api.EINVALID, fmt.Sprintf("invalid digest %q", digest))
	}
	body := http.MaxBytesReader(w, r.Body, s.cfg.MaxBlob)
	if err := s.blobs.Put(r.Context(), digest, body); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return api.Errorf(api.EINVALID, fmt.Sprintf("blob over %d bytes", s.cfg.MaxBlob))
		}
		return fmt.Errorf("store blob %s: %w", digest, err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
