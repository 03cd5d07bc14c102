package activator

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/valyala/fasthttp"
)

// The Open Inference Protocol (KServe's V2 REST protocol, which Triton and
// MLServer clients speak), in front of the same routing as MLflow
// invocations:
//
//	GET  /v2/health/live, /v2/health/ready
//	GET  /v2/models/{endpoint}, /v2/models/{endpoint}/ready
//	POST /v2/models/{endpoint}/infer                        traffic split applies
//	POST /v2/models/{endpoint}/versions/{served}/infer      pinned to a served entity
//
// An infer request's tensors become an MLflow body (1-D tensors as named
// columns, one 2-D tensor as rows), which is routed, forwarded and captured
// like any invocation; the worker's predictions come back as tensors.
// Errors are the protocol's {"error": "..."}, with the status API.md gives.

var v2Prefix = []byte("/v2/")

// oip answers a request under /v2/.
func (a *Activator) oip(ctx *fasthttp.RequestCtx, raw []byte, start time.Time, id []byte) {
	seg := bytes.Split(bytes.TrimSuffix(raw[len(v2Prefix):], []byte("/")), []byte("/"))
	for k, s := range seg {
		u, ok := unescapeSegment(s)
		if !ok || len(u) == 0 {
			a.notFound.Inc()
			oipError(ctx, fasthttp.StatusNotFound, fmt.Sprintf("no such path %q", clip(raw)))
			return
		}
		seg[k] = u
	}
	t := a.table.Load()
	get := ctx.IsGet()
	switch {
	case len(seg) == 2 && string(seg[0]) == "health" && (string(seg[1]) == "live" || string(seg[1]) == "ready") && get:
		// Live while this process answers; ready once it has a route table.
		if string(seg[1]) == "ready" && t == nil {
			oipError(ctx, fasthttp.StatusServiceUnavailable, "the activator has not received its route table yet")
			return
		}
		ctx.SetStatusCode(fasthttp.StatusOK)
		return
	case len(seg) < 2 || string(seg[0]) != "models":
		a.notFound.Inc()
		oipError(ctx, fasthttp.StatusNotFound, fmt.Sprintf("no such path %q; inference goes to /v2/models/{endpoint}/infer", clip(raw)))
		return
	}
	if t == nil {
		oipError(ctx, fasthttp.StatusServiceUnavailable, "the activator has not received its route table yet; retry later")
		return
	}
	if d := a.authorize(ctx, seg[1]); d != nil {
		oipError(ctx, d.status, d.err.Message)
		return
	}
	ep := t.endpoints[string(seg[1])]
	if ep == nil {
		a.notFound.Inc()
		oipError(ctx, fasthttp.StatusNotFound, fmt.Sprintf("model %s does not exist", clip(seg[1])))
		return
	}
	rest := seg[2:]
	var served []byte
	if len(rest) >= 2 && string(rest[0]) == "versions" {
		served, rest = rest[1], rest[2:]
	}
	switch {
	case len(rest) == 0 && get:
		oipMetadata(ctx, ep, served)
		return
	case len(rest) == 1 && string(rest[0]) == "ready" && get:
		oipReady(ctx, ep, served)
		return
	case len(rest) == 1 && string(rest[0]) == "infer":
		if served != nil && ep.entities[string(served)] == nil {
			a.notFound.Inc()
			oipError(ctx, fasthttp.StatusNotFound, fmt.Sprintf("model %s has no version %s", ep.name, clip(served)))
			return
		}
		if !ctx.IsPost() {
			ctx.Response.Header.Set(fasthttp.HeaderAllow, fasthttp.MethodPost)
			oipError(ctx, fasthttp.StatusMethodNotAllowed, fmt.Sprintf("method %s is not allowed; infer is POST", ctx.Method()))
			return
		}
	default:
		a.notFound.Inc()
		oipError(ctx, fasthttp.StatusNotFound, fmt.Sprintf("no such path %q", clip(raw)))
		return
	}

	release, ok := a.readBody(ctx)
	defer release()
	var req *oipRequest
	if ok {
		if len(ctx.Request.Header.ContentEncoding()) > 0 {
			oipError(ctx, fasthttp.StatusUnsupportedMediaType, "compressed inference requests are not supported; send the JSON as it is")
			ok = false
		} else {
			var body []byte
			var err error
			req, body, err = translateInfer(ctx.PostBody())
			if err != nil {
				oipError(ctx, fasthttp.StatusBadRequest, err.Error())
				ok = false
			} else {
				ctx.Request.SetBody(body)
				ctx.Request.Header.SetContentType("application/json")
			}
		}
	}
	a.serve(ctx, ep, served, id, start, ok)
	oipAnswer(ctx, ep, req)
}

// oipRequest is the part of an infer request the answer repeats.
type oipRequest struct {
	ID string
}

