// Package publish copies feature tables from ClickHouse (the offline
// store, where features are computed with SQL) to the online store, in
// Databricks' three modes: SNAPSHOT (a whole new copy swapped in at once),
// TRIGGERED (the rows newer than the last sync) and CONTINUOUS (TRIGGERED
// every Interval until published again in another mode).
//
// The SQL runs on ClickHouse 18.16 and current releases: argMax per key for
// the latest row, toDateTime on both sides of the watermark so that Date
// and DateTime keys compare alike.
package publish

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/features"
	"github.com/gantry/gantry/features/onlinestore"
)

// DefaultInterval is how often a CONTINUOUS table looks for new rows.
const DefaultInterval = time.Second

// querier is the part of a ClickHouse connection the publisher uses.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (driver.Rows, error)
}

var _ querier = (driver.Conn)(nil)

// OpenClickHouse connects to ClickHouse's native protocol at addr.
func OpenClickHouse(ctx context.Context, addr, user, password string) (driver.Conn, error) {
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr:        []string{addr},
		Auth:        clickhouse.Auth{Username: user, Password: password},
		DialTimeout: 5 * time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("clickhouse %s: %w", addr, err)
	}
	if err := conn.Ping(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("clickhouse %s: %w", addr, err)
	}
	return conn, nil
}

// Config builds a Publisher.
type Config struct {
	ClickHouse querier
	Store      *onlinestore.Store
	// Interval is CONTINUOUS mode's poll period. Default 1 s.
	Interval time.Duration
	// Logger gets sync failures. Default slog.Default().
	Logger *slog.Logger
	// Clock reads the time of syncs (last sync, lag). Default time.Now.
	Clock func() time.Time
}

// Publisher publishes tables and runs CONTINUOUS syncs.
type Publisher struct {
	cfg Config

	// mu guards loops and busy.
	mu sync.Mutex
	// loops cancels each table's CONTINUOUS loop.
	loops map[string]context.CancelFunc
	// busy marks the tables a sync is writing now: publishes of one table
	// take turns, so that two snapshots never interleave their writes.
	busy map[string]*sync.Mutex
	wg   sync.WaitGroup
}

// New returns a Publisher; Close stops its loops.
func New(cfg Config) *Publisher {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	return &Publisher{cfg: cfg, loops: map[string]context.CancelFunc{}, busy: map[string]*sync.Mutex{}}
}

// Close stops every CONTINUOUS loop and waits for them.
func (p *Publisher) Close() {
	p.mu.Lock()
	for _, c := range p.loops {
		c()
	}
	p.loops = map[string]context.CancelFunc{}
	p.mu.Unlock()
	p.wg.Wait()
}

var ident = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// SplitSource checks a source table name "db.table" and splits it.
func SplitSource(src string) (db, table string, err error) {
	db, table, ok := strings.Cut(src, ".")
	if !ok || !ident.MatchString(db) || !ident.MatchString(table) {
		return "", "", api.Errorf(api.ErrInvalidParameterValue,
			"source table %q must be database.table, each of [A-Za-z0-9_] not starting with a digit", src)
	}
	return db, table, nil
}

