package nomad_test

import (
	"context"
	"testing"
	"time"

	"github.com/gantry/gantry/internal/fakeclock"
	"github.com/gantry/gantry/internal/nomadtest"
	"github.com/gantry/gantry/jobs"
	"github.com/gantry/gantry/scheduler/orchestrator/nomad"
	nomadapi "github.com/hashicorp/nomad/api"
)

// newClocked is a driver on a fresh double whose time is clock's. Its
// watchers pause an hour of that clock between queries, so they stay out
// of the way of a test that moves it by seconds.
func newClocked(t *testing.T, settings jobs.Settings, clock *fakeclock.Clock) (*nomad.Driver, *nomadtest.Server) {
	t.Helper()
	srv, err := nomadtest.New(nomadtest.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	d, err := nomad.New(nomad.Config{
		Client: &nomadapi.Config{Address: srv.URL}, Jobs: settings, Clock: clock, MinQueryInterval: time.Hour,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close(context.Background()) })
	return d, srv
}

// TestRefusalBackoffFollowsTheClock: Nomad refuses the job (its namespace
// does not exist); Ensure asks Nomad again for the same spec only once the
// backoff has passed on the driver's clock, 1 s and then 2 s; a new spec is
// asked at once. Each request Nomad refuses counts one failure.
func TestRefusalBackoffFollowsTheClock(t *testing.T) {
	clock := &fakeclock.Clock{}
	driver, _ := newClocked(t, jobs.Settings{Namespace: "ml"}, clock)
	ctx := context.Background()
	d := spec("ep-refused-0000dddd", "http://127.0.0.1:1/artifact", 1)
	for _, step := range []struct {
		what     string
		advance  time.Duration
		failures uint64 // asked Nomad when this grows
	}{
		{"first try", 0, 1},
		{"at once again", 0, 1},
		{"999 ms later", 999 * time.Millisecond, 1},
		{"1 s later", time.Millisecond, 2},
		{"1 s into the 2 s backoff", time.Second, 2},
		{"2 s later", time.Second, 3},
	} {
		clock.Add(step.advance)
		if err := driver.Ensure(ctx, d); err == nil {
			t.Fatalf("%s: Ensure succeeded, want Nomad's refusal", step.what)
		}
		if got := driver.Status(d.ID).Failures; got != step.failures {
			t.Errorf("%s: %d failures, want %d", step.what, got, step.failures)
		}
	}
	d.Replicas = 2 // a new spec is not the one refused
	driver.Ensure(ctx, d)
	if got := driver.Status(d.ID).Failures; got != 4 {
		t.Errorf("a new spec within the backoff: %d failures, want 4 (asked at once)", got)
	}
}

// TestPurgedJobIsRegisteredAgain: someone purges the job behind the
// driver's back; a scale finds it gone (404) and registers it again.
func TestPurgedJobIsRegisteredAgain(t *testing.T) {
	driver, srv := newClocked(t, jobs.Settings{}, &fakeclock.Clock{})
	ctx := context.Background()
	d := spec("ep-purged-0000aaaa", "http://127.0.0.1:1/artifact", 0)
	if err := driver.Ensure(ctx, d); err != nil {
		t.Fatal(err)
	}
	c, _ := nomadapi.NewClient(&nomadapi.Config{Address: srv.URL})
	if _, _, err := c.Jobs().Deregister(d.ID, true, nil); err != nil {
		t.Fatal(err)
	}
	if err := driver.Ensure(ctx, d); err != nil {
		t.Fatalf("Ensure after a purge: %v", err)
	}
	if _, _, err := c.Jobs().Info(d.ID, nil); err != nil {
		t.Errorf("the job is not back in Nomad: %v", err)
	}
}
