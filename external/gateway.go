package external

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/openai"
	"github.com/valyala/fasthttp"
)

// Defaults of Config's fields.
const (
	DefaultMaxConns    = 256
	DefaultMaxInFlight = 1024
	DefaultTimeout     = 297 * time.Second
	// MaxAnswerSize bounds a whole (not streamed) answer read from a
	// provider: 2,048 embeddings of 3,072 floats fit.
	MaxAnswerSize = 128 << 20
)

// Config tunes a Gateway. It works at its zero value and must not change
// after NewGateway.
type Config struct {
	// MaxConns bounds the connections to one provider base URL (HTTP/1.1;
	// HTTP/2 multiplexes over fewer). Default 256.
	MaxConns int
	// MaxInFlight bounds the requests in flight to one provider base URL;
	// one more gets 503 TEMPORARILY_UNAVAILABLE with Retry-After at once,
	// so that a slow provider cannot hold every activator goroutine.
	// Default 1024.
	MaxInFlight int
	// Timeout bounds one call, from its start to the last byte of the
	// answer (of the stream too); past it the client gets 504. Default
	// 297 s, Databricks' execution limit.
	Timeout time.Duration
	// CAFile is a PEM file of CAs trusted besides the system's, for
	// private providers behind a private CA. Default: the system's only.
	CAFile string
	// Clock stamps the "created" field of translated answers. Default
	// time.Now.
	Clock func() time.Time
}

// Gateway calls providers. Safe for concurrent use.
type Gateway struct {
	cfg  Config
	tls  *tls.Config
	mu   sync.Mutex           // guards ups
	ups  map[string]*upstream // by base URL
	dial *net.Dialer
}

// upstream is one provider base URL: its connection pool and its slots.
// A plain http:// provider reached without a proxy (an OpenAI-compatible
// server on the cluster's network) also gets fast, a fasthttp client that
// whole calls use: HTTP/1.1 only, and no goroutines of its own per
// connection, which at 64 connections was the activator's largest cost on
// this path. https:// providers (HTTP/2, TLS checked) and every stream use
// client.
type upstream struct {
	client *http.Client
	fast   *fasthttp.HostClient
	slots  chan struct{}
}

// NewGateway returns a gateway; it fails only on an unreadable CAFile.
func NewGateway(cfg Config) (*Gateway, error) {
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("external CA file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("external CA file %s: no PEM certificate in it", cfg.CAFile)
		}
		tc.RootCAs = pool
	}
	return &Gateway{cfg: cfg, tls: tc, ups: map[string]*upstream{},
		dial: &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}}, nil
}

// Timeout is the gateway's per-call limit.
func (g *Gateway) Timeout() time.Duration { return g.cfg.Timeout }

func (g *Gateway) upstream(base string) *upstream {
	g.mu.Lock()
	defer g.mu.Unlock()
	u := g.ups[base]
	if u == nil {
		u = &upstream{
			client: &http.Client{
				Transport: &http.Transport{
					Proxy:               http.ProxyFromEnvironment,
					DialContext:         g.dial.DialContext,
					TLSClientConfig:     g.tls.Clone(),
					ForceAttemptHTTP2:   true,
					MaxConnsPerHost:     g.cfg.MaxConns,
					MaxIdleConnsPerHost: g.cfg.MaxConns,
					IdleConnTimeout:     90 * time.Second,
					TLSHandshakeTimeout: 10 * time.Second,
				},
				// A provider that redirects is misconfigured; following it
				// would send the key to wherever it points.
				CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
			},
			slots: make(chan struct{}, g.cfg.MaxInFlight),
		}
		u.fast = g.fastClient(base)
		g.ups[base] = u
	}
	return u
}