// oipTensor is one input or output tensor.
type oipTensor struct {
	Name     string `json:"name"`
	Shape    []int  `json:"shape"`
	Datatype string `json:"datatype"`
	Data     any    `json:"data"`
}

// translateInfer turns an infer body into an MLflow scoring body: 1-D
// tensors (shape [n] or [n, 1]) become the named columns of "inputs", a
// single 2-D tensor becomes rows of "instances".
func translateInfer(body []byte) (*oipRequest, []byte, error) {
	var in struct {
		ID         string          `json:"id"`
		Inputs     []oipTensor     `json:"inputs"`
		Outputs    json.RawMessage `json:"outputs"`    // all outputs are returned
		Parameters json.RawMessage `json:"parameters"` // none are taken yet
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return nil, nil, fmt.Errorf("the body is not an inference request: %v", err)
	}
	if len(in.Inputs) == 0 {
		return nil, nil, fmt.Errorf("inputs is empty; send at least one tensor")
	}
	req := &oipRequest{ID: in.ID}
	type column struct {
		name string
		vals []any
	}
	var cols []column
	for k, t := range in.Inputs {
		where := fmt.Sprintf("inputs[%d]", k)
		if t.Name != "" {
			where = fmt.Sprintf("input %q", clip([]byte(t.Name)))
		}
		vals, err := flatten(t, where)
		if err != nil {
			return nil, nil, err
		}
		switch {
		case len(t.Shape) == 1 || len(t.Shape) == 2 && t.Shape[1] == 1:
			if t.Name == "" {
				return nil, nil, fmt.Errorf("%s has no name; 1-D inputs are columns, matched by name", where)
			}
			cols = append(cols, column{t.Name, vals})
		case len(t.Shape) == 2:
			if len(in.Inputs) > 1 {
				return nil, nil, fmt.Errorf("%s is 2-D: send one 2-D tensor (rows of features) or several 1-D ones (columns), not both", where)
			}
			rows := make([][]any, t.Shape[0])
			for r := range rows {
				rows[r] = vals[r*t.Shape[1] : (r+1)*t.Shape[1]]
			}
			out, err := json.Marshal(map[string]any{"instances": rows})
			return req, out, err
		default:
			return nil, nil, fmt.Errorf("%s has shape %v; send 1-D columns or one 2-D tensor", where, t.Shape)
		}
	}
	// Columns as an ordered object: the worker matches them by name.
	var b bytes.Buffer
	b.WriteString(`{"inputs":{`)
	for k, c := range cols {
		if k > 0 {
			b.WriteByte(',')
		}
		name, _ := json.Marshal(c.name)
		vals, err := json.Marshal(c.vals)
		if err != nil {
			return nil, nil, err
		}
		b.Write(name)
		b.WriteByte(':')
		b.Write(vals)
	}
	b.WriteString("}}")
	return req, b.Bytes(), nil
}

// flatten checks a tensor's shape and datatype against its data, which may
// be flat (row-major) or nested, and returns the values flat.
func flatten(t oipTensor, where string) ([]any, error) {
	n := 1
	for _, d := range t.Shape {
		if d < 0 || d > 1<<24 || n*d > 1<<24 {
			return nil, fmt.Errorf("%s has shape %v; dimensions must be 0 to %d elements in all", where, t.Shape, 1<<24)
		}
		n *= d
	}
	if len(t.Shape) == 0 {
		return nil, fmt.Errorf("%s has no shape", where)
	}
	var vals []any
	var walk func(v any) error
	walk = func(v any) error {
		if l, ok := v.([]any); ok {
			for _, e := range l {
				if err := walk(e); err != nil {
					return err
				}
			}
			return nil
		}
		if len(vals) == n {
			return fmt.Errorf("%s has more than the %d values its shape %v holds", where, n, t.Shape)
		}
		vals = append(vals, v)
		return nil
	}
	if err := walk(t.Data); err != nil {
		return nil, err
	}
	if len(vals) != n {
		return nil, fmt.Errorf("%s has %d values; its shape %v holds %d", where, len(vals), t.Shape, n)
	}
	for k, v := range vals {
		if err := checkDatatype(t.Datatype, v); err != nil {
			return nil, fmt.Errorf("%s value %d: %v", where, k, err)
		}
	}
	return vals, nil
}

