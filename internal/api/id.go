package api

import "regexp"

// idRe is what a device id, and every certificate name, may look like:
// the name becomes a file name, a URL path element and a column of
// `device ls`, so no slashes, no leading dot, no spaces or control
// characters, at most 63 characters.
var idRe = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$`)

// ValidDeviceID reports whether id is a valid device id. It is the one
// rule for device ids and certificate names (server, device and admin):
// every route, the state set, certificate issue and authentication use it.
func ValidDeviceID(id string) bool { return idRe.MatchString(id) }
