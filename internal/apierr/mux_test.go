package apierr

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/gantry/gantry/api"
)

func TestUnrouted(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("POST /v1/stats", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "{}") })
	h := Unrouted(mux)
	for _, c := range []struct {
		method, path string
		status       int
		code, allow  string
	}{
		{"GET", "/healthz", 200, "", ""},
		{"GET", "/.well-known/databricks-config", 404, api.ErrResourceDoesNotExist, ""},
		{"DELETE", "/no/such/path", 404, api.ErrResourceDoesNotExist, ""},
		{"POST", "/healthz", 405, api.ErrMalformedRequest, "GET, HEAD"},
		{"GET", "/v1/stats", 405, api.ErrMalformedRequest, "POST"},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(c.method, c.path, nil))
		if rec.Code != c.status || rec.Header().Get("Allow") != c.allow {
			t.Errorf("%s %s: %d Allow %q, want %d %q", c.method, c.path, rec.Code, rec.Header().Get("Allow"), c.status, c.allow)
		}
		if c.status == 200 {
			continue
		}
		var e api.Error
		if rec.Header().Get("Content-Type") != "application/json" || json.Unmarshal(rec.Body.Bytes(), &e) != nil || e.Code != c.code || e.Message == "" {
			t.Errorf("%s %s: %q %s, want API.md's error with %s", c.method, c.path, rec.Header().Get("Content-Type"), rec.Body, c.code)
		}
	}
}
