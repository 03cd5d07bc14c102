package activator

import (
	"net/http"
	"sync"
	"testing"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/loggers"
)

// records keeps copies of what the activator captures.
type records struct {
	mu  sync.Mutex
	got []loggers.Record
}

func (r *records) Capture(rec *loggers.Record) bool {
	// The bodies belong to the request: keep copies, as the real one does.
	c, err := loggers.DecodeRecord(loggers.AppendRecord(nil, rec))
	if err != nil {
		panic(err)
	}
	r.mu.Lock()
	r.got = append(r.got, c)
	r.mu.Unlock()
	return true
}

func (r *records) all() []loggers.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]loggers.Record(nil), r.got...)
}

func TestCaptureRecordsEveryAnswer(t *testing.T) {
	rec := &records{}
	h := newHarness(t, Config{Capture: rec, MaxRequestBodySize: 4 << 20})
	w := startWorker(t, "w1", nil)
	rt := oneEndpoint(1, "ep", nil, readyEntity("model-1", w.addr))
	rt.Endpoints[0].InferenceTable = "ml_logs.ep_payload"
	rt.Endpoints = append(rt.Endpoints, api.EndpointRoute{Name: "quiet", ConfigVersion: 1, Entities: []api.EntityRoute{readyEntity("m", w.addr)}})
	h.push(rt)

	ok := h.invoke("ep")
	missing := h.do(http.MethodPost, "/serving-endpoints/ep/served-models/nope/invocations", "application/json", []byte(`{"inputs":[2]}`))
	big := make([]byte, loggers.MaxBodySize+1)
	tooBig := h.do(http.MethodPost, "/serving-endpoints/ep/invocations", "application/json", big)
	h.invoke("quiet")      // capture off for this endpoint
	h.invoke("no-such-ep") // no endpoint, no table

	got := rec.all()
	if len(got) != 3 {
		t.Fatalf("captured %d records; want 3 (two of ep's, one over the size limit): %+v", len(got), got)
	}
	want := []struct {
		id, entity, request, response string
		status                        int32
		codes                         int
	}{
		{ok.header.Get("x-request-id"), "model-1", `{"inputs":[1]}`, `{"predictions":["w1"]}`, 200, 0},
		{missing.header.Get("x-request-id"), "", `{"inputs":[2]}`, string(missing.body), 404, 0},
		{tooBig.header.Get("x-request-id"), "model-1", "", `{"predictions":["w1"]}`, 200, 1},
	}
	for i, w := range want {
		r := got[i]
		if r.Table != "ml_logs.ep_payload" || r.Endpoint != "ep" || r.RequestID != w.id || r.ServedEntity != w.entity ||
			string(r.Request) != w.request || string(r.Response) != w.response || r.StatusCode != w.status ||
			len(r.LoggingErrorCodes) != w.codes || r.SamplingFraction != 1 || r.TimestampMs == 0 {
			t.Errorf("record %d: %+v\nwant %+v", i, r, w)
		}
	}
	if got[2].LoggingErrorCodes[0] != loggers.ErrRequestTooLarge {
		t.Errorf("codes %v", got[2].LoggingErrorCodes)
	}
}
