package console_test

import (
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/gantry/gantry/console"
)

// TestBundleIsFresh fails when console/dist was not rebuilt after a change
// to the app's sources: `make console` records the SHA-256 of the sources
// it built from, over the same files in the same order as the Makefile.
func TestBundleIsFresh(t *testing.T) {
	files := []string{"web/index.html", "web/package.json", "web/package-lock.json", "web/tsconfig.json", "web/vite.config.ts"}
	var src []string
	err := filepath.WalkDir("web/src", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			src = append(src, filepath.ToSlash(p))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(src) // byte order, as LC_ALL=C sort
	h := sha256.New()
	for _, f := range append(files, src...) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		h.Write(b)
	}
	want, err := os.ReadFile("dist/.sources")
	if err != nil {
		t.Fatalf("dist/.sources: %v; run make console", err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != strings.TrimSpace(string(want)) {
		t.Fatalf("console/dist was built from other sources (%s, sources now %s): run make console and commit console/dist", strings.TrimSpace(string(want)), got)
	}
}

func TestServes(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", console.Index)
	mux.Handle("GET /assets/{file}", console.Asset(http.NotFoundHandler()))
	get := func(path string) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
		return w
	}

	w := get("/")
	if w.Code != 200 || !strings.HasPrefix(w.Header().Get("Content-Type"), "text/html") {
		t.Fatalf("GET /: %d %q", w.Code, w.Header().Get("Content-Type"))
	}
	// The page may load and call its own origin only.
	csp := w.Header().Get("Content-Security-Policy")
	for _, d := range []string{"default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, d) {
			t.Errorf("Content-Security-Policy %q lacks %q", csp, d)
		}
	}
	if w.Header().Get("Cache-Control") != "no-cache" {
		t.Errorf("index Cache-Control = %q", w.Header().Get("Cache-Control"))
	}

	// Every asset index.html names is in the bundle, and nothing it
	// names lives on another host.
	refs := regexp.MustCompile(`(?:src|href)="([^"]+)"`).FindAllStringSubmatch(w.Body.String(), -1)
	if len(refs) < 2 {
		t.Fatalf("index.html names %d files: %s", len(refs), w.Body)
	}
	for _, r := range refs {
		ref := r[1]
		if ref == "data:," || strings.HasPrefix(ref, "#") {
			continue
		}
		if !strings.HasPrefix(ref, "/assets/") {
			t.Errorf("index.html names %q, outside /assets/", ref)
			continue
		}
		a := get(ref)
		if a.Code != 200 || a.Body.Len() == 0 {
			t.Errorf("GET %s: %d, %d bytes", ref, a.Code, a.Body.Len())
		}
		if !strings.Contains(a.Header().Get("Cache-Control"), "immutable") {
			t.Errorf("GET %s: Cache-Control %q", ref, a.Header().Get("Cache-Control"))
		}
	}
	for _, p := range []string{"/assets/nope.js", "/assets/..%2findex.html", "/assets/.sources"} {
		if c := get(p).Code; c != 404 {
			t.Errorf("GET %s: %d, want 404", p, c)
		}
	}
}