// checkDatatype checks one value. null is a missing value of any type, a
// Gantry extension: the protocol has none, and MLflow models take them.
func checkDatatype(dt string, v any) error {
	if v == nil {
		return nil
	}
	switch dt {
	case "BOOL":
		if _, ok := v.(bool); !ok {
			return fmt.Errorf("%v is not a boolean; the datatype is BOOL", v)
		}
	case "BYTES":
		if _, ok := v.(string); !ok {
			return fmt.Errorf("%v is not a string; the datatype is BYTES", v)
		}
	case "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64":
		n, ok := v.(json.Number)
		if !ok {
			return fmt.Errorf("%v is not a number; the datatype is %s", v, dt)
		}
		if _, err := strconv.ParseInt(string(n), 10, 64); err != nil {
			if _, err := strconv.ParseUint(string(n), 10, 64); err != nil {
				return fmt.Errorf("%s is not an integer; the datatype is %s", n, dt)
			}
		}
	case "FP16", "FP32", "FP64":
		n, ok := v.(json.Number)
		if !ok {
			return fmt.Errorf("%v is not a number; the datatype is %s", v, dt)
		}
		if x, err := strconv.ParseFloat(string(n), 64); err != nil || math.IsInf(x, 0) {
			return fmt.Errorf("%s is not a finite number", n)
		}
	default:
		return fmt.Errorf("datatype %q is not one of BOOL, INT8-64, UINT8-64, FP16-64, BYTES", dt)
	}
	return nil
}

