package scheduler

import (
	"strings"
	"testing"
)

// A model version an endpoint serves cannot be deleted; once the endpoint
// is gone it can, and then it is gone.
func TestDeleteModelVersion(t *testing.T) {
	h := newHarness(t, t.TempDir())
	h.upload(t, "m")
	if code, e := h.call(t, "POST", "/api/2.0/serving-endpoints", createBody, nil); code != 200 {
		t.Fatalf("create: %d %v", code, e)
	}
	code, e := h.call(t, "DELETE", "/api/2.0/gantry/models/m/versions/1", "", nil)
	if code != 409 || !strings.Contains(e.Message, `"fraud"`) {
		t.Errorf("delete of a served version: %d %v; want 409 naming the endpoint", code, e)
	}
	if code, e := h.call(t, "DELETE", "/api/2.0/serving-endpoints/fraud", "", nil); code != 200 {
		t.Fatalf("delete endpoint: %d %v", code, e)
	}
	if code, e := h.call(t, "DELETE", "/api/2.0/gantry/models/m/versions/1", "", nil); code != 200 {
		t.Errorf("delete of an unused version: %d %v", code, e)
	}
	if code, _ := h.call(t, "GET", "/api/2.0/gantry/models/m/versions/1", "", nil); code != 404 {
		t.Errorf("get after delete: %d, want 404", code)
	}
	if code, _ := h.call(t, "DELETE", "/api/2.0/gantry/models/m/versions/1", "", nil); code != 404 {
		t.Errorf("second delete: %d, want 404", code)
	}
}
