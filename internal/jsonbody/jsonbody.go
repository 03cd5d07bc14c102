// Package jsonbody reads the JSON request bodies of Gantry's control-plane
// APIs (the scheduler's and the identity service's), with the problems
// answered in API.md's error shape.
package jsonbody

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/gantry/gantry/api"
)

// Decode reads r's body, at most limit bytes, into v, refusing unknown
// fields: API.md promises a 400 naming any field Gantry does not support
// rather than ignoring it. It returns the body it read, for checks that
// encoding/json does not make.
func Decode(w http.ResponseWriter, r *http.Request, v any, limit int64) ([]byte, error) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return nil, api.Errorf(api.ErrPayloadTooLarge, "request body is over %d bytes", limit)
	}
	if err != nil {
		return nil, api.Errorf(api.ErrMalformedRequest, "read the request body: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var typeErr *json.UnmarshalTypeError
		switch {
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			return nil, api.Errorf(api.ErrInvalidParameterValue, "%s: Gantry does not support this field", strings.TrimPrefix(err.Error(), "json: "))
		case errors.As(err, &typeErr):
			return nil, api.Errorf(api.ErrMalformedRequest, "field %s: expected %s, got a JSON %s", typeErr.Field, typeErr.Type, typeErr.Value)
		case errors.Is(err, io.EOF):
			return nil, api.Errorf(api.ErrMalformedRequest, "request body is empty; send a JSON object")
		}
		return nil, api.Errorf(api.ErrMalformedRequest, "request body is not valid JSON: %v", err)
	}
	if dec.More() {
		return nil, api.Errorf(api.ErrMalformedRequest, "request body has data after the JSON object")
	}
	return b, nil
}
