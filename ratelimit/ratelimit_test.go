package ratelimit

import (
	"strings"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/internal/fakeclock"
)

var (
	alice = Caller{Name: "alice@corp.com", Groups: []string{"data-science"}}
	bob   = Caller{Name: "bob@corp.com", Groups: []string{"data-science", "ops"}}
	carol = Caller{Name: "carol@corp.com"}
	sp    = Caller{Name: "0e5b3f1c-app"}
)

func lim(key, principal string, calls, tokens int64) api.RateLimit {
	return api.RateLimit{Key: key, Principal: principal, Calls: calls, Tokens: tokens, RenewalPeriod: "minute"}
}

// step is one line of a script: at the clock's time, caller c reserves
// tokens on the endpoint; want is "" for a pass or a part of the refusal.
type step struct {
	advance time.Duration
	c       Caller
	tokens  int64
	want    string
	refund  int64 // >= 0: refund the reservation down to this many used
	retry   int   // expected Retry-After seconds on refusal (0: not checked)
}

func run(t *testing.T, limits []api.RateLimit, steps []step) {
	t.Helper()
	clk := &fakeclock.Clock{}
	// The fake clock starts at time.Time{}; the script's times are that
	// much past a window's start.
	base := time.Unix(1_800_000_000, 0).Truncate(Window)
	now := func() time.Time { return base.Add(clk.Now().Sub(time.Time{})) }
	var l Limiter
	for i, s := range steps {
		clk.Add(s.advance)
		r, ex := l.Reserve(now(), "ep", limits, s.c, s.tokens)
		switch {
		case s.want == "" && ex != nil:
			t.Fatalf("step %d (%s): refused: %s", i, s.c.Name, ex.Message())
		case s.want != "" && ex == nil:
			t.Fatalf("step %d (%s): passed, want refusal naming %q", i, s.c.Name, s.want)
		case ex != nil && !strings.Contains(ex.Message(), s.want):
			t.Fatalf("step %d: message %q, want %q in it", i, ex.Message(), s.want)
		case ex != nil && s.retry != 0 && ex.Seconds() != s.retry:
			t.Fatalf("step %d: Retry-After %d, want %d", i, ex.Seconds(), s.retry)
		}
		if ex == nil && s.refund >= 0 {
			l.Refund(r, s.refund)
		}
	}
}

func pass(c Caller) step { return step{c: c, refund: -1} }
func refused(c Caller, want string, retry int) step {
	return step{c: c, want: want, retry: retry, refund: -1}
}

func TestEndpointLimitCapsEveryone(t *testing.T) {
	run(t, []api.RateLimit{lim("", "", 3, 0), lim("user", "", 10, 0)}, []step{
		pass(alice), pass(bob), pass(carol),
		refused(sp, "the endpoint's rate limit of 3 calls per minute", 60),
		{advance: 59*time.Second + 500*time.Millisecond, c: alice, want: "endpoint's", retry: 1, refund: -1},
		{advance: 500 * time.Millisecond, c: alice, refund: -1}, // the next window
	})
}

func TestDefaultUserLimitIsPerCaller(t *testing.T) {
	run(t, []api.RateLimit{lim("user", "", 2, 0)}, []step{
		pass(carol), pass(carol), refused(carol, "per-user rate limit of 2 calls", 60),
		pass(sp), pass(sp), refused(sp, "per-user", 0),
		{advance: 30 * time.Second, c: carol, want: "per-user", retry: 30, refund: -1},
		{advance: 30 * time.Second, c: carol, refund: -1},
	})
}

func TestPrincipalOverridesDefaultAndGroup(t *testing.T) {
	limits := []api.RateLimit{
		lim("user", "", 1, 0),
		lim("user", "alice@corp.com", 3, 0),
		lim("user_group", "data-science", 1, 0),
		lim("service_principal", "0e5b3f1c-app", 2, 0),
	}
	run(t, limits, []step{
		// alice's own limit (3) beats both her group's (1) and the default (1).
		pass(alice), pass(alice), pass(alice), refused(alice, "for user alice@corp.com", 0),
		// bob has no own limit: his group's beats the default...
		pass(bob), refused(bob, "for group data-science", 0),
		// ...carol has neither: the default.
		pass(carol), refused(carol, "per-user rate limit of 1", 0),
		pass(sp), pass(sp), refused(sp, "for service principal 0e5b3f1c-app", 0),
	})
}

func TestGroupIsOneSharedBudget(t *testing.T) {
	dave := Caller{Name: "dave", Groups: []string{"data-science"}}
	run(t, []api.RateLimit{lim("user_group", "data-science", 2, 0)}, []step{
		pass(alice), pass(dave), refused(alice, "for group data-science", 0), refused(dave, "data-science", 0),
		pass(carol), pass(carol), pass(carol), // not a member, no default: unlimited
	})
}

func TestSeveralGroupsRefuseOnceAllAreSpent(t *testing.T) {
	run(t, []api.RateLimit{lim("user_group", "data-science", 1, 0), lim("user_group", "ops", 2, 0)}, []step{
		pass(bob), pass(bob), pass(bob), refused(bob, "every group", 0),
		refused(alice, "data-science", 0), // charged to data-science once (the most room was ops: 2)... so alice's group is spent
	})
}

