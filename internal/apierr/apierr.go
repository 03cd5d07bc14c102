// Package apierr writes API.md's error answers the same way on every
// component, over net/http and fasthttp: the status that goes with the
// code, the body {"error_code": ..., "message": ...}, and Retry-After on
// the answers a client should retry (503 and 429).
package apierr

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/gantry/gantry/api"
	"github.com/valyala/fasthttp"
)

// retryAfter is the wait, in seconds, that Retry-After suggests: the
// refusals that carry it (a full queue, a memory bound, a dependency that
// is restarting) clear in about that time.
const retryAfter = "1"

// From returns err as an *api.Error; an error that is not one is internal.
func From(err error) *api.Error {
	var ae *api.Error
	if !errors.As(err, &ae) {
		ae = api.Errorf(api.ErrInternal, "%v", err)
	}
	return ae
}

// Answer is what to write for an error.
type Answer struct {
	Status int
	Body   []byte
	// RetryAfter is the Retry-After header's value, or "".
	RetryAfter string
}

// For returns the answer to err with the status of its code.
func For(err error) Answer {
	ae := From(err)
	return WithStatus(api.HTTPStatus(ae.Code), ae)
}

// WithStatus returns the answer to e with status, for the few answers
// whose status is not their code's (408, 431).
func WithStatus(status int, e *api.Error) Answer {
	body, err := json.Marshal(e)
	if err != nil { // two strings always marshal
		panic(err)
	}
	a := Answer{Status: status, Body: body}
	if status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests {
		a.RetryAfter = retryAfter
	}
	return a
}

// Write writes err's answer to w and returns its status.
func Write(w http.ResponseWriter, err error) int {
	return For(err).Write(w)
}

// Write writes a to w and returns its status.
func (a Answer) Write(w http.ResponseWriter) int {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(a.Body)))
	if a.RetryAfter != "" {
		h.Set("Retry-After", a.RetryAfter)
	}
	w.WriteHeader(a.Status)
	w.Write(a.Body)
	return a.Status
}

// WriteFast writes err's answer to a fasthttp request.
func WriteFast(ctx *fasthttp.RequestCtx, err error) {
	For(err).WriteFast(ctx)
}

// WriteFast writes a to a fasthttp request.
func (a Answer) WriteFast(ctx *fasthttp.RequestCtx) {
	if a.RetryAfter != "" {
		ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, a.RetryAfter)
	}
	ctx.SetStatusCode(a.Status)
	ctx.SetContentType("application/json")
	ctx.SetBody(a.Body)
}
