package activator

import (
	"errors"
	"net"
	"slices"
	"sync/atomic"
	"time"

	"github.com/gantry/gantry/activator/queue"
	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/features"
	"github.com/gantry/gantry/guardrail"
	"github.com/gantry/gantry/internal/apierr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// table is an immutable snapshot of one route table, with everything the
// request path needs resolved in advance: replica clients, split weights and
// metric children. Nothing in it changes after Run publishes it, except the
// atomic counters of replicas.
type table struct {
	index     uint64
	endpoints map[string]*endpoint
}

type endpoint struct {
	name string
	// inferenceTable is the inference table ("database.table") that
	// captured invocations go to; empty when capture is off. (table, in
	// this package, is the route table.)
	inferenceTable string
	// asSent logs a request whose features were looked up as the client
	// sent it, not augmented (log_request_as_sent).
	asSent   bool
	entities map[string]*entity // by served entity name
	split    []split            // cumulative weights, in route order
	total    int                // sum of the weights; split[len-1].upTo
	shadows  []shadow           // routes that mirror traffic
	duration prometheus.Observer
	// requests counts answers given before a served entity was chosen,
	// curried down to the code label. Never 200s, so nothing is resolved
	// in advance.
	requests *prometheus.CounterVec
	// fallback (ai_gateway.fallback_config) retries a 429 or 5xx of an
	// external entity on the next external entity of order.
	fallback bool
	// limits are the endpoint's rate limits; each call reserves budget
	// first (ratelimits.go).
	limits []api.RateLimit
	// input and output are the guardrails (ai_gateway.guardrails) of
	// calls to external entities; nil when off (guardrails.go).
	input, output *guardrail.Guard
	// judge asks a judge model for safety and valid_topics (judge.go);
	// nil when the endpoint judges nothing.
	judge *judge
	// usage (ai_gateway.usage_tracking_config) writes a usage row per
	// invocation (usage.go).
	usage bool
	// order is the served entities in the config's order.
	order []*entity
}

// shadow is a shadow route: percent of the requests are mirrored to en.
type shadow struct {
	percent int
	en      *entity
}

// split is one step of the traffic split: a draw below upTo, and not below
// the previous step's upTo, picks en.
type split struct {
	upTo int
	en   *entity
}

type entity struct {
	endpoint string
	name     string
	state    string
	// signature is the model's, for the Open Inference Protocol's
	// metadata; nil when it has none.
	signature *api.Schema
	// secret is the deployment's worker secret, sent to its replicas
	// (headerWorkerSecret); nil when the route table gives none.
	secret []byte
	// ready counts the entity's replicas in this table. A request that
	// finds none is a cold start: it pokes the autoscaler and times the
	// wait in gantry_cold_start_seconds.
	ready    int
	pool     *pool // slots, queue and load; outlives the table
	requests counters
	inFlight prometheus.Gauge
	// queueFull is the 503 for when the queue has no room, built once per
	// table rather than per refused request.
	queueFull apierr.Answer
	// external is set for an external model: the activator calls its
	// provider (external.go) and pool stays empty.
	external *api.ExternalRoute
	// judge marks the endpoint's judge (guardrails.judge_entity): never
	// a fallback for the calls it judges.
	judge bool
	// task is set for a model served by an LLM runtime: its answers may
	// stream (llm.go), and the OpenAI SDK's paths reach it.
	task string
	// features looks features up before the request goes on (or answers
	// it, for a feature-serving entity); featureErr is why a route's spec
	// could not compile.
	features   *features.Plan
	featureErr error
	// shadow is set for the target of a shadow route: it gets mirrored
	// requests only, so a fallback never sends it a client's.
	shadow bool
}

// counters is one label set's requests_total family, curried down to the
// code label, with the common code resolved in advance.
type counters struct {
	vec *prometheus.CounterVec
	ok  prometheus.Counter // code "200"
}

func (c *counters) inc(code int) {
	if code == fasthttp.StatusOK {
		c.ok.Inc()
		return
	}
	c.vec.WithLabelValues(statusText(code)).Inc()
}

// replica is one worker address. It lives as long as some table names its
// address, across table updates.
//
// Its load is counted in the slots of its entity's breaker (queue.Breaker
// picks the replica with the fewest requests in flight), and its health in
// penalty: like fasthttp lbclient's HealthCheck, a failed connection makes
// it rank last for a while, it is never taken out of the set.
type replica struct {
	addr   string
	client *fasthttp.HostClient

	// penalty counts connection failures of the last penalty period; each one
	// is lifted by its own timer. While it is above zero the replica is only
	// picked if no other replica has a free slot.
	penalty atomic.Int32
}

// *replica is what a queue.Breaker balances over. (queue.Backend is a
// constraint, since the breaker compares backends, so there is no
// var _ queue.Backend check; instantiating the breaker checks the same.)
var _ = queue.NewBreaker[*replica]

// maxPenalty bounds the timers one replica can have running
// (fasthttp lbclient's bound).
const maxPenalty = 300

// DoDeadline sends req to the replica.
func (r *replica) DoDeadline(req *fasthttp.Request, resp *fasthttp.Response, deadline time.Time) error {
	req.Header.SetHost(r.addr)
	return r.client.DoDeadline(req, resp, deadline)
}

// Penalized reports a connection failure within the penalty period.
func (r *replica) Penalized() bool { return r.penalty.Load() > 0 }

// penalize makes the pick avoid r for d.
func (r *replica) penalize(d time.Duration) {
	if r.penalty.Add(1) > maxPenalty {
		r.penalty.Add(-1)
		return
	}
	time.AfterFunc(d, func() { r.penalty.Add(-1) })
}

// pick draws a served entity by the traffic split; nil if the endpoint has
// nothing to route to. A request with a sticky key goes where the key's
// hash falls, so the same key meets the same entity while the split stays
// as it is; other requests draw with intN.
func (ep *endpoint) pick(key []byte, intN func(int) int) *entity {
	switch len(ep.split) {
	case 0:
		return nil
	case 1:
		return ep.split[0].en
	}
	var n int
	if len(key) > 0 {
		n = int(fnv1a(key) % uint64(ep.total))
	} else {
		n = intN(ep.total)
	}
	for _, s := range ep.split {
		if n < s.upTo {
			return s.en
		}
	}
	return ep.split[len(ep.split)-1].en
}

// build makes the snapshot of rt and brings the pools of its entities up
// to date: their breakers get the new replicas (waiting requests take new
// slots at once) and failed starts. It reuses the replicas of a.replicas
// and the pools of a.pools, and returns the replicas and pools the new
// table names. Run's goroutine only.
func (a *Activator) build(rt *api.RouteTable) (*table, map[string]*replica, map[poolKey]*pool) {
	m := a.metrics
	t := &table{index: rt.Index, endpoints: make(map[string]*endpoint, len(rt.Endpoints))}
	live := make(map[string]*replica)
	pools := make(map[poolKey]*pool)
	for i := range rt.Endpoints {
		er := &rt.Endpoints[i]
		ep := &endpoint{
			name:           er.Name,
			inferenceTable: er.InferenceTable,
			asSent:         er.LogRequestAsSent,
			entities:       make(map[string]*entity, len(er.Entities)),
			duration:       m.duration.WithLabelValues(er.Name),
			requests:       m.curried(er.Name, ""),
		}
		for j := range er.Entities {
			e := &er.Entities[j]
			var replicas []*replica
			for _, rep := range e.Replicas {
				r := live[rep.Addr]
				if r == nil {
					if r = a.replicas[rep.Addr]; r == nil {
						r = a.newReplica(rep.Addr)
					}
					live[rep.Addr] = r
				}
				if !slices.Contains(replicas, r) {
					replicas = append(replicas, r)
				}
			}
			k := poolKey{deployment: e.Deployment, endpoint: er.Name, name: e.Name}
			p := pools[k]
			if p == nil {
				if p = a.pools[k]; p == nil {
					p = a.newPool(k)
				}
				pools[k] = p
			}
			a.update(p, e, replicas)
			en := &entity{
				endpoint:  er.Name,
				name:      e.Name,
				state:     e.State,
				signature: e.Signature,
				secret:    secretBytes(e.Secret),
				ready:     len(replicas),
				pool:      p,
				requests:  m.counters(er.Name, e.Name),
				inFlight:  m.inFlight.WithLabelValues(er.Name, e.Name),
				queueFull: apierr.For(api.Errorf(api.ErrTemporarilyUnavailable,
					"served entity %s of endpoint %s has too many requests waiting for a replica; retry later", e.Name, er.Name)),
			}
			en.external = e.External
			en.task = e.Task
			if e.Features != nil {
				en.features, en.featureErr = a.featurePlan(er.Name, e.Name, e.Features)
			}
			ep.entities[e.Name] = en
			ep.order = append(ep.order, en)
		}
		ep.fallback = er.Fallback
		ep.limits = er.RateLimits
		ep.usage = er.Usage
		if g := er.Guardrails; g != nil {
			ep.input, ep.output = guardrail.New("input", g.Input), guardrail.New("output", g.Output)
			ep.judge = newJudge(g, ep)
		}
		ep.split, ep.total = a.splitOf(er, ep)
		t.endpoints[er.Name] = ep
	}
	return t, live, pools
}

// splitOf turns the endpoint's routes into cumulative weights. Without
// routes, traffic splits evenly over the served entities. A route that
// names no served entity of the endpoint is skipped (and logged): the
// scheduler validates routes, so this is a transient inconsistency.
func (a *Activator) splitOf(er *api.EndpointRoute, ep *endpoint) ([]split, int) {
	var s []split
	total := 0
	if len(er.Routes) == 0 {
		for j := range er.Entities {
			total++
			s = append(s, split{upTo: total, en: ep.entities[er.Entities[j].Name]})
		}
		return s, total
	}
	for _, r := range er.Routes {
		en := ep.entities[r.ServedModelName]
		if en == nil {
			a.log.Warn("route names an unknown served entity", "endpoint", er.Name, "served_entity", r.ServedModelName)
			continue
		}
		if r.TrafficPercentage <= 0 {
			continue
		}
		if r.Shadow {
			en.shadow = true
			ep.shadows = append(ep.shadows, shadow{percent: r.TrafficPercentage, en: en})
			continue
		}
		total += r.TrafficPercentage
		s = append(s, split{upTo: total, en: en})
	}
	return s, total
}

// Connecting to a replica may take this long at most, whatever time the
// request has left: a replica that drops SYNs should cost a retry on another
// replica, not the whole execution timeout.
const maxDialTimeout = 3 * time.Second

func (a *Activator) newReplica(addr string) *replica {
	return &replica{
		addr: addr,
		client: &fasthttp.HostClient{
			Addr:        addr,
			DialTimeout: dialReplica,
			// Wait for a free connection rather than fail at once; the
			// request's deadline still bounds the wait.
			MaxConnWaitTimeout:       a.cfg.Timeout,
			NoDefaultUserAgentHeader: true,
			DisablePathNormalizing:   true,
		},
	}
}

// dialError marks an error from connecting to a replica: nothing was sent,
// so the request may go to another replica.
type dialError struct{ err error }

func (e *dialError) Error() string { return "connect to replica: " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// isDialError is errors.As for *dialError, without the allocation that
// errors.As's pointer target costs on every request.
func isDialError(err error) bool {
	for ; err != nil; err = errors.Unwrap(err) {
		if _, ok := err.(*dialError); ok {
			return true
		}
	}
	return false
}

func dialReplica(addr string, timeout time.Duration) (net.Conn, error) {
	if timeout <= 0 || timeout > maxDialTimeout {
		timeout = maxDialTimeout
	}
	c, err := fasthttp.DialTimeout(addr, timeout)
	if err != nil {
		return nil, &dialError{err}
	}
	return c, nil
}

// fnv1a is the 64-bit FNV-1a hash. Every activator must send a sticky key
// to the same entity, so the hash has no per-process seed.
func fnv1a(b []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return h
}

// secretBytes is a worker secret as the header value forward sets; nil
// for none.
func secretBytes(s string) []byte {
	if s == "" {
		return nil
	}
	return []byte(s)
}
