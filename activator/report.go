package activator

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gantry/gantry/api"
)

// Defaults of Reporter's fields.
const (
	DefaultReportInterval = time.Second
	// pokeBuffer is how many pokes wait for the sending goroutine; beyond
	// it they are dropped. The activator already limits pokes to ten a
	// second per entity, and a dropped one is repeated 100 ms later while
	// requests wait.
	pokeBuffer = 64
	// pokeTimeout bounds one poke: a poke is only worth its speed, and
	// the next one is at most 100 ms behind.
	pokeTimeout = time.Second
	// maxBackoffPeriods caps the pushes skipped after failures: at the
	// default interval, one try every 5 s while the autoscaler is away.
	maxBackoffPeriods = 5
)

// Reporter tells a remote autoscaler (`gantry autoscaler`) about an
// activator's load, the way `gantry dev` does in process:
//
//   - Run pushes the activator's Stats every Interval:
//     POST {URL}/v1/stats with an api.LoadReport.
//   - Poke, set as Config.Poke, sends POST {URL}/v1/poke with an
//     api.PokeRequest when a request arrives at a deployment with no ready
//     replica.
//
// Neither makes a request wait on the network: Run reads Stats and pushes
// on its own goroutine, as the in-process loop of `gantry dev` does, and
// Poke hands the deployment to another goroutine through a small buffered
// channel, dropping it when the channel is full.
//
// A Reporter works at its zero value except for URL, and must not change
// after first use. One Reporter serves one Activator.
type Reporter struct {
	// URL is the autoscaler's base URL, such as http://127.0.0.1:8082.
	// Required.
	URL string
	// ID names this activator in its reports; the autoscaler keeps one
	// account per ID. Default: the host name and process ID.
	ID string
	// Interval is the time between two pushes, and so the period that each
	// push's averages cover. Default 1 s (DefaultReportInterval), the
	// autoscaler's tick.
	Interval time.Duration
	// Client sends pushes and pokes; each call is bounded by a timeout of
	// its own (Interval, at least 1 s, for a push; 1 s for a poke).
	// Default http.DefaultClient.
	Client *http.Client
	// Logger gets the autoscaler's outages. Default slog.Default().
	Logger *slog.Logger
	// Token is sent as a bearer token with every push and poke: an
	// autoscaler with authentication on takes load only from Gantry's
	// components (and admins). Never logged.
	Token string

	setup sync.Once
	id    string
	pokes chan string
	// dropped counts the pokes that found pokes full.
	dropped atomic.Uint64
}

func (r *Reporter) init() {
	r.setup.Do(func() {
		r.pokes = make(chan string, pokeBuffer)
		r.id = r.ID
		if r.id == "" {
			host, _ := os.Hostname()
			r.id = fmt.Sprintf("%s-%d", host, os.Getpid())
		}
	})
}

// Poke queues a poke for deployment and returns at once; it is meant for
// Config.Poke. Pokes queued before Run starts go out when it does.
func (r *Reporter) Poke(deployment string) {
	r.init()
	select {
	case r.pokes <- deployment:
	default:
		r.dropped.Add(1)
	}
}

// Run pushes a's load every Interval and sends the queued pokes until ctx
// ends, then returns nil; it returns an error at once if URL is not an
// http(s) URL.
// Call it once, in a goroutine of its own; it must be the only caller of
// a.Stats, whose averaging periods it starts and ends.
//
// A failed push is logged (once per outage) and dropped: its load is the
// past by the next push. Pushes then back off, skipping 1, 2, 4 and then 5
// intervals, but Stats is still read every Interval, so that the push that
// follows covers one interval as its period_ms says.
func (r *Reporter) Run(ctx context.Context, a *Activator) error {
	r.init()
	base := strings.TrimRight(r.URL, "/")
	if u, err := url.Parse(base); err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return fmt.Errorf("load reporter: autoscaler URL %q: want a URL such as http://127.0.0.1:8082", r.URL)
	}
	interval := r.Interval
	if interval <= 0 {
		interval = DefaultReportInterval
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { r.sendPokes(ctx, base) })

	a.Stats() // start a fresh period: what came before was nobody's
	prev := a.cfg.Clock()
	t := time.NewTicker(interval)
	defer t.Stop()
	var backoff, skip int // in intervals
	failing := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		stats := a.Stats()
		now := a.cfg.Clock()
		period := now.Sub(prev)
		prev = now
		if skip > 0 {
			skip--
			continue
		}
		rep := api.LoadReport{Activator: r.id, PeriodMS: period.Milliseconds(), Samples: make([]api.LoadSample, len(stats))}
		for i, s := range stats {
			rep.Samples[i] = api.LoadSample{Deployment: s.Deployment, Concurrency: s.Concurrency}
		}
		err := r.post(ctx, base+"/v1/stats", &rep, max(interval, time.Second))
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			backoff = min(max(2*backoff, 1), maxBackoffPeriods)
			skip = backoff
			if !failing {
				r.logger().Warn("cannot push load to the autoscaler; backing off", "autoscaler", base, "err", err)
			} else {
				r.logger().Debug("push to the autoscaler failed", "autoscaler", base, "err", err)
			}
			failing = true
		default:
			if failing {
				r.logger().Info("autoscaler takes load reports again", "autoscaler", base)
			}
			backoff, failing = 0, false
		}
	}
}

// sendPokes sends queued pokes until ctx ends.
func (r *Reporter) sendPokes(ctx context.Context, base string) {
	failing := false
	var batch []string
	for {
		select {
		case <-ctx.Done():
			return
		case dep := <-r.pokes:
			batch = append(batch[:0], dep)
		}
		// Pokes that queued behind a slow one name the same few
		// deployments; the autoscaler needs each once.
	drain:
		for {
			select {
			case dep := <-r.pokes:
				if !slices.Contains(batch, dep) {
					batch = append(batch, dep)
				}
			default:
				break drain
			}
		}
		for _, dep := range batch {
			err := r.post(ctx, base+"/v1/poke", &api.PokeRequest{Deployment: dep}, pokeTimeout)
			switch {
			case ctx.Err() != nil:
				return
			case err != nil && !failing:
				r.logger().Warn("cannot poke the autoscaler; it will see the load at its next push", "autoscaler", base,
					"deployment", dep, "err", err)
				failing = true
			case err == nil && failing:
				r.logger().Info("autoscaler takes pokes again", "autoscaler", base)
				failing = false
			}
		}
	}
}

// post sends v as JSON to target within timeout and wants a 2xx answer.
func (r *Reporter) post(ctx context.Context, target string, v any, timeout time.Duration) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("POST %s: %w", target, err)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("POST %s: %w", target, err)
	}
	req.Header.Set("Content-Type", "application/json")
	if r.Token != "" {
		req.Header.Set("Authorization", "Bearer "+r.Token)
	}
	client := r.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return err // a *url.Error, which names the method and URL
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 != 2 {
		var ae api.Error
		if json.Unmarshal(body, &ae) == nil && ae.Code != "" {
			return fmt.Errorf("POST %s: HTTP %d: %w", target, resp.StatusCode, &ae)
		}
		return fmt.Errorf("POST %s: HTTP %d: %s", target, resp.StatusCode, body)
	}
	return nil
}

func (r *Reporter) logger() *slog.Logger {
	if r.Logger != nil {
		return r.Logger
	}
	return slog.Default()
}
