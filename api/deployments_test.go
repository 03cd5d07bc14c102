package api

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"
	"time"
)

func TestDeploymentsList(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Path != "/api/2.0/gantry/deployments" {
			t.Errorf("request = %s %s", r.Method, r.URL.Path)
		}
		if got := r.URL.Query().Get("index"); got != "7" {
			t.Errorf("index = %q, want 7", got)
		}
		if got := r.URL.Query().Get("wait"); got != "2s" {
			t.Errorf("wait = %q, want 2s", got)
		}
		w.Header().Set("X-Gantry-Index", "8")
		io.WriteString(w, `{"deployments": [{"deployment": "ep-v1-ab12", "min_replicas": 0, "max_replicas": 4, "current": 2, "ready": 1, "starting": 1}]}`)
	}))
	defer srv.Close()
	c, err := NewClient(&Config{Address: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	got, meta, err := c.Deployments().List(&QueryOptions{WaitIndex: 7, WaitTime: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	want := []DeploymentTarget{{Deployment: "ep-v1-ab12", MinReplicas: 0, MaxReplicas: 4, Current: 2, Ready: 1, Starting: 1}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("List = %+v, want %+v", got, want)
	}
	if meta.LastIndex != 8 {
		t.Errorf("LastIndex = %d, want 8", meta.LastIndex)
	}
}

func TestDeploymentsScale(t *testing.T) {
	var gotPath string
	var gotBody map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotPath = r.URL.EscapedPath()
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("request = %s with Content-Type %q", r.Method, r.Header.Get("Content-Type"))
		}
		gotBody = nil
		if err := json.NewDecoder(r.Body).Decode(&gotBody); err != nil {
			t.Error(err)
		}
		if r.URL.Path == "/api/2.0/gantry/deployments/gone/scale" {
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "deployment \"gone\" does not exist"}`)
			return
		}
		io.WriteString(w, `{}`)
	}))
	defer srv.Close()
	c, _ := NewClient(&Config{Address: srv.URL})

	// Zero is a count like any other: it must be on the wire.
	if _, err := c.Deployments().Scale("a/b", 0, nil); err != nil {
		t.Fatal(err)
	}
	if gotPath != "/api/2.0/gantry/deployments/a%2Fb/scale" {
		t.Errorf("path = %s, want the id escaped", gotPath)
	}
	if !reflect.DeepEqual(gotBody, map[string]any{"replicas": 0.0}) {
		t.Errorf("body = %v, want {\"replicas\": 0}", gotBody)
	}

	_, err := c.Deployments().Scale("gone", 3, nil)
	var ue *UnexpectedResponseError
	if !errors.As(err, &ue) || ue.StatusCode() != http.StatusNotFound {
		t.Fatalf("err = %v, want an UnexpectedResponseError with status 404", err)
	}
	var ae *Error
	if !errors.As(err, &ae) || ae.Code != ErrResourceDoesNotExist {
		t.Errorf("wrapped API error = %v, want RESOURCE_DOES_NOT_EXIST", ae)
	}
}

func TestLoadReportWireFormat(t *testing.T) {
	rep := LoadReport{Activator: "a1", PeriodMS: 1000, Samples: []LoadSample{{Deployment: "d", Concurrency: 1.5}}}
	b, _ := json.Marshal(rep)
	if want := `{"activator":"a1","period_ms":1000,"samples":[{"deployment":"d","concurrency":1.5}]}`; string(b) != want {
		t.Errorf("LoadReport = %s, want %s", b, want)
	}
	b, _ = json.Marshal(PokeRequest{Deployment: "d"})
	if want := `{"deployment":"d"}`; string(b) != want {
		t.Errorf("PokeRequest = %s, want %s", b, want)
	}
}
