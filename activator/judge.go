package activator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/external"
	"github.com/valyala/fasthttp"
)

// Judged guardrails (safety, valid_topics) ask a judge model: the served
// entity that ai_gateway.guardrails.judge_entity names, a chat LLM entity
// of the same endpoint, with a deadline of Config.JudgeTimeout (within
// the request's). An external one is called with the entity's own key; a
// served one (a chat model on an LLM runtime) through the same slots,
// queue and cold start as any request to its replicas. The judge is
// asked one question per guardrail and must answer one word:
//
//   - input safety: the request's text, SAFE or UNSAFE; before any
//     provider sees the request.
//   - input valid_topics: the request's text and the topics, YES or NO.
//   - output safety: the whole answer's text, SAFE or UNSAFE, before the
//     client sees it. A stream cannot be judged before it is sent, so a
//     streamed request to an endpoint that judges its output is a 400.
//
// UNSAFE or NO answers 400 naming the guardrail. Any other outcome (the
// judge is not served, fails, runs past its deadline, or answers another
// word) fails closed: 503 saying which judge did what, and nothing is sent
// on (input) or returned (output), since a guardrail that lapses when its
// judge is down protects nothing. Each decision is a GUARDRAIL:... entry
// of the record (BLOCK, PASS is not recorded, JUDGE_ERROR). The judge's
// tokens are the operator's, not the caller's: they are in no usage row.

// DefaultJudgeTimeout bounds a judge's answer.
const DefaultJudgeTimeout = 10 * time.Second

// judge is an endpoint's judged guardrails.
type judge struct {
	// name is guardrails.judge_entity; en is it in this table, nil when
	// the endpoint no longer serves it (every judged call then fails
	// closed).
	name string
	en   *entity
	// inSafety, outSafety and topics are what is judged.
	inSafety, outSafety bool
	topics              []string
}

// newJudge is g's judge for ep, nil when g judges nothing.
func newJudge(g *api.Guardrails, ep *endpoint) *judge {
	j := &judge{name: g.JudgeEntity}
	if g.Input != nil {
		j.inSafety, j.topics = g.Input.Safety, g.Input.ValidTopics
	}
	if g.Output != nil {
		j.outSafety = g.Output.Safety
	}
	if !j.inSafety && !j.outSafety && len(j.topics) == 0 {
		return nil
	}
	if en := ep.entities[j.name]; en != nil && (en.external != nil && en.external.Task == api.TaskChat || en.external == nil && en.task == api.TaskChat) {
		j.en = en
		en.judge = true
	}
	return j
}

const (
	safetyPrompt = "You are a content safety classifier. Reply with exactly one word: UNSAFE if the text below asks for or contains " +
		"violence, weapons, self-harm, sexual content involving minors, hate, harassment or other illegal activity; SAFE otherwise."
	topicsPrompt = "You are a topic classifier. The allowed topics are: %s. Reply with exactly one word: YES if the user's request " +
		"below is about one of the allowed topics, NO otherwise."
)

// judgeInput applies ep's judged input guardrails to req; false when it
// answered (blocked, or the judge failed).
func (a *Activator) judgeInput(ctx *fasthttp.RequestCtx, ep *endpoint, req *external.Request, deadline time.Time) bool {
	j := ep.judge
	if j == nil {
		return true
	}
	if j.outSafety && req.Stream {
		fail(ctx, api.ErrInvalidParameterValue, "stream: endpoint %s judges the safety of whole answers before returning them; send stream: false", ep.name)
		return false
	}
	text := requestText(req)
	if j.inSafety && !a.judged(ctx, ep, "input", "safety", safetyPrompt, text, "SAFE", "UNSAFE", deadline,
		"input guardrail safety: the judge found the request unsafe") {
		return false
	}
	if len(j.topics) > 0 && !a.judged(ctx, ep, "input", "valid_topics", strings.Replace(topicsPrompt, "%s", strings.Join(j.topics, ", "), 1), text, "YES", "NO", deadline,
		"input guardrail valid_topics: the request is not about "+strings.Join(j.topics, ", ")) {
		return false
	}
	return true
}

// judgeOutput applies ep's output safety to a whole unified answer; false
// when it answered.
func (a *Activator) judgeOutput(ctx *fasthttp.RequestCtx, ep *endpoint, body []byte, deadline time.Time) bool {
	j := ep.judge
	if j == nil || !j.outSafety {
		return true
	}
	return a.judged(ctx, ep, "output", "safety", safetyPrompt, answerText(body), "SAFE", "UNSAFE", deadline,
		"output guardrail safety: the judge found the answer unsafe")
}