// fastClient is the fasthttp client of a plain http:// base URL that no
// proxy setting covers; nil otherwise. It has the same limits as the
// net/http one: cfg.MaxConns connections (a call waits for one up to its
// deadline), no redirects followed (fasthttp's Do never does), the same
// dialer; and it sends a request again only when a kept-alive connection
// was found closed before the answer began, as net/http does.
func (g *Gateway) fastClient(base string) *fasthttp.HostClient {
	bu, err := url.Parse(base)
	if err != nil || bu.Scheme != "http" || bu.Host == "" {
		return nil
	}
	if px, err := http.ProxyFromEnvironment(&http.Request{URL: bu}); err != nil || px != nil {
		return nil
	}
	addr := bu.Host
	if bu.Port() == "" {
		addr = net.JoinHostPort(bu.Hostname(), "80")
	}
	return &fasthttp.HostClient{
		Addr:                     addr,
		Dial:                     func(a string) (net.Conn, error) { return g.dial.Dial("tcp", a) },
		MaxConns:                 g.cfg.MaxConns,
		MaxConnWaitTimeout:       g.cfg.Timeout,
		MaxIdleConnDuration:      90 * time.Second,
		MaxResponseBodySize:      MaxAnswerSize,
		NoDefaultUserAgentHeader: true,
		DisablePathNormalizing:   true,
		RetryIfErr: func(_ *fasthttp.Request, attempts int, err error) (bool, bool) {
			// A kept-alive connection the provider had closed: the request
			// never reached it. Anything else may have, and a chat call
			// is not idempotent (nor free).
			return false, attempts < 2 && (errors.Is(err, io.EOF) || errors.Is(err, fasthttp.ErrConnectionClosed) || errors.Is(err, syscall.EPIPE))
		},
	}
}

// Error is a call's failure with the answer the client gets. Retryable
// marks what a fallback may retry on another entity: 429, 5xx, timeouts
// and connection failures.
type Error struct {
	Status    int
	Err       *api.Error
	Retryable bool
}

func (e *Error) Error() string { return e.Err.Error() }

// Reason is a short word for the inference table's note of an attempt.
func (e *Error) Reason() string { return strconv.Itoa(e.Status) }

func fail(status int, retryable bool, code, format string, args ...any) *Error {
	return &Error{Status: status, Retryable: retryable, Err: api.Errorf(code, format, args...)}
}

// begin checks r against the route's provider, takes a slot and sends the
// request. The caller closes the response body and calls release.
func (g *Gateway) begin(ctx context.Context, rt *api.ExternalRoute, r *Request) (provider, *http.Response, func(), error) {
	up := g.upstream(rt.BaseURL)
	p, u, body, release, err := g.prepare(rt, r, up)
	if err != nil {
		return nil, nil, nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		release()
		return nil, nil, nil, fail(500, false, api.ErrInternal, "provider %s: the request URL is not valid", rt.Provider)
	}
	req.Header.Set("Content-Type", "application/json")
	if r.Stream {
		req.Header.Set("Accept", "text/event-stream")
	}
	p.authorize(req.Header, rt)
	resp, err := up.client.Do(req)
	if err != nil {
		release()
		return nil, nil, nil, transportError(ctx, rt, err)
	}
	if resp.StatusCode/100 != 2 {
		defer release()
		defer resp.Body.Close()
		return nil, nil, nil, upstreamError(rt, resp)
	}
	return p, resp, release, nil
}

// headerSetter is where a provider puts its key: an http.Header or a
// fasthttp request's header.
type headerSetter interface{ Set(key, value string) }

// prepare checks r against the route's provider, builds the provider's
// request URL and body, and takes a slot of up, the provider's upstream.
// The caller calls release.
func (g *Gateway) prepare(rt *api.ExternalRoute, r *Request, up *upstream) (p provider, u string, body []byte, release func(), err error) {
	var ok bool
	p, ok = providerOf(rt.Provider)
	if !ok {
		return nil, "", nil, nil, fail(500, false, api.ErrInternal, "provider %q is not one this activator knows", rt.Provider)
	}
	if rt.KeyError != "" {
		// Retryable: a fallback moves on to the next entity.
		return nil, "", nil, nil, fail(503, true, api.ErrTemporarilyUnavailable, "the key of this external model cannot be used: %s", rt.KeyError)
	}
	if r.Task != rt.Task {
		return nil, "", nil, nil, fail(400, false, api.ErrInvalidParameterValue,
			"this endpoint serves %s; the request is for %s", rt.Task, r.Task)
	}
	u, body, err = p.request(rt, r)
	if err != nil {
		var ae *api.Error
		if errors.As(err, &ae) {
			return nil, "", nil, nil, &Error{Status: api.HTTPStatus(ae.Code), Err: ae}
		}
		return nil, "", nil, nil, fail(500, false, api.ErrInternal, "build the %s request: %v", rt.Provider, err)
	}
	select {
	case up.slots <- struct{}{}:
	default:
		return nil, "", nil, nil, fail(503, true, api.ErrTemporarilyUnavailable,
			"%d requests to provider %s are in flight, this activator's limit; retry later", cap(up.slots), rt.Provider)
	}
	return p, u, body, func() { <-up.slots }, nil
}

