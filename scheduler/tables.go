package scheduler

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/identity"
)

// queryTimeout bounds one query of Gantry's own SQL through the API (the
// monitors' checks and reports). Callers' SQL has the limits of
// userQuerier instead.
const queryTimeout = 60 * time.Second

// userQuerier runs SQL that comes from a caller locked down: reads only,
// no table functions (url, remote, file, ...: the ClickHouse host's
// network and disk), no SETTINGS, and limits of time, memory, rows and
// bytes read and returned that the query cannot change, the query killed
// in ClickHouse once Gantry gives up (tables.DB.UserQuery). Tables
// without it cannot serve the query API: Gantry never runs a caller's SQL
// through Query, which is for its own.
type userQuerier interface {
	UserQuery(ctx context.Context, sql string) (*api.QueryResult, error)
}

// queryTable runs read-only SQL over an endpoint's inference table.
func (s *Scheduler) queryTable(w http.ResponseWriter, r *http.Request) {
	var req api.QueryRequest
	if err := decode(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	if strings.TrimSpace(req.SQL) == "" {
		writeError(w, invalid("sql: required"))
		return
	}
	// The table holds callers' payloads: CAN_MANAGE, as Databricks asks
	// for the inference table's schema.
	if _, err := s.needEndpoint(r, req.Endpoint, identity.CanManage); err != nil {
		writeError(w, err)
		return
	}
	s.mu.Lock()
	ep, err := s.lookup(req.Endpoint)
	var c *api.AutoCaptureConfig
	if err == nil {
		c = captureConfig(ep.AIGateway, &ep.Config)
	}
	s.mu.Unlock()
	if err != nil {
		writeError(w, err)
		return
	}
	t, ok := payloadTable(req.Endpoint, c)
	if !ok {
		writeError(w, invalid("endpoint %s has no inference table; enable config.auto_capture_config", req.Endpoint))
		return
	}
	if s.cfg.Tables == nil {
		writeError(w, api.Errorf(api.ErrTemporarilyUnavailable, "inference tables are off in this Gantry: %s", s.cfg.TablesOff))
		return
	}
	uq, ok := s.cfg.Tables.(userQuerier)
	if !ok {
		writeError(w, api.Errorf(api.ErrTemporarilyUnavailable, "this Gantry's inference tables cannot run queries from callers under limits"))
		return
	}
	// The deadline is UserQuery's (its Limits.Timeout); the request's
	// context still ends it early when the client goes away.
	res, err := uq.UserQuery(r.Context(), strings.ReplaceAll(req.SQL, "{table}", t.String()))
	if err != nil {
		writeError(w, queryError(err))
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// queryError keeps an *api.Error (the query was refused: bad SQL, a write,
// a table function, SETTINGS, KILL, a result or read over the limits),
// makes a deadline a 504 and anything else a 503: ClickHouse could not
// run it now or did not answer.
func queryError(err error) error {
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return api.Errorf(api.ErrDeadlineExceeded, "query the inference table: %v", err)
	}
	return api.Errorf(api.ErrTemporarilyUnavailable, "query the inference table: %v", err)
}