// Publish publishes src as req says and returns the table's state after
// the first sync. A CONTINUOUS table goes on syncing until it is
// published again in another mode or the Publisher closes.
func (p *Publisher) Publish(ctx context.Context, src string, req api.PublishRequest) (api.OnlineTable, error) {
	if _, _, err := SplitSource(src); err != nil {
		return api.OnlineTable{}, err
	}
	mode := req.PublishSpec.PublishMode
	if mode == "" {
		mode = api.PublishTriggered
	}
	switch mode {
	case api.PublishSnapshot, api.PublishTriggered, api.PublishContinuous:
	default:
		return api.OnlineTable{}, api.Errorf(api.ErrInvalidParameterValue,
			"publish_spec.publish_mode is %q; use TRIGGERED, CONTINUOUS or SNAPSHOT", mode)
	}
	if req.PublishSpec.OnlineStore != "" {
		return api.OnlineTable{}, api.Errorf(api.ErrInvalidParameterValue,
			"publish_spec.online_store is not supported: Gantry has one online store, given by --online-store")
	}
	if len(req.PrimaryKeyColumns) == 0 {
		return api.OnlineTable{}, api.Errorf(api.ErrInvalidParameterValue, "primary_key_columns is required")
	}
	if mode == api.PublishContinuous && req.TimeseriesKey == "" {
		return api.OnlineTable{}, api.Errorf(api.ErrInvalidParameterValue,
			"publish_mode CONTINUOUS needs a timeseries_key to know which rows are new")
	}
	name := req.PublishSpec.OnlineTableName
	if name == "" {
		name = src
	}
	p.stopLoop(src)
	t := api.OnlineTable{Source: src, Name: name, PrimaryKeyColumns: req.PrimaryKeyColumns,
		TimeseriesKey: req.TimeseriesKey, PublishMode: mode, State: api.OnlineTableProvisioning}
	prev, ok, err := p.cfg.Store.Table(ctx, src)
	if err != nil {
		return t, err
	}
	// A TRIGGERED or CONTINUOUS publish of a table published before with
	// the same keys goes on from its watermark.
	full := mode == api.PublishSnapshot || !ok || prev.TimeseriesKey != t.TimeseriesKey ||
		!slices.Equal(prev.PrimaryKeyColumns, t.PrimaryKeyColumns) || t.TimeseriesKey == ""
	if ok && !full {
		t.Watermark, t.Generation, t.Rows, t.Columns = prev.Watermark, prev.Generation, prev.Rows, prev.Columns
	}
	t, err = p.sync(ctx, t, full)
	if err != nil {
		return t, err
	}
	if mode == api.PublishContinuous {
		p.startLoop(src)
	}
	return t, nil
}

// Resume starts the CONTINUOUS loops of the tables the store says are
// continuous (after a restart of the process that ran them).
func (p *Publisher) Resume(ctx context.Context) error {
	ts, err := p.cfg.Store.Tables(ctx)
	if err != nil {
		return err
	}
	for _, t := range ts {
		if t.PublishMode == api.PublishContinuous {
			p.startLoop(t.Source)
		}
	}
	return nil
}

func (p *Publisher) stopLoop(src string) {
	p.mu.Lock()
	if c := p.loops[src]; c != nil {
		c()
		delete(p.loops, src)
	}
	p.mu.Unlock()
}

func (p *Publisher) startLoop(src string) {
	ctx, cancel := context.WithCancel(context.Background())
	p.mu.Lock()
	if c := p.loops[src]; c != nil {
		c()
	}
	p.loops[src] = cancel
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		tick := time.NewTicker(p.cfg.Interval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			t, ok, err := p.cfg.Store.Table(ctx, src)
			if err != nil || !ok || t.PublishMode != api.PublishContinuous {
				if err != nil && ctx.Err() == nil {
					p.cfg.Logger.Warn("continuous sync: online store", "table", src, "err", err)
				}
				continue
			}
			if _, err := p.sync(ctx, t, false); err != nil && ctx.Err() == nil {
				p.cfg.Logger.Warn("continuous sync failed", "table", src, "err", err)
			}
		}
	}()
}

// lock serializes the syncs of one table.
func (p *Publisher) lock(src string) func() {
	p.mu.Lock()
	m := p.busy[src]
	if m == nil {
		m = &sync.Mutex{}
		p.busy[src] = m
	}
	p.mu.Unlock()
	m.Lock()
	return m.Unlock
}