// judged asks ep's judge about text with the system prompt; pass and
// block are the words it may answer. It answers ctx (400 with blocked, or
// 503) and reports false unless the judge said pass.
func (a *Activator) judged(ctx *fasthttp.RequestCtx, ep *endpoint, side, guard, system, text, pass, block string, deadline time.Time, blocked string) bool {
	code := "GUARDRAIL:" + side + "." + guard + "="
	word, err := a.askJudge(ep.judge, system, text, deadline)
	switch {
	case err == nil && word == pass:
		return true
	case err == nil && word == block:
		noteGuard(ctx, code+"BLOCK")
		fail(ctx, api.ErrInvalidParameterValue, "%s", blocked)
		return false
	case err == nil:
		err = errors.New("it answered " + clip([]byte(word)) + ", neither " + pass + " nor " + block)
	}
	noteGuard(ctx, code+"JUDGE_ERROR")
	fail(ctx, api.ErrTemporarilyUnavailable, "%s guardrail %s of endpoint %s: the judge %s failed (%v), so the %s was not %s; retry later",
		side, guard, ep.name, ep.judge.name, err, map[string]string{"input": "request", "output": "answer"}[side],
		map[string]string{"input": "sent on", "output": "returned"}[side])
	return false
}

// askJudge sends j one question and returns the first word of its
// answer, upper-cased and without punctuation.
func (a *Activator) askJudge(j *judge, system, text string, deadline time.Time) (string, error) {
	if j.en == nil {
		return "", errors.New("it is not a chat LLM entity this endpoint serves")
	}
	if d := time.Now().Add(a.cfg.JudgeTimeout); d.Before(deadline) {
		deadline = d
	}
	maxTokens, zero := 4, 0.0
	q := &external.Request{Task: api.TaskChat, MaxTokens: &maxTokens, Temperature: &zero,
		Messages: []external.Message{{Role: "system", Content: system}, {Role: "user", Content: text}}}
	var answer []byte
	if j.en.external == nil {
		var err error
		if answer, err = a.askServedJudge(j.en, q, deadline); err != nil {
			return "", err
		}
	} else {
		cctx, cancel := context.WithDeadline(context.Background(), deadline)
		defer cancel()
		ans, err := a.cfg.External.Call(cctx, j.en.external, q)
		if err != nil {
			if cctx.Err() != nil {
				return "", errors.New("no answer within its deadline")
			}
			return "", errorOf(err)
		}
		answer = ans.Body
	}
	words := strings.FieldsFunc(answerText(answer), func(r rune) bool { return !unicode.IsLetter(r) })
	if len(words) == 0 {
		return "", errors.New("it answered no word")
	}
	return strings.ToUpper(words[0]), nil
}

// requestText is what a judge reads of a request: its messages as
// "role: content" lines, or its prompts or inputs.
func requestText(req *external.Request) string {
	var b strings.Builder
	for _, m := range req.Messages {
		b.WriteString(m.Role + ": " + m.Content + "\n")
	}
	for _, p := range req.Prompt {
		b.WriteString(p + "\n")
	}
	for _, p := range req.Input {
		b.WriteString(p + "\n")
	}
	return b.String()
}

// answerText is the text of a whole unified answer's choices.
func answerText(body []byte) string {
	var ans struct {
		Choices []struct {
			Message *struct {
				Content string `json:"content"`
			} `json:"message"`
			Text string `json:"text"`
		} `json:"choices"`
	}
	json.Unmarshal(body, &ans)
	var b strings.Builder
	for _, c := range ans.Choices {
		if c.Message != nil {
			b.WriteString(c.Message.Content + "\n")
		} else {
			b.WriteString(c.Text + "\n")
		}
	}
	return b.String()
}

// askServedJudge sends q to en's replicas as an invocation, waiting for a
// slot (and a cold start) as any request does, until deadline, and
// returns the answer's body.
func (a *Activator) askServedJudge(en *entity, q *external.Request, deadline time.Time) ([]byte, error) {
	body, err := json.Marshal(struct {
		Messages    []external.Message `json:"messages"`
		MaxTokens   *int               `json:"max_tokens"`
		Temperature *float64           `json:"temperature"`
	}{q.Messages, q.MaxTokens, q.Temperature})
	if err != nil {
		return nil, err
	}
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(fasthttp.MethodPost)
	req.SetRequestURI("/invocations")
	req.Header.SetContentType("application/json")
	req.Header.Set(headerTask, api.TaskChat)
	if en.secret != nil {
		req.Header.SetBytesV(headerWorkerSecret, en.secret)
	}
	req.SetBodyRaw(body)
	a.sendToReplica(en, req, resp, deadline, "judge")
	if resp.StatusCode() != fasthttp.StatusOK {
		var e struct {
			Message string `json:"message"`
		}
		json.Unmarshal(resp.Body(), &e)
		if e.Message == "" {
			e.Message = "status " + strconv.Itoa(resp.StatusCode())
		}
		return nil, errors.New(e.Message)
	}
	return bytes.Clone(resp.Body()), nil
}
