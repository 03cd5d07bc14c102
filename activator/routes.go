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
// The JSON route table never carries external models' keys: after each
// table that names an external entity, HTTPRoutes fetches them from the
// admins-only GET {Base}/api/2.0/gantry/external-keys with Token and puts
// them into the table in memory. A key that changes (a rotated secret)
// changes the scheduler's table, so the next one brings it.
//
// It works at its zero value except for Base, and must not change after
// first use.
type HTTPRoutes struct {
	// Base is the scheduler's URL, such as http://127.0.0.1:7070.
	Base string
	// Token is sent as a bearer token: the route table is for admins
	// (it names every replica, and workers' secrets). Default none, for
	// a scheduler with authentication off.
	Token string
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
	var rt api.RouteTable
	n, err := blockingGet(ctx, follower{h.Base, h.Token, h.WaitTime, h.Client}, "/api/2.0/gantry/routes", "route table", index, &rt)
	if err != nil {
		return nil, err
	}
	switch {
	case n == 0:
	case rt.Index == 0:
		rt.Index = n
	case rt.Index != n:
		return nil, fmt.Errorf("route table: body index %d disagrees with X-Gantry-Index %d", rt.Index, n)
	}
	if err := h.fillKeys(ctx, &rt); err != nil {
		return nil, err
	}
	return &rt, nil
}

// fillKeys puts the keys of rt's external entities into it, by
// deployment, when it has any. A deployment the answer lacks keeps no key
// (its route's key_error says why, or the scheduler has moved on and the
// next table follows).
func (h *HTTPRoutes) fillKeys(ctx context.Context, rt *api.RouteTable) error {
	var ext []*api.ExternalRoute
	var ids []string
	for i := range rt.Endpoints {
		for j := range rt.Endpoints[i].Entities {
			if e := &rt.Endpoints[i].Entities[j]; e.External != nil {
				ext, ids = append(ext, e.External), append(ids, e.Deployment)
			}
		}
	}
	if len(ext) == 0 {
		return nil
	}
	var keys api.ExternalKeys
	if err := getJSON(ctx, follower{h.Base, h.Token, h.WaitTime, h.Client}, "/api/2.0/gantry/external-keys", "external keys", &keys); err != nil {
		return err
	}
	byID := make(map[string]string, len(keys.Keys))
	for _, k := range keys.Keys {
		byID[k.Deployment] = k.Key
	}
	for i, e := range ext {
		e.Key = byID[ids[i]]
	}
	return nil
}

// getJSON sends GET {base}{path} and decodes a 200's JSON into out. An
// error never holds the body of a 200 (for external-keys, keys).
func getJSON(ctx context.Context, f follower, path, what string, out any) error {
	client := f.hc
	if client == nil {
		client = http.DefaultClient
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(f.base, "/")+path, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if f.token != "" {
		req.Header.Set("Authorization", "Bearer "+f.token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		var apiErr api.Error
		if json.Unmarshal(body, &apiErr) == nil && apiErr.Code != "" {
			return fmt.Errorf("%s: HTTP %d: %w", what, resp.StatusCode, &apiErr)
		}
		return fmt.Errorf("%s: HTTP %d", what, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s: decode the answer", what)
	}
	return nil
}

// follower is what HTTPRoutes and HTTPAccess share: where the scheduler
// is and how to ask it.
type follower struct {
	base  string
	token string
	wait  time.Duration
	hc    *http.Client
}

// blockingGet sends GET {base}{path}?index=N&wait=W and decodes a 200's
// JSON into out; it returns the X-Gantry-Index header (0 when absent).
// what names the resource in errors. The token never appears in one.
func blockingGet(ctx context.Context, f follower, path, what string, index uint64, out any) (uint64, error) {
	if f.base == "" {
		return 0, fmt.Errorf("%s: %w", what, errNoBase)
	}
	wait := f.wait
	if wait <= 0 {
		wait = DefaultRoutesWait
	}
	client := f.hc
	if client == nil {
		client = http.DefaultClient
	}
	// The scheduler may hold the query a little past wait (Nomad adds up to
	// wait/16 of jitter); past that, assume the connection is dead.
	ctx, cancel := context.WithTimeout(ctx, wait+wait/16+5*time.Second)
	defer cancel()

	q := url.Values{"index": {strconv.FormatUint(index, 10)}, "wait": {wait.String()}}
	u := strings.TrimRight(f.base, "/") + path + "?" + q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	if f.token != "" {
		req.Header.Set("Authorization", "Bearer "+f.token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	defer resp.Body.Close()

	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		var apiErr api.Error
		if json.Unmarshal(body, &apiErr) == nil && apiErr.Code != "" {
			return 0, fmt.Errorf("%s: HTTP %d: %w", what, resp.StatusCode, &apiErr)
		}
		return 0, fmt.Errorf("%s: HTTP %d: %s", what, resp.StatusCode, body)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return 0, fmt.Errorf("%s: decode: %w", what, err)
	}
	var n uint64
	if h := resp.Header.Get("X-Gantry-Index"); h != "" {
		if n, err = strconv.ParseUint(h, 10, 64); err != nil {
			return 0, fmt.Errorf("%s: X-Gantry-Index %q: %w", what, h, err)
		}
	}
	return n, nil
}

// errNoBase is returned when HTTPRoutes or HTTPAccess has no Base.
var errNoBase = errors.New("the scheduler's URL (Base) is empty")
