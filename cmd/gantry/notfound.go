package main

import (
	"net/http"

	"github.com/gantry/gantry/internal/apierr"
)

// jsonErrors serves mux, answering a path that no pattern of mux serves in
// API.md's error shape instead of net/http's text/plain "404 page not
// found" (apierr.Unrouted, which the workers use too): 404
// RESOURCE_DOES_NOT_EXIST, or 405 with Allow when the path is served for
// other methods.
func jsonErrors(mux *http.ServeMux) http.Handler { return apierr.Unrouted(mux) }