// sync copies t's source to the store: all of it into a new generation
// when full, else the rows at or after the watermark into the current one
// (re-copying the watermark's own second, whose rows may have grown, is
// harmless: each key gets its newest row again).
func (p *Publisher) sync(ctx context.Context, t api.OnlineTable, full bool) (api.OnlineTable, error) {
	defer p.lock(t.Source)()
	started := p.cfg.Clock()
	cols, err := p.describe(ctx, t.Source)
	if err != nil {
		return p.failed(ctx, t, err)
	}
	types := map[string]string{}
	for _, c := range cols {
		types[c.Name] = c.Type
	}
	for _, k := range t.PrimaryKeyColumns {
		if _, ok := types[k]; !ok {
			return t, api.Errorf(api.ErrInvalidParameterValue, "primary_key_columns: %s has no column %s", t.Source, k)
		}
	}
	if t.TimeseriesKey != "" {
		ty, ok := types[t.TimeseriesKey]
		if !ok {
			return t, api.Errorf(api.ErrInvalidParameterValue, "timeseries_key: %s has no column %s", t.Source, t.TimeseriesKey)
		}
		if k := features.Kind(ty); k != "date" && k != "timestamp" {
			return t, api.Errorf(api.ErrInvalidParameterValue, "timeseries_key %s is %s; it must be a Date or DateTime", t.TimeseriesKey, ty)
		}
	}
	var feats []api.FeatureColumn
	for _, c := range cols {
		if !slices.Contains(t.PrimaryKeyColumns, c.Name) {
			feats = append(feats, c)
		}
	}
	if !slices.Equal(feats, t.Columns) {
		full = true // a new schema needs a generation of its own
	}

	var w *onlinestore.Writer
	if full || t.Generation == 0 {
		if w, err = p.cfg.Store.NewGeneration(ctx, t.Source); err != nil {
			return p.failed(ctx, t, err)
		}
		// A sync that fails before the swap leaves rows in a generation
		// no reader will use, and no later publish reuses its number:
		// remove them (Abort is a no-op once committed).
		defer w.Abort(ctx)
		t.Watermark = 0
	} else {
		w = p.cfg.Store.Update(ctx, t.Source, t.Generation)
	}
	sql := selectSQL(t, feats)
	rows, err := p.cfg.ClickHouse.Query(ctx, sql)
	if err != nil {
		return p.failed(ctx, t, fmt.Errorf("read %s: %w", t.Source, err))
	}
	defer rows.Close()
	ctypes := rows.ColumnTypes()
	dest := make([]any, len(ctypes))
	for i, ct := range ctypes {
		dest[i] = reflect.New(ct.ScanType()).Interface()
	}
	nk := len(t.PrimaryKeyColumns)
	watermark := t.Watermark
	var key, val []byte
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return p.failed(ctx, t, fmt.Errorf("read %s: %w", t.Source, err))
		}
		key = key[:0]
		for i := 0; i < nk; i++ {
			if i > 0 {
				key = append(key, features.KeySep)
			}
			key = features.AppendGoKey(key, reflect.ValueOf(dest[i]).Elem().Interface(),
				features.Kind(types[t.PrimaryKeyColumns[i]]) == "date")
		}
		val = append(val[:0], '[')
		for j, c := range feats {
			if j > 0 {
				val = append(val, ',')
			}
			v := reflect.ValueOf(dest[nk+j]).Elem().Interface()
			val = AppendValue(val, v, features.Kind(c.Type))
			if c.Name == t.TimeseriesKey {
				if tm, ok := deref(v).(time.Time); ok && tm.UnixMilli() > watermark {
					watermark = tm.UnixMilli()
				}
			}
		}
		val = append(val, ']')
		if err := w.Put(ctx, string(key), slices.Clone(val)); err != nil {
			return p.failed(ctx, t, err)
		}
	}
	if err := rows.Err(); err != nil {
		return p.failed(ctx, t, fmt.Errorf("read %s: %w", t.Source, err))
	}
	names := make([]string, len(feats))
	for i, c := range feats {
		names[i] = c.Name
	}
	if err := w.Commit(ctx, names); err != nil {
		return p.failed(ctx, t, err)
	}
	t.Generation = w.Generation()
	if t.Rows, err = p.cfg.Store.Count(ctx, t.Source, t.Generation); err != nil {
		return p.failed(ctx, t, err)
	}
	t.Columns, t.Watermark, t.Message = feats, watermark, ""
	t.LastSync = p.cfg.Clock().UnixMilli()
	t.LagMs = 0
	if t.TimeseriesKey != "" && watermark > 0 {
		t.LagMs = max(started.UnixMilli()-watermark, 0)
	}
	t.State = api.OnlineTableOnline
	if t.PublishMode == api.PublishContinuous {
		t.State = api.OnlineTableContinuous
	}
	return t, p.cfg.Store.SaveTable(ctx, t)
}

// failed records a failed sync on t (when the store answers) and returns err.
func (p *Publisher) failed(ctx context.Context, t api.OnlineTable, err error) (api.OnlineTable, error) {
	t.State, t.Message = api.OnlineTableFailed, err.Error()
	if !errors.Is(err, onlinestore.ErrUnavailable) {
		p.cfg.Store.SaveTable(ctx, t)
	}
	return t, err
}

