package apierr

import (
	"encoding/json"
	"errors"
	"net/http/httptest"
	"testing"

	"github.com/gantry/gantry/api"
	"github.com/valyala/fasthttp"
)

func TestAnswers(t *testing.T) {
	for _, c := range []struct {
		err        error
		status     int
		code       string
		retryAfter string
	}{
		{api.Errorf(api.ErrInvalidParameterValue, "name: bad"), 400, api.ErrInvalidParameterValue, ""},
		{api.Errorf(api.ErrTemporarilyUnavailable, "later"), 503, api.ErrTemporarilyUnavailable, "1"},
		{api.Errorf(api.ErrRequestLimitExceeded, "slow down"), 429, api.ErrRequestLimitExceeded, "1"},
		{api.Errorf(api.ErrDeadlineExceeded, "too slow"), 504, api.ErrDeadlineExceeded, ""},
		{errors.New("disk on fire"), 500, api.ErrInternal, ""},
		// Control bytes and quotes in a message stay valid JSON.
		{api.Errorf(api.ErrMalformedRequest, "bad \x00\x1f\"\\ byte"), 400, api.ErrMalformedRequest, ""},
	} {
		rec := httptest.NewRecorder()
		if got := Write(rec, c.err); got != c.status || rec.Code != c.status {
			t.Errorf("%v: status %d (wrote %d), want %d", c.err, got, rec.Code, c.status)
		}
		var e api.Error
		if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Code != c.code || e.Message == "" {
			t.Errorf("%v: body %q (%v), want code %s", c.err, rec.Body, err, c.code)
		}
		if got := rec.Header().Get("Retry-After"); got != c.retryAfter {
			t.Errorf("%v: Retry-After %q, want %q", c.err, got, c.retryAfter)
		}
		if rec.Header().Get("Content-Type") != "application/json" {
			t.Errorf("%v: Content-Type %q", c.err, rec.Header().Get("Content-Type"))
		}

		// The fasthttp answer is the same.
		var ctx fasthttp.RequestCtx
		WriteFast(&ctx, c.err)
		if ctx.Response.StatusCode() != c.status || string(ctx.Response.Body()) != rec.Body.String() ||
			string(ctx.Response.Header.Peek("Retry-After")) != c.retryAfter {
			t.Errorf("%v: fasthttp answer %d %q Retry-After %q differs from net/http's", c.err,
				ctx.Response.StatusCode(), ctx.Response.Body(), ctx.Response.Header.Peek("Retry-After"))
		}
	}
}

func TestWithStatusKeepsTheCode(t *testing.T) {
	a := WithStatus(408, api.Errorf(api.ErrMalformedRequest, "the body did not arrive in time"))
	var e api.Error
	if a.Status != 408 || json.Unmarshal(a.Body, &e) != nil || e.Code != api.ErrMalformedRequest || a.RetryAfter != "" {
		t.Errorf("WithStatus = %+v", a)
	}
}
