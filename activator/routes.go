package activator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gantry/gantry/api"
)

// DefaultRoutesWait is HTTPRoutes' default WaitTime.
const DefaultRoutesWait = 30 * time.Second

// HTTPRoutes follows the scheduler's route table over HTTP with a blocking
// query: GET {Base}/api/2.0/gantry/routes?index=N&wait=30s. The scheduler
// answers a JSON api.RouteTable, with its index also in the X-Gantry-Index
// header, once its index exceeds N or the wait passes.
//
// It works at its zero value except for Base, and must not change after
// first use.
type HTTPRoutes struct {
	// Base is the scheduler's URL, such as http://127.0.0.1:7070.
	Base string
	// WaitTime is how long the scheduler may hold one query. Default 30 s.
	// (Named like Nomad's QueryOptions.WaitTime; Wait is the method.)
	WaitTime time.Duration
	// Client sends the queries. Default http.DefaultClient; a client with a
	// Timeout shorter than WaitTime would cut every idle query short.
	Client *http.Client
}

var _ routeSource = (*HTTPRoutes)(nil)

// Wait returns the first route table with an index above index, or the
// current one when the scheduler's wait passes first.
func (h *HTTPRoutes) Wait(ctx context.Context, index uint64) (*api.RouteTable, error) {
	if h.Base == "" {
		return nil, errNoBase
	}
	wait := h.WaitTime
	if wait <= 0 {
		wait = DefaultRoutesWait
	}
	client := h.Client
	if client == nil {
		client = http.DefaultClient
	}
	// The scheduler may hold the query a little past wait (Nomad adds up to
	// wait/16 of jitter); past that, assume the connection is dead.
	ctx, cancel := context.WithTimeout(ctx, wait+wait/16+5*time.Second)
	defer cancel()

	q := url.Values{"index": {strconv.FormatUint(index, 10)}, "wait": {wait.String()}}
	u := strings.TrimRight(h.Base, "/") + "/api/2.0/gantry/routes?" + q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("route table: %w", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("route table: %w", err)
	}
	defer resp.Body.Close()

	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		var apiErr api.Error
		if json.Unmarshal(body, &apiErr) == nil && apiErr.Code != "" {
			return nil, fmt.Errorf("route table: HTTP %d: %w", resp.StatusCode, &apiErr)
		}
		return nil, fmt.Errorf("route table: HTTP %d: %s", resp.StatusCode, body)
	}
	var rt api.RouteTable
	if err := json.NewDecoder(resp.Body).Decode(&rt); err != nil {
		return nil, fmt.Errorf("route table: decode: %w", err)
	}
	if h := resp.Header.Get("X-Gantry-Index"); h != "" {
		n, err := strconv.ParseUint(h, 10, 64)
		switch {
		case err != nil:
			return nil, fmt.Errorf("route table: X-Gantry-Index %q: %w", h, err)
		case rt.Index == 0:
			rt.Index = n
		case rt.Index != n:
			return nil, fmt.Errorf("route table: body index %d disagrees with X-Gantry-Index %d", rt.Index, n)
		}
	}
	return &rt, nil
}

// errNoBase is returned when HTTPRoutes has no Base.
var errNoBase = errors.New("route table: HTTPRoutes.Base is empty")
