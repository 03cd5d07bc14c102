package apierr

import (
	"net/http"
	"strings"

	"github.com/gantry/gantry/api"
)

// Unrouted serves mux, answering a request that no pattern of mux serves
// in API.md's error shape instead of net/http's text/plain "404 page not
// found": 404 RESOURCE_DOES_NOT_EXIST, or 405 with Allow when the path is
// served for other methods (API.md has no code for a wrong method;
// MALFORMED_REQUEST is the nearest, as the activator answers). Every
// component's net/http server uses it: the scheduler and gantry dev's
// control paths, the autoscaler, the logger and the workers.
func Unrouted(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := mux.Handler(r); pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		var allow []string
		for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
			if m == r.Method {
				continue
			}
			other := r.Clone(r.Context())
			other.Method = m
			if _, p := mux.Handler(other); p != "" {
				allow = append(allow, m)
			}
		}
		path := r.URL.Path
		if len(path) > 256 { // never echo much of the request
			path = path[:256] + "..."
		}
		status, e := http.StatusNotFound, api.Errorf(api.ErrResourceDoesNotExist, "no API at %s %q", r.Method, path)
		if len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			status, e = http.StatusMethodNotAllowed, api.Errorf(api.ErrMalformedRequest,
				"method %s is not allowed on %q; use %s", r.Method, path, strings.Join(allow, " or "))
		}
		WithStatus(status, e).Write(w)
	})
}
