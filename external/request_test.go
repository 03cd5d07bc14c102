package external

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/gantry/gantry/api"
)

func TestDecodeRefusesNamingTheField(t *testing.T) {
	for _, tc := range []struct{ task, body, want string }{
		{api.TaskChat, `{"messages": []}`, "messages: required"},
		{api.TaskChat, `{"messages": [{"role": "robot", "content": "x"}]}`, "messages[0].role: must be one of system, user, assistant"},
		{api.TaskChat, `{"messages": [{"role": "user"}]}`, "messages[0].content: required"},
		{api.TaskChat, `{"messages": [{"role": "user", "content": 5}]}`, "messages[0].content: must be a string"},
		{api.TaskChat, `{"messages": [{"role": "user", "content": "x", "name": "n"}]}`, "messages[0]: must be an object with role and content only"},
		{api.TaskChat, `{"messages": [{"role": "user", "content": "x"}], "temperature": 2.5}`, "temperature: 2.5 is out of range; a float between 0.0 and 2.0"},
		{api.TaskChat, `{"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}`, "temperature: must be a number"},
		{api.TaskChat, `{"messages": [{"role": "user", "content": "x"}], "n": 6}`, "n: 6 is out of range; an integer between 1 and 5"},
		{api.TaskChat, `{"messages": [{"role": "user", "content": "x"}], "n": 0}`, "n: 0 is out of range"},
		{api.TaskChat, `{"messages": [{"role": "user", "content": "x"}], "max_tokens": 1.5}`, "max_tokens: 1.5 is out of range"},
		{api.TaskChat, `{"messages": [{"role": "user", "content": "x"}], "max_tokens": -1}`, "max_tokens: -1 is out of range"},
		{api.TaskChat, `{"messages": [{"role": "user", "content": "x"}], "stop": ["a","b","c","d","e"]}`, "stop: 5 sequences; at most 4"},
		{api.TaskChat, `{"messages": [{"role": "user", "content": "x"}], "stream": "yes"}`, "stream: must be true or false"},
		{api.TaskChat, `{"messages": [{"role": "user", "content": "x"}], "top_p": 0.1}`, "top_p: not a field of llm/v1/chat requests"},
		{api.TaskChat, `{"messages": [{"role": "user", "content": "x"}], "extra_params": {"model": "other"}}`, "extra_params.model: set by Gantry"},
		{api.TaskChat, `{"messages": [{"role": "user", "content": "x"}], "usage_context": {"a": 1}}`, "usage_context: must be an object of strings"},
		{api.TaskCompletions, `{"messages": [{"role": "user", "content": "x"}]}`, "messages: not a field of llm/v1/completions"},
		{api.TaskCompletions, `{"prompt": 5}`, "prompt: must be a string or a list of strings"},
		{api.TaskEmbeddings, `{"input": "x", "max_tokens": 3}`, "max_tokens: not a field of llm/v1/embeddings"},
		{api.TaskEmbeddings, `{}`, "input: required"},
	} {
		_, err := Decode(tc.task, []byte(tc.body))
		var ae *api.Error
		if !errors.As(err, &ae) || ae.Code != api.ErrInvalidParameterValue || !strings.HasPrefix(ae.Message, tc.want) {
			t.Errorf("%s %s:\n got %v\nwant INVALID_PARAMETER_VALUE starting %q", tc.task, tc.body, err, tc.want)
		}
	}
	for _, body := range []string{``, `[]`, `{"messages": `, `{} {}`, `null`} {
		_, err := Decode(api.TaskChat, []byte(body))
		var ae *api.Error
		if !errors.As(err, &ae) || ae.Code != api.ErrMalformedRequest {
			t.Errorf("%q: %v, want MALFORMED_REQUEST", body, err)
		}
	}
}

func TestDecodeAccepts(t *testing.T) {
	r := decode(t, api.TaskChat, `{"model": "chat", "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
		"n": 2, "stop": "END", "stream": true, "stream_options": {"include_usage": true}, "client_request_id": "c1", "usage_context": {"team": "x"}}`)
	if r.Messages[0].Content != "ab" || *r.N != 2 || r.Stop[0] != "END" || !r.Stream || !r.IncludeUsage || r.ClientRequestID != "c1" || r.Model != "chat" {
		t.Errorf("decoded %+v", r)
	}
}

func FuzzDecode(f *testing.F) {
	for _, s := range []string{chatBody, `{"prompt": ["a", "b"], "n": 5}`, `{"input": "x", "extra_params": {"dimensions": 8}}`, `{"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}]}`} {
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
			for _, p := range []provider{openAI{}, anthropic{}, cohere{}} {
				p.request(&api.ExternalRoute{Task: task, BaseURL: "http://x"}, r)
			}
		}
	})
}

func TestSSEReader(t *testing.T) {
	in := ": comment\r\nevent: a\r\ndata: one\r\ndata:two\r\n\r\n" + // CRLF, two data lines, no space after the colon
		"data: {\"x\":1}\n\n" +
		"event: b\nid: 7\nretry: 10\n\n" + // no data: not dispatched
		"data: cr\r\rdata: last-without-blank"
	r := newSSEReader(strings.NewReader(in))
	var got []string
	for {
		ev, err := r.Next()
		if err != nil {
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("end = %v, want ErrUnexpectedEOF for a cut line", err)
			}
			break
		}
		got = append(got, ev.Name+"|"+string(ev.Data))
	}
	want := []string{"a|one\ntwo", `|{"x":1}`, "|cr"}
	if strings.Join(got, ";") != strings.Join(want, ";") {
		t.Errorf("events = %q, want %q", got, want)
	}
	// A line that never ends stops at MaxEventSize.
	r = newSSEReader(io.MultiReader(strings.NewReader("data: "), bytes.NewReader(bytes.Repeat([]byte("x"), MaxEventSize+10))))
	if _, err := r.Next(); !errors.Is(err, ErrEventTooLarge) {
		t.Errorf("endless line: %v", err)
	}
}

func FuzzSSE(f *testing.F) {
	f.Add("data: a\n\n")
	f.Add("event: x\r\ndata: 1\r\ndata: 2\r\n\r\n")
	f.Add(":c\rdata\r\r")
	f.Fuzz(func(t *testing.T, in string) {
		r := newSSEReader(strings.NewReader(in))
		total := 0
		for i := 0; ; i++ {
			ev, err := r.Next()
			if err != nil {
				break
			}
			total += len(ev.Data)
			if total > len(in) || i > len(in) {
				t.Fatalf("event %d %q from %d bytes of input", i, ev.Data, len(in))
			}
		}
		// Every translator survives any event without panicking.
		r = newSSEReader(strings.NewReader(in))
		trs := []translator{openAIStream{}, &anthropicStream{}, &cohereStream{}}
		for {
			ev, err := r.Next()
			if err != nil {
				break
			}
			for _, tr := range trs {
				tr.event(ev)
			}
		}
	})
}
