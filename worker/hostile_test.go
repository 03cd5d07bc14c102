package worker

// Regression tests for hostile invocations (issue 19), against a real
// worker server on loopback.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
)

// TestNonFiniteFeatures: Infinity, -Infinity and 1e999 (which overflows to
// Infinity) reached the runtime, whose refusal was a 500; they are the
// request's fault, a 400 naming the row and column. NaN stays a missing
// value.
func TestNonFiniteFeatures(t *testing.T) {
	base, _ := start(t, Config{ModelDir: writeModel(t, namedModel)},
		map[string]Loader{"xgboost": loaderOf(funcRuntime(func(rows [][]float64) (any, error) {
			return []int{len(rows)}, nil
		}), 2)})
	waitReady(t, base)
	for _, v := range []string{"Infinity", "-Infinity", "1e999", "-1e999", "1e39"} {
		body := fmt.Sprintf(`{"dataframe_split": {"columns": ["age", "amount"], "data": [[1, 2], [3, %s]]}}`, v)
		status, _, got := post(t, base+"/invocations", "application/json", body)
		if status != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 400: %s", v, status, got)
			continue
		}
		checkErrorBody(t, got, `INVALID_PARAMETER_VALUE: row 1, column "amount": `+v)
	}
	csv := "age,amount\n1,inf\n"
	if status, _, got := post(t, base+"/invocations", "text/csv", csv); status != http.StatusBadRequest {
		t.Errorf("CSV inf: status %d, want 400: %s", status, got)
	}
	if status, _, got := post(t, base+"/invocations", "application/json",
		`{"instances": [[NaN, 1]]}`); status != http.StatusOK {
		t.Errorf("NaN: status %d, want 200 (a missing value): %s", status, got)
	}
}

// TestErrorBodyBounded: a CSV body with a million columns, none of them the
// model's, got an 8.9 MB error naming every one.
func TestErrorBodyBounded(t *testing.T) {
	base, _ := start(t, Config{ModelDir: writeModel(t, namedModel)},
		map[string]Loader{"xgboost": loaderOf(&sumRuntime{}, 2)})
	waitReady(t, base)
	var b strings.Builder
	for i := range 1_000_000 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "c%d", i)
	}
	b.WriteString("\n")
	b.WriteString(strings.Repeat("1,", 999_999) + "1\n")
	status, _, got := post(t, base+"/invocations", "text/csv", b.String())
	if status != http.StatusBadRequest || len(got) > 2048 {
		t.Fatalf("status %d, %d-byte body %.200s…; want 400 of at most 2 KiB", status, len(got), got)
	}
	var e api.Error
	if err := json.Unmarshal([]byte(got), &e); err != nil {
		t.Fatalf("body %q: %v", got, err)
	}
	for _, want := range []string{"missing columns: age, amount", "unexpected columns: c0, c1,", "and 999990 more"} {
		if !strings.Contains(e.Message, want) {
			t.Errorf("message %q lacks %q", e.Message, want)
		}
	}
}

// TestSlowBody: a client that sends its headers and then trickles (or
// stops) held a worker goroutine and a buffer sized by its Content-Length
// for as long as it liked; the body now has bodyTimeout.
func TestSlowBody(t *testing.T) {
	old := bodyTimeout
	bodyTimeout = 300 * time.Millisecond
	t.Cleanup(func() { bodyTimeout = old })
	base, _ := start(t, Config{ModelDir: writeModel(t, namedModel)},
		map[string]Loader{"xgboost": loaderOf(&sumRuntime{}, 2)})
	waitReady(t, base)

	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /invocations HTTP/1.1\r\nHost: w\r\nContent-Type: application/json\r\nContent-Length: 16000000\r\n\r\n{\"inst")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer to a stalled body: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || time.Since(start) > 3*time.Second {
		t.Errorf("status %d after %s; want 400 after about %s", resp.StatusCode, time.Since(start), bodyTimeout)
	}

	// The deadline goes once a body is in: a prediction slower than it
	// is answered.
	slow := make(chan struct{})
	base2, _ := start2(t, funcRuntime(func(rows [][]float64) (any, error) {
		<-slow
		return []int{0}, nil
	}))
	go func() { time.Sleep(2 * bodyTimeout); close(slow) }()
	if status, _, got := post(t, base2+"/invocations", "application/json", `{"instances": [[1, 2]]}`); status != 200 {
		t.Errorf("slow prediction: %d %s", status, got)
	}
}

func start2(t *testing.T, rt Runtime) (string, func() error) {
	base, stop := start(t, Config{ModelDir: writeModel(t, namedModel)}, map[string]Loader{"xgboost": loaderOf(rt, 2)})
	waitReady(t, base)
	return base, stop
}
