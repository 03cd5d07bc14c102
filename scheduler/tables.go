package scheduler

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/gantry/gantry/api"
)

// queryTimeout bounds one query through the API.
const queryTimeout = 60 * time.Second

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
	ctx, cancel := context.WithTimeout(r.Context(), queryTimeout)
	defer cancel()
	res, err := s.cfg.Tables.Query(ctx, strings.ReplaceAll(req.SQL, "{table}", t.String()))
	if err != nil {
		writeError(w, queryError(err))
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// queryError keeps an *api.Error (the query was refused: bad SQL, a write,
// too many rows), makes a deadline a 504 and anything else a 503:
// ClickHouse could not run it now or did not answer.
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
