package autoscaler

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/autoscaler/decider"
)

// TestTokenPollerFeedsTheDecider runs the poller against a real HTTP
// worker double whose token counter grows 300 tokens a second with
// sequences waiting, and checks that the loop asks for more replicas than
// the activators' concurrency alone would.
func TestTokenPollerFeedsTheDecider(t *testing.T) {
	var generated atomic.Uint64
	worker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/load" {
			http.NotFound(w, r)
			return
		}
		json.NewEncoder(w).Encode(api.TokenLoad{GeneratedTokens: generated.Load(), Queued: 4, Running: 4})
	}))
	defer worker.Close()
	silent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusServiceUnavailable)
	}))
	defer silent.Close()

	now := time.Time{}
	clock := func() time.Time { return now }
	spec := decider.DefaultSpec()
	addr := strings.TrimPrefix(worker.URL, "http://")
	f := &fakeScheduler{targets: map[string]*Target{"d": {Deployment: "d", Min: 1, Max: 10, Current: 1, Ready: 2,
		TargetPerReplica: 64, TokensPerReplica: 100, Replicas: []string{addr, strings.TrimPrefix(silent.URL, "http://")}}}}
	a := New(Config{Spec: &spec, Now: clock, Logger: slog.New(slog.DiscardHandler)}, f, func() []Sample { return []Sample{{Deployment: "d", Concurrency: 8}} })

	for i := range 4 {
		now = now.Add(time.Second)
		generated.Store(uint64(300 * i))
		a.poller.set(f.Targets())
		a.poller.poll(context.Background())
		a.tick(now)
	}
	// 300 tokens/s from 4 running with 4 waiting: a demand of 600, and
	// ceil(600 / 70) = 9 replicas; the concurrency (8 of 64) wants 1.
	if got := f.targets["d"].Current; got < 5 {
		t.Fatalf("replicas = %d (scaled %v), want the token demand to raise them well above 1", got, f.scaled)
	}
	rep := a.poller.latest()["d"]
	if len(rep) != 1 || rep[addr].Generated != 900 {
		t.Errorf("latest reports = %+v, want the answering replica's only", rep)
	}
}

func TestMeasuredCapacity(t *testing.T) {
	a := New(Config{}, &fakeScheduler{}, func() []Sample { return nil })
	at := func(s int) time.Time { return time.Time{}.Add(time.Duration(s) * time.Second) }
	for _, step := range []struct {
		at        int
		saturated float64
		want      float64
	}{
		{0, 0, 0},    // nothing measured
		{1, 60, 60},  // a ramping replica
		{2, 98, 98},  // higher: replaces
		{3, 70, 98},  // lower within the minute: kept
		{4, 0, 98},   // no saturated replica: kept
		{63, 90, 90}, // the minute passed: the new one stands
	} {
		if got := a.capacity(at(step.at), "d", step.saturated); got != step.want {
			t.Errorf("at %ds with %v: capacity %v, want %v", step.at, step.saturated, got, step.want)
		}
	}
}