func TestCallsAndTokensBothApply(t *testing.T) {
	limits := []api.RateLimit{lim("", "", 100, 1000)}
	run(t, limits, []step{
		{c: alice, tokens: 600, refund: -1},
		{c: bob, tokens: 500, want: "endpoint's rate limit of 1000 tokens", refund: -1},
		{c: bob, tokens: 400, refund: -1},
		{c: bob, tokens: 1, want: "tokens", refund: -1},
	})
	run(t, []api.RateLimit{lim("", "", 1, 1000)}, []step{
		{c: alice, tokens: 1, refund: -1},
		{c: alice, tokens: 1, want: "1 calls per minute", refund: -1},
	})
}

func TestTokensReservedThenRefunded(t *testing.T) {
	run(t, []api.RateLimit{lim("user", "", 0, 1000)}, []step{
		// A reservation of 900 (prompt + max_tokens) holds the budget
		// while the answer streams; another concurrent one cannot fit.
		{c: alice, tokens: 900, refund: -1},
		{c: alice, tokens: 200, want: "per-user rate limit of 1000 tokens", refund: -1},
		// Reserve 100, use 40: 60 come back.
		{c: alice, tokens: 100, refund: 40},
		{c: alice, tokens: 60, refund: -1},
		{c: alice, tokens: 1, want: "tokens", refund: -1},
		// A call that alone reserves more than the limit never passes.
		{advance: time.Minute, c: alice, tokens: 1001, want: "reserves 1001 tokens", refund: -1},
	})
}

func TestRefundAfterWindowIgnored(t *testing.T) {
	var l Limiter
	now := time.Unix(1_800_000_000, 0).Truncate(Window)
	limits := []api.RateLimit{lim("", "", 0, 100)}
	r, ex := l.Reserve(now, "ep", limits, alice, 100)
	if ex != nil {
		t.Fatal(ex.Message())
	}
	next := now.Add(Window)
	if _, ex := l.Reserve(next, "ep", limits, alice, 100); ex != nil {
		t.Fatal(ex.Message())
	}
	l.Refund(r, 0) // the old window's reservation must not free the new one
	if _, ex := l.Reserve(next, "ep", limits, alice, 1); ex == nil {
		t.Fatal("a refund of the last window freed budget in this one")
	}
}

func TestEndpointsAreSeparate(t *testing.T) {
	var l Limiter
	now := time.Unix(1_800_000_000, 0)
	limits := []api.RateLimit{lim("", "", 1, 0)}
	if _, ex := l.Reserve(now, "a", limits, alice, 0); ex != nil {
		t.Fatal(ex.Message())
	}
	if _, ex := l.Reserve(now, "b", limits, alice, 0); ex != nil {
		t.Fatal("endpoint b was charged for a:", ex.Message())
	}
	if _, ex := l.Reserve(now, "a", nil, alice, 0); ex != nil {
		t.Fatal("no limits refused")
	}
}

func TestAnonymousGetsEndpointLimitsOnly(t *testing.T) {
	run(t, []api.RateLimit{lim("", "", 2, 0), lim("user", "", 1, 0)}, []step{
		pass(Caller{}), pass(Caller{}), refused(Caller{}, "endpoint's", 0),
	})
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		limits []api.RateLimit
		want   string
	}{
		{[]api.RateLimit{lim("", "", 1, 0), lim("user", "", 0, 5), lim("user_group", "g", 1, 1), lim("service_principal", "x", 1, 0)}, ""},
		{[]api.RateLimit{{Calls: 1}}, "renewal_period"},
		{[]api.RateLimit{{Calls: 1, RenewalPeriod: "hour"}}, "renewal_period"},
		{[]api.RateLimit{lim("", "", 0, 0)}, "calls or tokens"},
		{[]api.RateLimit{lim("", "", -1, 0)}, "calls or tokens"},
		{[]api.RateLimit{lim("workspace", "", 1, 0)}, "rate_limits[0].key"},
		{[]api.RateLimit{lim("endpoint", "alice", 1, 0)}, "names no principal"},
		{[]api.RateLimit{lim("user_group", "", 1, 0)}, "must name its principal"},
		{[]api.RateLimit{lim("", "", 1, 0), lim("endpoint", "", 2, 0)}, "rate_limits[1]: a second calls limit"},
		{[]api.RateLimit{lim("", "", 1, 0), lim("endpoint", "", 0, 2)}, ""},
		{make21(), "at most 20"},
		{[]api.RateLimit{lim("user_group", "a", 1, 0), lim("user_group", "b", 1, 0), lim("user_group", "c", 1, 0), lim("user_group", "d", 1, 0), lim("user_group", "e", 1, 0), lim("user_group", "f", 1, 0)}, "at most 5"},
	} {
		got := Validate(tc.limits)
		if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, tc.want) {
			t.Errorf("Validate(%v) = %q, want %q", tc.limits, got, tc.want)
		}
	}
}

func make21() []api.RateLimit {
	var out []api.RateLimit
	for i := 0; i < 21; i++ {
		out = append(out, lim("user", string(rune('a'+i)), 1, 0))
	}
	return out
}