// oipAnswer rewrites the worker's (or the activator's) answer in ctx into
// the protocol's: predictions become output tensors, an API.md error
// becomes {"error": message} with its status.
func oipAnswer(ctx *fasthttp.RequestCtx, ep *endpoint, req *oipRequest) {
	body := ctx.Response.Body()
	if req == nil && ctx.Response.StatusCode() == fasthttp.StatusOK {
		return // not reached: a request that was not translated has an error
	}
	if ctx.Response.StatusCode() != fasthttp.StatusOK {
		var e api.Error
		if json.Unmarshal(body, &e) == nil && e.Message != "" {
			oipError(ctx, ctx.Response.StatusCode(), e.Message)
		}
		return // already the protocol's, or not JSON to rewrite
	}
	var out struct {
		Predictions any `json:"predictions"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&out); err != nil {
		oipError(ctx, fasthttp.StatusInternalServerError, "the model's answer is not JSON predictions")
		return
	}
	outputs, err := predictionTensors(out.Predictions)
	if err != nil {
		oipError(ctx, fasthttp.StatusInternalServerError, err.Error())
		return
	}
	resp := map[string]any{
		"model_name":    ep.name,
		"model_version": string(ctx.Response.Header.Peek(headerServedModel)),
		"outputs":       outputs,
	}
	if req.ID != "" {
		resp["id"] = req.ID
	}
	b, err := json.Marshal(resp)
	if err != nil {
		oipError(ctx, fasthttp.StatusInternalServerError, err.Error())
		return
	}
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}

// predictionTensors turns MLflow predictions into output tensors: a list of
// values is one tensor "predictions" of shape [n]; a list of equal-length
// lists one of shape [n, k]; a list of records one tensor per field; an
// object of columns one tensor per column.
func predictionTensors(p any) ([]oipTensor, error) {
	switch p := p.(type) {
	case []any:
		if len(p) > 0 {
			if _, ok := p[0].(map[string]any); ok {
				return recordTensors(p)
			}
			if first, ok := p[0].([]any); ok {
				k := len(first)
				flat := make([]any, 0, len(p)*k)
				for _, row := range p {
					r, ok := row.([]any)
					if !ok || len(r) != k {
						return nil, fmt.Errorf("the model's predictions are rows of different lengths")
					}
					flat = append(flat, r...)
				}
				return []oipTensor{{Name: "predictions", Shape: []int{len(p), k}, Datatype: datatypeOf(flat), Data: flat}}, nil
			}
		}
		return []oipTensor{{Name: "predictions", Shape: []int{len(p)}, Datatype: datatypeOf(p), Data: p}}, nil
	case map[string]any:
		var out []oipTensor
		for _, name := range sortedKeys(p) {
			col, ok := p[name].([]any)
			if !ok {
				col = []any{p[name]}
			}
			out = append(out, oipTensor{Name: name, Shape: []int{len(col)}, Datatype: datatypeOf(col), Data: col})
		}
		return out, nil
	}
	return []oipTensor{{Name: "predictions", Shape: []int{1}, Datatype: datatypeOf([]any{p}), Data: []any{p}}}, nil
}

// recordTensors makes one tensor per field of a list of records (a
// DataFrame's answer), in the order of the first record's fields.
func recordTensors(rows []any) ([]oipTensor, error) {
	first := rows[0].(map[string]any)
	names := sortedKeys(first)
	out := make([]oipTensor, len(names))
	for k, name := range names {
		col := make([]any, len(rows))
		for r, row := range rows {
			m, ok := row.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("the model's predictions mix records and values")
			}
			col[r] = m[name]
		}
		out[k] = oipTensor{Name: name, Shape: []int{len(rows)}, Datatype: datatypeOf(col), Data: col}
	}
	return out, nil
}

// datatypeOf names the tensor type of JSON values: BOOL, INT64, FP64 or
// BYTES (strings, and anything mixed).
func datatypeOf(vals []any) string {
	dt := ""
	for _, v := range vals {
		var t string
		switch v := v.(type) {
		case bool:
			t = "BOOL"
		case json.Number:
			t = "INT64"
			if _, err := strconv.ParseInt(string(v), 10, 64); err != nil {
				t = "FP64"
			}
		case nil:
			t = "FP64" // null: a NaN in a float output
		default:
			t = "BYTES"
		}
		switch {
		case dt == "" || dt == t:
			dt = t
		case (dt == "INT64" && t == "FP64") || (dt == "FP64" && t == "INT64"):
			dt = "FP64"
		default:
			return "BYTES"
		}
	}
	if dt == "" {
		return "FP64"
	}
	return dt
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	// Numeric names ("0", "1", ... from a DataFrame) in number order.
	slices.SortFunc(keys, func(a, b string) int {
		x, errA := strconv.Atoi(a)
		y, errB := strconv.Atoi(b)
		if errA == nil && errB == nil {
			return cmp.Compare(x, y)
		}
		return strings.Compare(a, b)
	})
	return keys
}

// oipMetadata answers GET /v2/models/{endpoint}: the endpoint's name, its
// served entities as versions, the platform, and the inputs and outputs
// of the model's signature: the pinned entity's, else that of the first
// entity taking traffic.
func oipMetadata(ctx *fasthttp.RequestCtx, ep *endpoint, served []byte) {
	versions := make([]string, 0, len(ep.entities))
	for name := range ep.entities {
		versions = append(versions, name)
	}
	slices.Sort(versions)
	var en *entity
	if served != nil {
		if en = ep.entities[string(served)]; en == nil {
			oipError(ctx, fasthttp.StatusNotFound, fmt.Sprintf("model %s has no version %s", ep.name, clip(served)))
			return
		}
		versions = []string{en.name}
	} else if len(ep.split) > 0 {
		en = ep.split[0].en
	}
	md := map[string]any{"name": ep.name, "versions": versions, "platform": "gantry"}
	if en != nil && en.signature != nil {
		if in := tensorMeta(en.signature.Inputs, "input"); in != nil {
			md["inputs"] = in
		}
		if out := tensorMeta(en.signature.Outputs, "predictions"); out != nil {
			md["outputs"] = out
		}
	}
	b, _ := json.Marshal(md)
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}

// tensorMeta describes signature columns as the protocol's tensor
// metadata: one 1-D tensor a column, as infer takes and answers them.
// Tensor specs are left out (nil): the route table does not carry their
// dtype and shape.
func tensorMeta(cols []api.ColSpec, unnamed string) []map[string]any {
	var out []map[string]any
	for k, c := range cols {
		if c.Type == "tensor" {
			return nil
		}
		name := c.Name
		if name == "" {
			name = unnamed
			if len(cols) > 1 {
				name = fmt.Sprintf("%s_%d", unnamed, k)
			}
		}
		out = append(out, map[string]any{"name": name, "datatype": oipDatatype(c.Type), "shape": []int{-1}})
	}
	return out
}

// oipDatatype maps an MLflow column type to the protocol's datatype.
func oipDatatype(t string) string {
	switch t {
	case "double":
		return "FP64"
	case "float":
		return "FP32"
	case "long":
		return "INT64"
	case "integer":
		return "INT32"
	case "boolean":
		return "BOOL"
	}
	return "BYTES" // string, binary, datetime
}

// oipReady answers GET /v2/models/{endpoint}/ready: 200 when a served
// entity that takes its traffic (or the pinned one) has not failed; one
// scaled to zero is ready, as a request to it wakes it.
func oipReady(ctx *fasthttp.RequestCtx, ep *endpoint, served []byte) {
	var cands []*entity
	if served != nil {
		en := ep.entities[string(served)]
		if en == nil {
			oipError(ctx, fasthttp.StatusNotFound, fmt.Sprintf("model %s has no version %s", ep.name, clip(served)))
			return
		}
		cands = []*entity{en}
	} else {
		for _, s := range ep.split {
			cands = append(cands, s.en)
		}
	}
	for _, en := range cands {
		if en.state != api.DeploymentFailed && en.state != api.DeploymentAborted {
			ctx.SetStatusCode(fasthttp.StatusOK)
			return
		}
	}
	oipError(ctx, fasthttp.StatusServiceUnavailable, fmt.Sprintf("model %s has no served entity that can answer", ep.name))
}

// oipError writes the protocol's error body.
func oipError(ctx *fasthttp.RequestCtx, status int, msg string) {
	b, _ := json.Marshal(map[string]string{"error": msg})
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}
