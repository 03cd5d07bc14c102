package jsonbody

import (
	"errors"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gantry/gantry/api"
)

func TestDecode(t *testing.T) {
	type body struct {
		Name  string `json:"name"`
		Count int    `json:"count"`
	}
	for _, tc := range []struct {
		body, code, msg string
	}{
		{`{"name": "a", "count": 2}`, "", ""},
		{`{"name": "a", "colour": "red"}`, api.ErrInvalidParameterValue, `unknown field "colour": Gantry does not support this field`},
		{`{"count": "two"}`, api.ErrMalformedRequest, "field count: expected int, got a JSON string"},
		{``, api.ErrMalformedRequest, "request body is empty; send a JSON object"},
		{`{"name": `, api.ErrMalformedRequest, "request body is not valid JSON: unexpected EOF"},
		{`{"name": "a"} {}`, api.ErrMalformedRequest, "request body has data after the JSON object"},
		{`{"name": "` + strings.Repeat("a", 64) + `"}`, api.ErrPayloadTooLarge, "request body is over 64 bytes"},
	} {
		var v body
		b, err := Decode(httptest.NewRecorder(), httptest.NewRequest("POST", "/", strings.NewReader(tc.body)), &v, 64)
		if tc.code == "" {
			if err != nil || string(b) != tc.body || v != (body{"a", 2}) {
				t.Errorf("%s: %+v, %q, %v", tc.body, v, b, err)
			}
			continue
		}
		var ae *api.Error
		if !errors.As(err, &ae) || ae.Code != tc.code || ae.Message != tc.msg {
			t.Errorf("%s: %v, want %s %q", tc.body, err, tc.code, tc.msg)
		}
	}
}
