// Package console serves Gantry's web console: a TypeScript app (web/)
// built by Vite into dist/, which is committed and embedded here, so that
// `go build` needs no npm and the binary works offline. The scheduler
// serves it at GET / and GET /assets/{file} without a token; the app then
// calls the API with the token its user signs in with.
package console

import (
	"embed"
	"io/fs"
	"net/http"
	"path"
	"strings"
)

//go:embed dist
var dist embed.FS

// Files is the built bundle: index.html and assets/.
var Files, _ = fs.Sub(dist, "dist")

// policy keeps the page to Gantry's own origin: scripts, styles, images
// and API calls from 'self' only (the bundle has no inline code), and no
// framing, so the console cannot be made to call or show another host.
const policy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; font-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

func secure(h http.Header) {
	h.Set("Content-Security-Policy", policy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
}

// Index serves index.html. It is revalidated on every load, so a new
// binary's bundle is picked up at once.
func Index(w http.ResponseWriter, r *http.Request) {
	b, err := fs.ReadFile(Files, "index.html")
	if err != nil {
		http.Error(w, "console not built", http.StatusInternalServerError)
		return
	}
	secure(w.Header())
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(b)
}

// Asset serves assets/{file}; notFound answers for a file the bundle does
// not have (the scheduler's JSON 404). Asset names carry a content hash,
// so they may be cached for good.
func Asset(notFound http.Handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("file")
		if name == "" || strings.Contains(name, "/") || strings.HasPrefix(name, ".") {
			notFound.ServeHTTP(w, r)
			return
		}
		f, err := Files.Open(path.Join("assets", name))
		if err != nil {
			notFound.ServeHTTP(w, r)
			return
		}
		f.Close()
		secure(w.Header())
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
		http.ServeFileFS(w, r, Files, path.Join("assets", name))
	}
}

// AssetNames lists the bundle's assets, for tests.
func AssetNames() []string {
	ents, _ := fs.ReadDir(Files, "assets")
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}
