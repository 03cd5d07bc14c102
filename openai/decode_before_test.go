package openai

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/gantry/gantry/api"
)

// Decode must take and refuse what it did before it scanned the body
// (decodeBefore, the code it replaced): the same request, or the same
// refusal. The seeds, and what fuzzing found, are in
// testdata/fuzz/FuzzDecodeAsBefore.
func FuzzDecodeAsBefore(f *testing.F) {
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, task := range []string{api.TaskChat, api.TaskCompletions, api.TaskEmbeddings} {
			got, gerr := Decode(task, body)
			want, werr := decodeBefore(task, body)
			if !sameRefusal(gerr, werr) || !reflect.DeepEqual(got, want) {
				t.Fatalf("%s %q:\n got %+v, %v\nwant %+v, %v", task, body, got, gerr, want, werr)
			}
		}
	})
}

// sameRefusal says whether a and b are the same refusal. Of several
// reserved keys in extra_params, either may be named (a map's order).
func sameRefusal(a, b error) bool {
	var x, y *api.Error
	if a == nil || b == nil || !errors.As(a, &x) || !errors.As(b, &y) {
		return a == nil && b == nil
	}
	const reserved = "extra_params."
	return x.Code == y.Code && (x.Message == y.Message || strings.HasPrefix(x.Message, reserved) && strings.HasPrefix(y.Message, reserved))
}

// decodeBefore is Decode as it was: the body unmarshalled into a map,
// the messages through a Decoder, lists through json.Unmarshal.
func decodeBefore(task string, body []byte) (*Request, error) {
	allowed, ok := fieldsOf[task]
	if !ok {
		return nil, api.Errorf(api.ErrInternal, "unknown task %q", task)
	}
	// Every external call comes through here, so the common case is
	// kept cheap: one Unmarshal, which refuses trailing data too; only a
	// body it refuses takes the Decoder, to say which fault it is.
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil || raw == nil {
		return nil, bodyError(task, body)
	}
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !contains(allowed, k) {
			return nil, Invalidf("%s: not a field of %s requests; it takes %s (provider parameters go in extra_params)", Clip(k), task, strings.Join(allowed, ", "))
		}
	}
	r := &Request{Task: task}
	var err *api.Error
	for _, k := range keys {
		v := raw[k]
		switch k {
		case "model":
			err = decodeInto(k, v, &r.Model)
		case "messages":
			err = r.decodeMessagesBefore(v)
		case "prompt":
			r.Prompt, err = stringOrListBefore(k, v)
		case "input":
			r.Input, err = stringOrListBefore(k, v)
		case "max_tokens":
			r.MaxTokens, err = positiveInt(k, v)
		case "n":
			if r.N, err = positiveInt(k, v); err == nil && *r.N > MaxN {
				err = Invalidf("n: %d is out of range; an integer between 1 and %d", *r.N, MaxN)
			}
		case "temperature":
			var t float64
			if err = decodeInto(k, v, &t); err == nil && (t < 0 || t > maxTemperature || math.IsNaN(t)) {
				err = Invalidf("temperature: %g is out of range; a float between 0.0 and 2.0", t)
			}
			r.Temperature = &t
		case "stop":
			if r.Stop, err = stringOrListBefore(k, v); err == nil && len(r.Stop) > maxStop {
				err = Invalidf("stop: %d sequences; at most %d", len(r.Stop), maxStop)
			}
		case "stream":
			err = decodeInto(k, v, &r.Stream)
		case "stream_options":
			var so struct {
				IncludeUsage bool `json:"include_usage"`
			}
			err = decodeInto(k, v, &so)
			r.IncludeUsage = so.IncludeUsage
		case "extra_params":
			err = decodeInto(k, v, &r.ExtraParams)
			for p := range r.ExtraParams {
				if field, ok := reservedExtra[p]; ok {
					err = Invalidf("extra_params.%s: set by Gantry from the unified fields; use %s", Clip(p), field)
				}
			}
		case "client_request_id":
			err = decodeInto(k, v, &r.ClientRequestID)
		case "usage_context":
			err = decodeInto(k, v, &r.UsageContext)
		}
		if err != nil {
			return nil, err
		}
	}
	switch task {
	case api.TaskChat:
		if len(r.Messages) == 0 {
			return nil, Invalidf("messages: required; a list of {\"role\", \"content\"}")
		}
	case api.TaskCompletions:
		if len(r.Prompt) == 0 {
			return nil, Invalidf("prompt: required; a string or a list of strings")
		}
	case api.TaskEmbeddings:
		if len(r.Input) == 0 {
			return nil, Invalidf("input: required; a string or a list of strings")
		}
	}
	return r, nil
}

func (r *Request) decodeMessagesBefore(v json.RawMessage) *api.Error {
	// One Decoder for the list (unknown fields refused in every
	// element), not one per message; a list it refuses goes through
	// element by element below, to name the one at fault.
	var msgs []message
	dec := json.NewDecoder(bytes.NewReader(v))
	dec.DisallowUnknownFields()
	if dec.Decode(&msgs) == nil && len(msgs) <= maxItems {
		r.Messages = make([]Message, 0, len(msgs))
		for i, msg := range msgs {
			if err := r.addMessage(i, msg); err != nil {
				return err
			}
		}
		return nil
	}
	var list []json.RawMessage
	if err := json.Unmarshal(v, &list); err != nil {
		return Invalidf("messages: must be a list of {\"role\", \"content\"}")
	}
	if len(list) > maxItems {
		return Invalidf("messages: %d messages; at most %d", len(list), maxItems)
	}
	for i, m := range list {
		var msg message
		dec := json.NewDecoder(bytes.NewReader(m))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&msg); err != nil {
			return Invalidf("messages[%d]: must be an object with role and content only", i)
		}
		if err := r.addMessage(i, msg); err != nil {
			return err
		}
	}
	return nil
}

func stringOrListBefore(field string, v json.RawMessage) ([]string, *api.Error) {
	var s string
	if json.Unmarshal(v, &s) == nil {
		return []string{s}, nil
	}
	var list []string
	if err := json.Unmarshal(v, &list); err != nil {
		return nil, Invalidf("%s: must be a string or a list of strings", field)
	}
	if len(list) > maxItems {
		return nil, Invalidf("%s: %d items; at most %d", field, len(list), maxItems)
	}
	return list, nil
}