// callFast is Call on a plain HTTP/1.1 upstream's fasthttp client. ctx
// (Call's, which carries a deadline and is never cancelled otherwise:
// see the activator's attempt) bounds it by its deadline.
func (g *Gateway) callFast(ctx context.Context, rt *api.ExternalRoute, r *Request, p provider, u string, body []byte, up *upstream) (Answer, error) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(u)
	req.Header.SetMethod(fasthttp.MethodPost)
	req.Header.SetContentType("application/json")
	p.authorize(&req.Header, rt)
	req.SetBodyRaw(body)
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(g.cfg.Timeout)
	}
	if err := up.fast.DoDeadline(req, resp, deadline); err != nil {
		if errors.Is(err, fasthttp.ErrBodyTooLarge) {
			return Answer{}, fail(502, true, api.ErrTemporarilyUnavailable, "provider %s answered more than %d bytes", rt.Provider, MaxAnswerSize)
		}
		if errors.Is(err, fasthttp.ErrTimeout) || errors.Is(err, fasthttp.ErrNoFreeConns) || !time.Now().Before(deadline) {
			// fasthttp's deadline is ctx's, whose timer may not have fired
			// yet; callers look at ctx.Err() to tell a timeout (the
			// judge), as they could with net/http, which returns after it.
			t := time.NewTimer(time.Until(deadline) + 100*time.Millisecond)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
			return Answer{}, fail(504, true, api.ErrDeadlineExceeded, "provider %s did not answer in time", rt.Provider)
		}
		return Answer{}, transportError(ctx, rt, err)
	}
	if s := resp.StatusCode(); s/100 != 2 {
		b := resp.Body()
		return Answer{}, upstreamStatus(rt, s, b[:min(len(b), 64<<10)])
	}
	// The answer may keep slices of the body; resp goes back to its pool.
	a, err := p.answer(rt, r, bytes.Clone(resp.Body()), g.cfg.Clock().Unix())
	if err != nil {
		return Answer{}, fail(502, true, api.ErrTemporarilyUnavailable, "provider %s: %v", rt.Provider, err)
	}
	return a, nil
}

// transportError names a failure to get an answer: the deadline (504),
// or the connection (502). The message names the provider, not the URL
// (which may carry an Azure resource name the client should not learn).
func transportError(ctx context.Context, rt *api.ExternalRoute, err error) *Error {
	var ne net.Error
	if errors.Is(ctx.Err(), context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return fail(504, true, api.ErrDeadlineExceeded, "provider %s did not answer in time", rt.Provider)
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		return fail(499, false, api.ErrTemporarilyUnavailable, "the client went away")
	}
	return fail(502, true, api.ErrTemporarilyUnavailable, "provider %s could not be reached: %s", rt.Provider, netReason(err))
}

// netReason is the kind of a connection failure, without addresses.
func netReason(err error) string {
	var op *net.OpError
	switch {
	case errors.As(err, &op) && op.Op == "dial":
		return "connection refused or unreachable"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "the connection closed before an answer"
	case strings.Contains(err.Error(), "certificate"):
		return "its TLS certificate is not trusted (see --external-ca-file)"
	}
	return "connection failed"
}

// upstreamError turns a provider's non-2xx answer into the client's: a
// 4xx passes with its status and the provider's message (a wrong key is
// the provider's 401, on the first call); 5xx become 502.
func upstreamError(rt *api.ExternalRoute, resp *http.Response) *Error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return upstreamStatus(rt, resp.StatusCode, b)
}

// upstreamStatus is upstreamError of a status and (the start of) a body.
func upstreamStatus(rt *api.ExternalRoute, s int, b []byte) *Error {
	msg := openai.Clip(scrub(providerMessage(b), rt.Key))
	switch {
	case s == 429:
		e := fail(429, true, api.ErrRequestLimitExceeded, "provider %s answered 429: %s", rt.Provider, msg)
		return e
	case s >= 500:
		return fail(502, true, api.ErrTemporarilyUnavailable, "provider %s answered %d: %s", rt.Provider, s, msg)
	case s >= 400:
		code := api.ErrInvalidParameterValue
		switch s {
		case 401:
			code = api.ErrUnauthenticated
		case 403:
			code = api.ErrPermissionDenied
		case 404:
			code = api.ErrResourceDoesNotExist
		case 413:
			code = api.ErrPayloadTooLarge
		}
		return fail(s, false, code, "provider %s answered %d: %s", rt.Provider, s, msg)
	}
	return fail(502, true, api.ErrTemporarilyUnavailable, "provider %s answered %d, which Gantry does not take", rt.Provider, s)
}

// scrub removes the key from text a provider sent back (some echo it).
func scrub(s, key string) string {
	if len(key) < 4 {
		return s
	}
	return strings.ReplaceAll(s, key, "[REDACTED]")
}

