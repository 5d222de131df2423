package server

import "net/http"

// paramRoutes registers fleet and device parameter calls (issue 3).
func (s *Server) paramRoutes(mux *http.ServeMux) {}
