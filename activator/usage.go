package activator

import (
	"time"

	"github.com/gantry/gantry/loggers"
	"github.com/gantry/gantry/openai"
	"github.com/valyala/fasthttp"
)

// Usage tracking (ai_gateway.usage_tracking_config): an endpoint that
// enables it gets a loggers.UsageRow per answered invocation, through the
// capture producer (Config.Capture, when it takes usage rows: the Kafka
// one does), whatever its inference table. Tokens are those of the
// answer's usage for external entities, estimated as (length + 1) / 4 of
// the request and answer bodies where the provider gives none, and 0 for
// model versions.

// usageCapturer is a Capturer that takes usage rows (*capture.Capturer).
type usageCapturer interface {
	Usage(u *loggers.UsageRow) bool
}

// trackUsage writes the usage row of an answered invocation of ep, if ep
// tracks usage. request and answer are the bodies; llm says whether an
// external entity answered (tokens count).
func (a *Activator) trackUsage(ep *endpoint, u loggers.UsageRow, request, answer []byte, llm bool) {
	if !ep.usage || a.cfg.Capture == nil {
		return
	}
	uc, ok := a.cfg.Capture.(usageCapturer)
	if !ok {
		return
	}
	if llm {
		u.InputTokens, u.OutputTokens = tokensOf(request, answer)
	}
	// The stream writer's row has them already (from the decoded
	// request: its body may be gone); others are read off the body,
	// skipping its rows (loggers.ClientRequestID).
	if u.ClientRequestID == "" {
		u.ClientRequestID = loggers.ClientRequestID(request)
	}
	if u.UsageContext == nil {
		u.UsageContext = loggers.UsageContext(request)
	}
	uc.Usage(&u)
}

// tokensOf reads the answer's usage, else estimates.
func tokensOf(request, answer []byte) (in, out int64) {
	u, err := openai.UsageOf(answer)
	if err != nil || u == nil {
		return int64(len(request)+1) / 4, int64(len(answer)+1) / 4
	}
	if u.CompletionTokens != nil {
		out = int64(*u.CompletionTokens)
	}
	return int64(u.PromptTokens), out
}

// usageOf is the row of a whole answer in ctx.
func usageOf(ctx *fasthttp.RequestCtx, ep *endpoint, id []byte, start time.Time) loggers.UsageRow {
	return loggers.UsageRow{
		RequestID: string(id), TimestampMs: start.UnixMilli(), Endpoint: ep.name,
		ServedEntity: string(ctx.Response.Header.Peek(headerServedModel)), Requester: requester(ctx),
		StatusCode: int32(ctx.Response.StatusCode()),
	}
}
