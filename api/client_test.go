package api

import (
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
)

func TestUnexpectedResponseCarriesAPIError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/2.0/serving-endpoints/a%2Fb" && r.URL.RawPath != "/api/2.0/serving-endpoints/a%2Fb" {
			t.Errorf("path not escaped: %s", r.URL.RawPath)
		}
		if r.Header.Get("Authorization") != "Bearer tok" {
			t.Errorf("Authorization = %q", r.Header.Get("Authorization"))
		}
		w.WriteHeader(404)
		w.Write([]byte(`{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "endpoint \"a/b\" does not exist"}`))
	}))
	defer srv.Close()
	c, err := NewClient(&Config{Address: srv.URL, Token: "tok"})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = c.Endpoints().Get("a/b", nil)
	var ue *UnexpectedResponseError
	if !errors.As(err, &ue) || ue.StatusCode() != 404 {
		t.Fatalf("err = %v, want an UnexpectedResponseError with status 404", err)
	}
	var ae *Error
	if !errors.As(err, &ae) || ae.Code != ErrResourceDoesNotExist {
		t.Errorf("wrapped API error = %v", ae)
	}
}

func TestNewClientAddress(t *testing.T) {
	t.Setenv("GANTRY_ADDR", "http://example.test:9999/")
	c, err := NewClient(nil)
	if err != nil || c.Address() != "http://example.test:9999" {
		t.Errorf("from env: %v %v", c, err)
	}
	c, err = NewClient(&Config{Address: "127.0.0.1:1"})
	if err != nil || c.Address() != "http://127.0.0.1:1" {
		t.Errorf("bare host:port: %v %v", c, err)
	}
	if _, err := NewClient(&Config{Address: "http://"}); err == nil {
		t.Error("empty host accepted")
	}
}

func TestHTTPStatus(t *testing.T) {
	for code, want := range map[string]int{
		ErrInvalidParameterValue: 400, ErrMalformedRequest: 400, ErrUnauthenticated: 401,
		ErrPermissionDenied: 403, ErrResourceDoesNotExist: 404, ErrResourceAlreadyExists: 409,
		ErrResourceConflict: 409, ErrPayloadTooLarge: 413, ErrRequestLimitExceeded: 429,
		ErrTemporarilyUnavailable: 503, ErrDeadlineExceeded: 504, ErrInternal: 500,
	} {
		if got := HTTPStatus(code); got != want {
			t.Errorf("HTTPStatus(%s) = %d, want %d", code, got, want)
		}
	}
}

// TestDefaultConfigToken: GANTRY_TOKEN wins; without it the admin token
// gantry dev wrote to its data dir is used, so that a client next to
// `make run` needs no setup.
func TestDefaultConfigToken(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("GANTRY_DATA_DIR", dir)
	t.Setenv("GANTRY_TOKEN", "")
	if c := DefaultConfig(); c.Token != "" {
		t.Errorf("no env, no file: token %q", c.Token)
	}
	if err := os.WriteFile(filepath.Join(dir, AdminTokenFile), []byte("dapifromfile\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if c := DefaultConfig(); c.Token != "dapifromfile" {
		t.Errorf("from the data dir's admin-token: %q", c.Token)
	}
	t.Setenv("GANTRY_TOKEN", "dapifromenv")
	if c := DefaultConfig(); c.Token != "dapifromenv" {
		t.Errorf("GANTRY_TOKEN set: %q", c.Token)
	}
}

// TestCACert: a client given a CA file trusts it (and only it); a file
// without a certificate is an error at NewClient, not at the first call.
func TestCACert(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"endpoints": []}`))
	}))
	defer srv.Close()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644)
	c, err := NewClient(&Config{Address: srv.URL, CACert: ca})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Endpoints().List(nil); err != nil {
		t.Errorf("with the CA: %v", err)
	}
	c, _ = NewClient(&Config{Address: srv.URL})
	if _, _, err := c.Endpoints().List(nil); err == nil {
		t.Error("without the CA the server was trusted")
	}
	bad := filepath.Join(dir, "bad.pem")
	os.WriteFile(bad, []byte("not a certificate"), 0o644)
	if _, err := NewClient(&Config{Address: srv.URL, CACert: bad}); err == nil {
		t.Error("a CA file without a certificate was accepted")
	}
}
