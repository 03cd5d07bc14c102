package activator

// Hostile-input tests (issue 19): the path as sent, and bodies read under a
// StreamRequestBody server, as gantry runs the activator.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/valyala/fasthttp"
)

// TestParsePathEncoded: fasthttp's ctx.Path() decodes %2f and then removes
// dot segments, so /serving-endpoints/other/..%2fep/invocations reached ep.
// parsePath splits the path as sent first and decodes each segment after.
func TestParsePathEncoded(t *testing.T) {
	for _, tc := range []struct {
		path, name, served string
		ok                 bool
	}{
		{"/serving-endpoints/other/..%2fep/invocations", "", "", false},
		{"/serving-endpoints/other/..%2Fep/invocations", "", "", false},
		{"/serving-endpoints/other/../ep/invocations", "", "", false},
		{"/serving-endpoints/./ep/invocations", "", "", false},
		{"/serving-endpoints/a%2fb/invocations", "a/b", "", true}, // a name no endpoint has
		{"/serving-endpoints/ep%2Dx/invocations", "ep-x", "", true},
		{"/serving-endpoints/ep/served-models/m%2f..%2fn/invocations", "ep", "m/../n", true},
		{"/serving-endpoints/ep%zz/invocations", "", "", false},
		{"/serving-endpoints/%/invocations", "", "", false},
		{"/serving-endpoints/ep/invocations%2f", "", "", false},
	} {
		name, served, ok := parsePath([]byte(tc.path))
		if string(name) != tc.name || string(served) != tc.served || ok != tc.ok {
			t.Errorf("parsePath(%q) = %q, %q, %v; want %q, %q, %v", tc.path, name, served, ok, tc.name, tc.served, tc.ok)
		}
	}
}

// FuzzParsePath holds parsePath to the path's raw structure: whatever it
// accepts has the invocation form with slashes only where the form has
// them, so no decoding can move a request to another endpoint.
func FuzzParsePath(f *testing.F) {
	for _, s := range []string{
		"/serving-endpoints/ep/invocations",
		"/serving-endpoints/ep/served-models/m-1/invocations",
		"/serving-endpoints/other/..%2ffraud-ep/invocations",
		"/serving-endpoints/a%2fb/served-models/c%2Fd/invocations",
		"/serving-endpoints/%41/invocations",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		name, served, ok := parsePath([]byte(p))
		if !ok {
			return
		}
		rest, _ := strings.CutPrefix(p, "/serving-endpoints/")
		segs := strings.Split(rest, "/")
		switch {
		case len(segs) == 2 && segs[1] == "invocations" && served == nil:
		case len(segs) == 4 && segs[1] == "served-models" && segs[3] == "invocations" && served != nil:
		default:
			t.Fatalf("parsePath(%q) accepted a path of another form", p)
		}
		if len(name) == 0 || (served != nil && len(served) == 0) {
			t.Fatalf("parsePath(%q) = empty name", p)
		}
	})
}

// streamed is an activator with one ready entity behind a fasthttp server
// that streams bodies, as gantry's front does, with a short body deadline.
func streamed(t *testing.T, cfg Config, deadline time.Duration) (addr string, w *worker) {
	t.Helper()
	w = startWorker(t, "m", func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		fmt.Fprintf(ctx, `{"predictions":[%d]}`, len(ctx.PostBody()))
	})
	cfg.Logger = slog.New(slog.DiscardHandler)
	a := New(cfg, newFakeRoutes())
	a.apply(oneEndpoint(1, "ep", nil, readyEntity("m", w.addr)))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{
		Handler:           a.Handler,
		StreamRequestBody: true,
		HeaderReceived: func(*fasthttp.RequestHeader) fasthttp.RequestConfig {
			return fasthttp.RequestConfig{ReadTimeout: deadline}
		},
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return ln.Addr().String(), w
}

// send writes an invocation's headers and the first part of its body, and
// returns the connection and a reader of the answer.
func send(t *testing.T, addr string, length int, part []byte) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	te := fmt.Sprintf("Content-Length: %d", length)
	if length < 0 {
		te = "Transfer-Encoding: chunked"
	}
	fmt.Fprintf(c, "POST /serving-endpoints/ep/invocations HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n%s\r\n\r\n", te)
	c.Write(part)
	return c, bufio.NewReader(c)
}

