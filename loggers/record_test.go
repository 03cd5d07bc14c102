package loggers

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func TestRecordRoundTrip(t *testing.T) {
	r := Record{
		Table: "ml_prod_inference_logs.fraud_payload", RequestID: "0123abcd", ClientRequestID: "c-1",
		Endpoint: "fraud", ServedEntity: "model-v2", Requester: "alice",
		TimestampMs: 1732500000123, StatusCode: 503, ExecutionTimeMs: 42,
		Request: []byte("{\"inputs\": [1]}"), Response: []byte{0xff, 0x00, 'x'}, // not UTF-8: kept exact
		SamplingFraction: 1, LoggingErrorCodes: []string{ErrResponseTooLarge}, Shadow: true,
	}
	b := AppendRecord(nil, &r)
	if len(b) > EncodedSize(&r) {
		t.Errorf("encoded %d bytes; EncodedSize promised at most %d", len(b), EncodedSize(&r))
	}
	got, err := DecodeRecord(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, r) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, r)
	}
	for i := range b {
		if _, err := DecodeRecord(b[:i]); err == nil {
			t.Fatalf("a record cut to %d of %d bytes decoded without error", i, len(b))
		}
	}
	if _, err := DecodeRecord(append(b, 0)); err == nil {
		t.Fatal("trailing bytes decoded without error")
	}
}

func TestSetBodies(t *testing.T) {
	big := bytes.Repeat([]byte("x"), MaxBodySize+1)
	var r Record
	r.SetBodies(big, []byte("ok"))
	if r.Request != nil || string(r.Response) != "ok" || !reflect.DeepEqual(r.LoggingErrorCodes, []string{ErrRequestTooLarge}) {
		t.Fatalf("big request: %q %q %v", r.Request, r.Response, r.LoggingErrorCodes)
	}
	r = Record{}
	r.SetBodies(big[:MaxBodySize], big)
	if len(r.Request) != MaxBodySize || r.Response != nil || !reflect.DeepEqual(r.LoggingErrorCodes, []string{ErrResponseTooLarge}) {
		t.Fatalf("big response: %d %d %v", len(r.Request), len(r.Response), r.LoggingErrorCodes)
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add(AppendRecord(nil, &Record{Table: "a.b", RequestID: "r", StatusCode: 200, Request: []byte("{}")}))
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRecord(b)
		if err != nil {
			return
		}
		// What decodes survives a round trip (the bytes may differ: a
		// varint can be written in more than one way).
		again, err := DecodeRecord(AppendRecord(nil, &r))
		if err != nil || !reflect.DeepEqual(again, r) {
			t.Fatalf("round trip of %x: %+v, %v; want %+v", b, again, err, r)
		}
	})
}

func TestClientRequestID(t *testing.T) {
	for _, c := range []struct{ body, want string }{
		{`{"client_request_id": "abc", "inputs": [1]}`, "abc"},
		{`{"dataframe_records": [{"a": "}", "b": [1, {"c": "]\""}]}], "client_request_id":"x\"y\u00e9"}`, "x\"yé"},
		{` { "params": {"client_request_id": "nested"}, "inputs": [[1,2]] , "client_request_id" : "top" } `, "top"},
		{`{"inputs": [1], "n": -1.5e3, "t": true, "z": null, "client_request_id": "last"}`, "last"},
		{`{"inputs": [1]}`, ""},
		{`{"client_request_id": 7}`, ""},
		{`["client_request_id", "x"]`, ""},
		{`{"inputs": [1`, ""},
		{`a,b\n1,2`, ""},
		{``, ""},
	} {
		if got := ClientRequestID([]byte(c.body)); got != c.want {
			t.Errorf("ClientRequestID(%s) = %q; want %q", c.body, got, c.want)
		}
	}
}

func TestUsageContext(t *testing.T) {
	for _, c := range []struct{ body, want string }{
		{`{"messages": [{"role": "user", "content": "usage_context"}], "usage_context": {"team": "risk", "project": "p-1"}}`, "map[project:p-1 team:risk]"},
		{`{"inputs": [1], "params": {"usage_context": {"a": "nested"}}, "usage_context" : {"a":"top"} }`, "map[a:top]"},
		{`{"usage_context": {"a": 1}}`, "map[]"},
		{`{"usage_context": {}}`, "map[]"},
		{`{"usage_context": "team"}`, "map[]"},
		{`{"usage_context": {"a": "b"`, "map[]"},
		{`{"inputs": [1]}`, "map[]"},
		{`a,b\n1,2`, "map[]"},
	} {
		if got := fmt.Sprint(UsageContext([]byte(c.body))); got != c.want {
			t.Errorf("UsageContext(%s) = %s; want %s", c.body, got, c.want)
		}
	}
}

func FuzzClientRequestID(f *testing.F) {
	f.Add([]byte(`{"client_request_id": "abc", "inputs": [1]}`))
	f.Add([]byte(`{"a": {"b": "\\"}, "client_request_id": "x"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		// What encoding/json finds, or "" where it refuses the body.
		var want struct {
			ID string `json:"client_request_id"`
		}
		if json.Unmarshal(b, &want) != nil {
			want.ID = ""
		}
		if id := ClientRequestID(b); id != want.ID {
			t.Fatalf("ClientRequestID(%q) = %q; encoding/json finds %q", b, id, want.ID)
		}
	})
}

// BenchmarkClientRequestID reads the id of a scoring body of 100 rows,
// with the id last and without one: the activator's sticky key for a
// traffic split, and the sink's record, read it per request.
func BenchmarkClientRequestID(b *testing.B) {
	rows := strings.Repeat(`{"amount": 12.5, "merchant": "m-1234", "country": "FR"},`, 100)
	for _, c := range []struct{ name, body string }{
		{"last", `{"dataframe_records": [` + rows[:len(rows)-1] + `], "client_request_id": "req-1"}`},
		{"none", `{"dataframe_records": [` + rows[:len(rows)-1] + `]}`},
	} {
		b.Run(c.name, func(b *testing.B) {
			body := []byte(c.body)
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				ClientRequestID(body)
			}
		})
	}
}