// describe lists src's columns.
func (p *Publisher) describe(ctx context.Context, src string) ([]api.FeatureColumn, error) {
	rows, err := p.cfg.ClickHouse.Query(ctx, "DESCRIBE TABLE "+src)
	if err != nil {
		var ex *clickhouse.Exception
		if errors.As(err, &ex) && (ex.Code == 60 || ex.Code == 81) { // UNKNOWN_TABLE, UNKNOWN_DATABASE
			return nil, api.Errorf(api.ErrResourceDoesNotExist, "source table %s does not exist in ClickHouse", src)
		}
		return nil, fmt.Errorf("describe %s: %w", src, err)
	}
	defer rows.Close()
	n := len(rows.Columns())
	var out []api.FeatureColumn
	for rows.Next() {
		vals := make([]string, n)
		dest := make([]any, n)
		for i := range vals {
			dest[i] = &vals[i]
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("describe %s: %w", src, err)
		}
		out = append(out, api.FeatureColumn{Name: vals[0], Type: vals[1]})
	}
	return out, rows.Err()
}

// selectSQL reads the key columns and then feats: the newest row of each
// key by the timeseries key (argMax; rows at or after the watermark), or
// every row without one.
func selectSQL(t api.OnlineTable, feats []api.FeatureColumn) string {
	var b strings.Builder
	b.WriteString("SELECT ")
	for i, k := range t.PrimaryKeyColumns {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(quote(k))
	}
	ts := quote(t.TimeseriesKey)
	for _, c := range feats {
		b.WriteString(", ")
		switch {
		case t.TimeseriesKey == "":
			b.WriteString(quote(c.Name))
		case c.Name == t.TimeseriesKey:
			b.WriteString("max(" + ts + ")")
		default:
			b.WriteString("argMax(" + quote(c.Name) + ", " + ts + ")")
		}
	}
	b.WriteString(" FROM " + t.Source)
	if t.TimeseriesKey != "" {
		if t.Watermark > 0 {
			fmt.Fprintf(&b, " WHERE toDateTime(%s) >= toDateTime(%d)", ts, t.Watermark/1000)
		}
		b.WriteString(" GROUP BY ")
		for i, k := range t.PrimaryKeyColumns {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(quote(k))
		}
	}
	return b.String()
}

// quote quotes a column name for ClickHouse.
func quote(name string) string { return "`" + strings.ReplaceAll(name, "`", "\\`") + "`" }

func deref(v any) any {
	rv := reflect.ValueOf(v)
	for rv.IsValid() && rv.Kind() == reflect.Pointer {
		if rv.IsNil() {
			return nil
		}
		rv = rv.Elem()
	}
	if !rv.IsValid() {
		return nil
	}
	return rv.Interface()
}

// AppendValue appends v, scanned from a column of kind k (features.Kind),
// as JSON: dates as "2006-01-02", timestamps as RFC 3339 in UTC, NaN and
// infinities as null, Decimals as numbers.
func AppendValue(dst []byte, v any, k string) []byte {
	v = deref(v)
	switch x := v.(type) {
	case nil:
		return append(dst, "null"...)
	case time.Time:
		dst = append(dst, '"')
		if k == "date" {
			dst = x.UTC().AppendFormat(dst, time.DateOnly)
		} else {
			dst = x.UTC().AppendFormat(dst, time.RFC3339)
		}
		return append(dst, '"')
	case string:
		b, _ := jsonMarshal(x)
		return append(dst, b...)
	case bool:
		return strconv.AppendBool(dst, x)
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.AppendInt(dst, rv.Int(), 10)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if k == "boolean" {
			return strconv.AppendBool(dst, rv.Uint() != 0)
		}
		return strconv.AppendUint(dst, rv.Uint(), 10)
	case reflect.Float32, reflect.Float64:
		f := rv.Float()
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return append(dst, "null"...)
		}
		bits := 64
		if rv.Kind() == reflect.Float32 {
			bits = 32
		}
		return strconv.AppendFloat(dst, f, 'g', -1, bits)
	case reflect.Slice, reflect.Array:
		dst = append(dst, '[')
		for i := 0; i < rv.Len(); i++ {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = AppendValue(dst, rv.Index(i).Interface(), features.Kind("Float64"))
		}
		return append(dst, ']')
	}
	if s, ok := v.(fmt.Stringer); ok && k == "float" {
		if f, err := strconv.ParseFloat(s.String(), 64); err == nil {
			return strconv.AppendFloat(dst, f, 'g', -1, 64)
		}
	}
	b, err := jsonMarshal(v)
	if err != nil {
		return append(dst, "null"...)
	}
	return append(dst, b...)
}