func readAnswer(t *testing.T, c net.Conn, r *bufio.Reader) (int, http.Header, api.Error) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e api.Error
	json.Unmarshal(b, &e)
	return resp.StatusCode, resp.Header, e
}

// TestStreamedBodies: the activator reads a streamed body itself, as it
// arrives, within its limit, its memory bound and the server's deadline.
func TestStreamedBodies(t *testing.T) {
	addr, _ := streamed(t, Config{MaxRequestBodySize: 1 << 20, MaxBufferedBytes: 8 << 20}, 500*time.Millisecond)

	t.Run("whole bodies, fixed and chunked", func(t *testing.T) {
		body := bytes.Repeat([]byte("x"), 200<<10)
		c, r := send(t, addr, len(body), body)
		if status, _, e := readAnswer(t, c, r); status != 200 {
			t.Fatalf("%d %+v", status, e)
		}
		c, r = send(t, addr, -1, []byte(fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(body), body)))
		if status, _, e := readAnswer(t, c, r); status != 200 {
			t.Fatalf("chunked: %d %+v", status, e)
		}
	})

	t.Run("chunked over the limit", func(t *testing.T) {
		chunk := bytes.Repeat([]byte("x"), 64<<10)
		c, r := send(t, addr, -1, nil)
		go func() {
			for range 20 { // 1.25 MiB
				if _, err := fmt.Fprintf(c, "%x\r\n%s\r\n", len(chunk), chunk); err != nil {
					return
				}
			}
		}()
		if status, _, e := readAnswer(t, c, r); status != 413 || e.Code != api.ErrPayloadTooLarge {
			t.Errorf("%d %+v, want 413", status, e)
		}
	})

	// A body that stops arriving is cut off at the server's deadline with
	// 408; before, it held its buffer for as long as the client liked.
	t.Run("stalled body", func(t *testing.T) {
		c, r := send(t, addr, 100<<10, bytes.Repeat([]byte("x"), 10<<10))
		start := time.Now()
		if status, _, e := readAnswer(t, c, r); status != 408 || e.Code != api.ErrMalformedRequest {
			t.Errorf("%d %+v, want 408", status, e)
		}
		if took := time.Since(start); took > 3*time.Second {
			t.Errorf("answered after %s", took)
		}
	})

	// Bodies held at once are bounded: with one client holding most of
	// MaxBufferedBytes mid-body, another's body does not fit and gets 503
	// with Retry-After, before it is read; once the first is answered,
	// it fits again. Slow clients hold what they sent, not what they
	// claimed: three claims of 1 MiB with 10 bytes sent leave room.
	t.Run("memory bound", func(t *testing.T) {
		addr, _ := streamed(t, Config{MaxRequestBodySize: 1 << 20, MaxBufferedBytes: 256 << 10}, 5*time.Second)
		for range 3 {
			c, _ := send(t, addr, 1<<20, []byte("0123456789"))
			defer c.Close()
		}
		small := bytes.Repeat([]byte("y"), 1000)
		c, r := send(t, addr, len(small), small)
		if status, _, e := readAnswer(t, c, r); status != 200 {
			t.Fatalf("3 slow claims of 1 MiB: a small body got %d %+v, want 200", status, e)
		}
		big := bytes.Repeat([]byte("z"), 150<<10)
		c1, r1 := send(t, addr, len(big), big[:100<<10])
		time.Sleep(100 * time.Millisecond)
		c2, r2 := send(t, addr, len(big), big)
		status, h, e := readAnswer(t, c2, r2)
		if status != 503 || e.Code != api.ErrTemporarilyUnavailable || h.Get("Retry-After") == "" {
			t.Errorf("over the bound: %d %+v (Retry-After %q), want 503 with Retry-After", status, e, h.Get("Retry-After"))
		}
		c1.Write(big[100<<10:])
		if status, _, e := readAnswer(t, c1, r1); status != 200 {
			t.Errorf("the first body: %d %+v", status, e)
		}
		c3, r3 := send(t, addr, len(big), big)
		if status, _, e := readAnswer(t, c3, r3); status != 200 {
			t.Errorf("after the first was answered: %d %+v", status, e)
		}
	})
}