// Call makes one whole (not streamed) call for r and returns the unified
// answer. Its error is an *Error.
func (g *Gateway) Call(ctx context.Context, rt *api.ExternalRoute, r *Request) (Answer, error) {
	ctx, cancel := context.WithTimeout(ctx, g.cfg.Timeout)
	defer cancel()
	if up := g.upstream(rt.BaseURL); up.fast != nil && !r.Stream {
		p, u, body, release, err := g.prepare(rt, r, up)
		if err != nil {
			return Answer{}, err
		}
		defer release()
		return g.callFast(ctx, rt, r, p, u, body, up)
	}
	p, resp, release, err := g.begin(ctx, rt, r)
	if err != nil {
		return Answer{}, err
	}
	defer release()
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxAnswerSize+1))
	if err != nil {
		return Answer{}, transportError(ctx, rt, err)
	}
	if len(body) > MaxAnswerSize {
		return Answer{}, fail(502, true, api.ErrTemporarilyUnavailable, "provider %s answered more than %d bytes", rt.Provider, MaxAnswerSize)
	}
	a, err := p.answer(rt, r, body, g.cfg.Clock().Unix())
	if err != nil {
		return Answer{}, fail(502, true, api.ErrTemporarilyUnavailable, "provider %s: %v", rt.Provider, err)
	}
	return a, nil
}

// Stream is a provider's event stream being translated. Open it, then
// read it with Next (or Run) and Close it.
type Stream struct {
	resp    *http.Response
	release func()
	cancel  context.CancelFunc
	tr      translator
	rt      *api.ExternalRoute
	ctx     context.Context
	rd      *SSEReader
	asm     assembler
}

// Open starts a streamed call for r: it returns once the provider has
// answered 2xx with its headers, so that a refusal still gets its own
// status. The caller must Close the stream (Run does).
func (g *Gateway) Open(ctx context.Context, rt *api.ExternalRoute, r *Request) (*Stream, error) {
	ctx, cancel := context.WithTimeout(ctx, g.cfg.Timeout)
	p, resp, release, err := g.begin(ctx, rt, r)
	if err != nil {
		cancel()
		return nil, err
	}
	return &Stream{resp: resp, release: release, cancel: cancel, tr: p.stream(rt, r, g.cfg.Clock().Unix()), rt: rt, ctx: ctx,
		rd: NewSSEReader(resp.Body)}, nil
}

// Close ends the stream and the upstream call.
func (s *Stream) Close() {
	s.cancel() // first: a blocked read returns
	s.resp.Body.Close()
	if s.release != nil {
		s.release()
		s.release = nil
	}
}

// Next waits for the provider's next event and returns its unified
// chunks: done when the stream ended as it should, an error when the
// provider ended it early, broke it or ran out of time (what came before
// was returned).
func (s *Stream) Next() (chunks [][]byte, done bool, err error) {
	ev, err := s.rd.Next()
	if err != nil {
		if errors.Is(err, io.EOF) {
			// OpenAI-compatible servers end with [DONE], Anthropic with
			// message_stop, Cohere with message-end; an end without them
			// is a cut, unless the server simply closes (some
			// OpenAI-compatible servers do after the usage chunk).
			if _, ok := s.tr.(openAIStream); ok && s.asm.Started() {
				return nil, true, nil
			}
		}
		if errors.Is(err, ErrEventTooLarge) {
			return nil, false, fmt.Errorf("provider %s: %w", s.rt.Provider, err)
		}
		return nil, false, transportError(s.ctx, s.rt, err)
	}
	chunks, done, err = s.tr.event(ev)
	if err != nil {
		return nil, false, fmt.Errorf("provider %s: %s", s.rt.Provider, scrub(err.Error(), s.rt.Key))
	}
	for _, c := range chunks {
		s.asm.Add(c)
	}
	return chunks, done, nil
}

// Answer is the answer assembled from the chunks Next returned so far.
func (s *Stream) Answer() Answer { return answerOf(&s.asm) }

// Run passes each unified chunk to emit as it arrives, and returns the
// assembled answer; it closes the stream. An emit error (the client went
// away) ends the call upstream at once.
func (s *Stream) Run(emit func(chunk []byte) error) (Answer, error) {
	defer s.Close()
	for {
		chunks, done, err := s.Next()
		for _, c := range chunks {
			if err := emit(c); err != nil {
				return s.Answer(), err
			}
		}
		if err != nil || done {
			return s.Answer(), err
		}
	}
}
