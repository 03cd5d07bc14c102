package activator

import (
	"errors"
	"math"
	"math/rand/v2"
	"net"
	"sync/atomic"
	"time"

	"github.com/gantry/gantry/api"
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
	name     string
	entities map[string]*entity // by served entity name
	split    []split            // cumulative weights, in route order
	total    int                // sum of the weights; split[len-1].upTo
	duration prometheus.Observer
	// requests counts answers given before a served entity was chosen,
	// curried down to the code label. Never 200s, so nothing is resolved
	// in advance.
	requests *prometheus.CounterVec
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
	message  string
	replicas []*replica
	requests counters
	inFlight prometheus.Gauge
	// unavailable is the 503 body for when no replica can take a request,
	// built once per table rather than per refused request.
	unavailable []byte
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
// It is the fasthttp lbclient BalancingClient shape: the pick reads
// PendingRequests and penalties and never removes a replica.
type replica struct {
	addr   string
	client *fasthttp.HostClient

	// pending counts requests picked for this replica and not yet answered.
	// It goes up at pick time, before the request reaches the client, so that
	// concurrent picks see each other.
	pending atomic.Int32

	// penalty counts connection failures of the last penalty period; each one
	// is lifted by its own timer. While it is above zero the replica is only
	// picked if every other replica is penalized too.
	penalty atomic.Int32
}

var _ fasthttp.BalancingClient = (*replica)(nil)

// maxPenalty bounds the timers one replica can have running
// (fasthttp lbclient's bound).
const maxPenalty = 300

// penalized is the load a penalty adds in the pick: more than any real
// in-flight count, so a penalized replica loses to every healthy one.
const penalized = 1 << 24

// DoDeadline sends req to the replica. The caller has already counted the
// request in pending (pick does); DoDeadline uncounts it.
func (r *replica) DoDeadline(req *fasthttp.Request, resp *fasthttp.Response, deadline time.Time) error {
	req.Header.SetHost(r.addr)
	err := r.client.DoDeadline(req, resp, deadline)
	r.pending.Add(-1)
	return err
}

// PendingRequests is the replica's in-flight count.
func (r *replica) PendingRequests() int { return int(r.pending.Load()) }

// penalize makes the pick avoid r for d.
func (r *replica) penalize(d time.Duration) {
	if r.penalty.Add(1) > maxPenalty {
		r.penalty.Add(-1)
		return
	}
	time.AfterFunc(d, func() { r.penalty.Add(-1) })
}

// pick returns the replica with the fewest requests in flight, not skip, and
// counts the new request in its pending count; nil if there is none.
// Penalized replicas lose to healthy ones. Ties go to the first replica seen
// from a random start, so that light traffic still spreads over all of them.
func (en *entity) pick(skip *replica) *replica {
	rs := en.replicas
	var best *replica
	switch len(rs) {
	case 0:
		return nil
	case 1:
		best = rs[0]
		if best == skip {
			return nil
		}
	default:
		bestLoad := math.MaxInt
		n := len(rs)
		i := rand.IntN(n)
		for range n {
			r := rs[i]
			if i++; i == n {
				i = 0
			}
			if r == skip {
				continue
			}
			load := r.PendingRequests()
			if r.penalty.Load() > 0 {
				load += penalized
			}
			if load < bestLoad {
				best, bestLoad = r, load
			}
		}
		if best == nil {
			return nil
		}
	}
	best.pending.Add(1)
	return best
}

// pick draws a served entity by the traffic split; nil if the endpoint has
// nothing to route to.
func (ep *endpoint) pick() *entity {
	switch len(ep.split) {
	case 0:
		return nil
	case 1:
		return ep.split[0].en
	}
	n := rand.IntN(ep.total)
	for _, s := range ep.split {
		if n < s.upTo {
			return s.en
		}
	}
	return ep.split[len(ep.split)-1].en
}

// build makes the snapshot of rt. It reuses the replicas of a.replicas and
// returns the replicas the new table names. Run's goroutine only.
func (a *Activator) build(rt *api.RouteTable) (*table, map[string]*replica) {
	m := a.metrics
	t := &table{index: rt.Index, endpoints: make(map[string]*endpoint, len(rt.Endpoints))}
	live := make(map[string]*replica)
	for i := range rt.Endpoints {
		er := &rt.Endpoints[i]
		ep := &endpoint{
			name:     er.Name,
			entities: make(map[string]*entity, len(er.Entities)),
			duration: m.duration.WithLabelValues(er.Name),
			requests: m.curried(er.Name, ""),
		}
		for j := range er.Entities {
			e := &er.Entities[j]
			en := &entity{
				endpoint: er.Name,
				name:     e.Name,
				state:    e.State,
				message:  e.Message,
				requests: m.counters(er.Name, e.Name),
				inFlight: m.inFlight.WithLabelValues(er.Name, e.Name),
			}
			for _, rep := range e.Replicas {
				r := live[rep.Addr]
				if r == nil {
					if r = a.replicas[rep.Addr]; r == nil {
						r = a.newReplica(rep.Addr)
					}
					live[rep.Addr] = r
				}
				if !containsReplica(en.replicas, r) {
					en.replicas = append(en.replicas, r)
				}
			}
			en.unavailable = unavailableBody(en)
			ep.entities[e.Name] = en
		}
		ep.split, ep.total = a.splitOf(er, ep)
		t.endpoints[er.Name] = ep
	}
	return t, live
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
		total += r.TrafficPercentage
		s = append(s, split{upTo: total, en: en})
	}
	return s, total
}

func containsReplica(rs []*replica, r *replica) bool {
	for _, x := range rs {
		if x == r {
			return true
		}
	}
	return false
}

// unavailableBody is the 503 answer for an entity without a ready replica.
// A failed deployment says why; any other state says which it is, and the
// answer carries Retry-After.
func unavailableBody(en *entity) []byte {
	if en.state == api.DeploymentFailed {
		msg := en.message
		if msg == "" {
			msg = "no reason given"
		}
		return errorBody(api.ErrTemporarilyUnavailable,
			"served entity %s of endpoint %s failed to deploy: %s", en.name, en.endpoint, msg)
	}
	state := en.state
	if state == "" {
		state = "unknown"
	}
	return errorBody(api.ErrTemporarilyUnavailable,
		"served entity %s of endpoint %s has no ready replica (state %s); retry later", en.name, en.endpoint, state)
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
