package engine

import "net/http"

// Route is one HTTP endpoint a package serves: the scope a caller needs
// (empty: public) and whether it reads or changes personal data (then
// every call is audited). Packages list their routes; the server that
// mounts them adds authentication with Mount.
type Route struct {
	Method   string
	Path     string
	Scope    string
	Personal bool
	Handler  http.Handler
}

// Pattern is the net/http ServeMux pattern of r, e.g.
// "GET /v1/audiences/{id}".
func (r Route) Pattern() string { return r.Method + " " + r.Path }

// Mounter is what Mount registers on: *http.ServeMux and *Server.
type Mounter interface {
	Handle(pattern string, h http.Handler)
}

// Mount registers routes on m, each behind auth with its scope
// (RequirePersonal for personal routes). With a nil auth the routes are
// served without authentication.
func Mount(m Mounter, routes []Route, auth *Auth) {
	for _, r := range routes {
		h := r.Handler
		switch {
		case auth == nil || r.Scope == "":
		case r.Personal:
			h = auth.RequirePersonal(r.Scope, h)
		default:
			h = auth.Require(r.Scope, h)
		}
		m.Handle(r.Pattern(), h)
	}
}
