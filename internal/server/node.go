package server

import "net/http"

// nodeRoutes registers health, termination and keepalive calls (issue 4).
func (s *Server) nodeRoutes(mux *http.ServeMux) {}
