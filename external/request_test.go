package external

import (
	"errors"
	"testing"

	"github.com/gantry/gantry/api"
)

// Decode (package openai) and every provider's translation of what it
// takes, which must be what it was before body (requestBefore).
func FuzzDecode(f *testing.F) {
	for _, s := range []string{`{"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}], "max_tokens": 64, "temperature": 1.0}`, `{"prompt": ["a", "b"], "n": 5}`, `{"input": "x", "extra_params": {"dimensions": 8}}`, `{"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}]}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		for _, task := range []string{api.TaskChat, api.TaskCompletions, api.TaskEmbeddings} {
			r, err := Decode(task, []byte(body))
			if err != nil {
				var ae *api.Error
				if !errors.As(err, &ae) || api.HTTPStatus(ae.Code) != 400 {
					t.Fatalf("refusal %v is not a 400", err)
				}
				continue
			}
			// What Decode takes is within the documented ranges.
			if r.N != nil && (*r.N < 1 || *r.N > 5) || r.Temperature != nil && (*r.Temperature < 0 || *r.Temperature > 2) || len(r.Stop) > 4 {
				t.Fatalf("accepted out of range: %+v", r)
			}
			sameAsBefore(t, r)
		}
	})
}
