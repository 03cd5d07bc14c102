package store

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/gantry/gantry/api"
)

func TestPutGetListDeleteSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"b", "a"} {
		e := &Endpoint{Name: n, ID: "id-" + n, UpdateState: api.ConfigNotUpdating,
			Config: api.EndpointConfig{ConfigVersion: 1, ServedEntities: []api.ServedEntity{{Name: "m-1", EntityName: "m", EntityVersion: "1"}}}}
		if err := s.Put(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.Get("a")
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != "id-a" || got.Config.ServedEntities[0].EntityName != "m" {
		t.Errorf("Get(a) = %+v", got)
	}
	all, err := s.List()
	if err != nil || len(all) != 2 || all[0].Name != "a" || all[1].Name != "b" {
		t.Fatalf("List = %v, %v; want a, b", all, err)
	}
	if err := s.Delete("a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get("a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after Delete: err = %v, want ErrNotFound", err)
	}
	if err := s.Delete("a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Delete: err = %v, want ErrNotFound", err)
	}
}

func TestMonitorsSurviveReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"b", "a"} {
		m := &api.Monitor{Name: n, Endpoint: "fraud", Table: "ml_logs.fraud_payload", Granularity: "1h",
			Columns: []api.MonitorColumn{{Name: "x", Kind: "numeric"}}, Thresholds: map[string]float64{"psi": 0.2}}
		if err := s.PutMonitor(m); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	if s, err = Open(path); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	all, err := s.ListMonitors()
	if err != nil || len(all) != 2 || all[0].Name != "a" || all[1].Thresholds["psi"] != 0.2 {
		t.Fatalf("ListMonitors = %+v, %v", all, err)
	}
	if err := s.DeleteMonitor("a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetMonitor("a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetMonitor after delete: %v, want ErrNotFound", err)
	}
	if err := s.DeleteMonitor("a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second DeleteMonitor: %v, want ErrNotFound", err)
	}
	if m, err := s.GetMonitor("b"); err != nil || m.Columns[0].Name != "x" {
		t.Errorf("GetMonitor(b) = %+v, %v", m, err)
	}
	// Endpoints and monitors are apart: a monitor is no endpoint.
	if _, err := s.Get("b"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(b) = %v, want ErrNotFound", err)
	}
}
