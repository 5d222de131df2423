package server

import "net/http"

// eventRoutes registers the event stream, metrics and hook calls (issue 5).
func (s *Server) eventRoutes(mux *http.ServeMux) {}
