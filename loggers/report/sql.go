package report

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The SQL runs on ClickHouse 18.16 and on current releases, so it avoids
// what 18.16 lacks (JSONExtract*, window functions, DateTime64) and leans on
// what both have: visitParamExtractRaw and extractAll to read predictions,
// arrayJoin to count them, quantilesExact and -If combinators, LIMIT BY, and
// ANY LEFT JOIN with USING.
//
// Every value spliced into the SQL is an integer, a float or a date that Go
// formatted, the endpoint name as an escaped string literal, or an
// identifier that passed loggers.CheckIdent (and is backquoted anyway).
// "{table}" is the endpoint's inference table; the query API fills it in.

// Regular expressions (re2, written as ClickHouse string literals, hence the
// doubled backslashes).
const (
	// flatListRE matches the raw JSON of a flat list: "[" not followed by a
	// nested list or object. Nested predictions (predict_proba rows,
	// dataframe outputs) are counted as unreadable rather than misread.
	flatListRE = `'^\\s*\\[\\s*([^\\s\\[{]|\\])'`
	// tokenRE splits a flat JSON list into its elements: a string with its
	// quotes and escapes (so a comma inside it does not split it), or a bare
	// number, true, false or null.
	tokenRE = `'"(?:[^"\\\\]|\\\\.)*"|[^\\s,\\[\\]]+'`
	// numberRE is a JSON number. toFloat64OrNull would also take "nan" and
	// "inf", which are not JSON and would make a class label look numeric.
	numberRE = `'^-?[0-9]+(\\.[0-9]+)?([eE][-+]?[0-9]+)?$'`
)

// text is a token as text: a JSON string unescaped (by wrapping it in an
// object for visitParamExtractString, the one JSON string decoder 18.16
// has), a number normalised (1.0 and 1 are one class), anything else as is.
func text(token, numeric, value string) string {
	return fmt.Sprintf(`if(%s, toString(%s), if(startsWith(%s, '"'), visitParamExtractString(concat('{"v":', %s, '}'), 'v'), %s))`,
		numeric, value, token, token, token)
}

// base selects the rows of the window, one per request (FINAL collapses
// redelivered copies), with preds: the elements of the answer's
// "predictions" list, empty when there is none or it is not flat.
func (s *Spec) base() string {
	from, to := s.From.UTC(), s.To.UTC()
	return `SELECT served_entity, shadow, status_code, execution_time_ms, client_request_id,
		visitParamExtractRaw(response, 'predictions') AS raw,
		match(raw, ` + flatListRE + `) AS readable,
		if(readable, extractAll(raw, ` + tokenRE + `), emptyArrayString()) AS preds
	FROM {table} FINAL
	WHERE date >= toDate('` + from.Format(time.DateOnly) + `') AND date <= toDate('` + to.Format(time.DateOnly) + `')
		AND timestamp_ms >= ` + strconv.FormatInt(from.UnixMilli(), 10) + ` AND timestamp_ms < ` + strconv.FormatInt(to.UnixMilli(), 10) + `
		AND endpoint = ` + quote(s.Endpoint)
}

// statsSQL counts requests and errors and takes latency quantiles per
// entity. Latency covers every request, errors included: a fast 503 is part
// of what the entity's users saw. quantilesExact picks an observed value
// (the element at floor(level*n) of the sorted latencies), so p50 of an even
// count is the upper middle one.
func (s *Spec) statsSQL() string {
	return `SELECT served_entity, shadow, requests, errors, latency[1] AS p50_ms, latency[2] AS p99_ms, unreadable
FROM (
	SELECT served_entity, shadow,
		count() AS requests,
		countIf(status_code >= 400) AS errors,
		quantilesExact(0.5, 0.99)(execution_time_ms) AS latency,
		countIf(status_code < 400 AND NOT readable) AS unreadable
	FROM (` + s.base() + `)
	GROUP BY served_entity, shadow
)
ORDER BY served_entity, shadow`
}

// tokens is one row per prediction of a successful answer: a request with
// many rows has many predictions.
func (s *Spec) tokens() string {
	return `SELECT served_entity, shadow, token,
		match(token, ` + numberRE + `) AS is_num,
		toFloat64OrZero(token) AS num,
		` + text("token", "is_num", "num") + ` AS label
	FROM (` + s.base() + `)
	ARRAY JOIN preds AS token
	WHERE status_code < 400`
}

// predictionsSQL summarises the predictions per entity: how many, how many
// are numbers (and whole numbers), their mean and p10/p50/p90, and how
// many distinct values there are.
func (s *Spec) predictionsSQL() string {
	return `SELECT served_entity, shadow, predictions, numbers, whole, mean, q[1] AS p10, q[2] AS p50, q[3] AS p90, distinct_values
FROM (
	SELECT served_entity, shadow,
		count() AS predictions,
		countIf(is_num) AS numbers,
		countIf(is_num AND num = floor(num)) AS whole,
		avgIf(num, is_num) AS mean,
		quantilesExactIf(0.1, 0.5, 0.9)(num, is_num) AS q,
		uniqExact(label) AS distinct_values
	FROM (` + s.tokens() + `)
	GROUP BY served_entity, shadow
)
ORDER BY served_entity, shadow`
}

// topSQL is the most frequent prediction values per entity, ties broken
// by value so that the answer is stable.
func (s *Spec) topSQL() string {
	return `SELECT served_entity, shadow, label, count() AS n
FROM (` + s.tokens() + `)
GROUP BY served_entity, shadow, label
ORDER BY served_entity, shadow, n DESC, label
LIMIT ` + strconv.Itoa(MaxTop) + ` BY served_entity, shadow`
}

// accuracySQL compares the first prediction of each successful answer
// that has a client_request_id with the label of the same key.
//
// It is an ANY LEFT JOIN plus a matched flag rather than an ANY INNER
// JOIN: current ClickHouse takes ANY INNER JOIN to keep one row per key on
// both sides, which would drop a shadow answer that shares its
// client_request_id with the real one. ANY LEFT JOIN keeps every request
// and takes one label for it on 18.16 and on current releases alike.
// Rows without a label get the column defaults, so gantry_matched is 0.
func (s *Spec) accuracySQL() string {
	l := s.Labels
	key, col := "`"+l.Key+"`", "`"+l.Column+"`"
	correct := `if(pnum AND lnum, pv = lv, ptext = gantry_label)`
	if l.Threshold != nil {
		// A probability becomes class 1 at or above the threshold; a
		// prediction or a label that is not a number never matches.
		correct = `if(pnum AND lnum, toFloat64(pv >= ` + strconv.FormatFloat(*l.Threshold, 'g', -1, 64) + `) = lv, 0)`
	}
	return `SELECT served_entity, shadow, count() AS labelled, sum(correct) AS correct
FROM (
	SELECT served_entity, shadow,
		match(first_token, ` + numberRE + `) AS pnum,
		toFloat64OrZero(first_token) AS pv,
		` + text("first_token", "pnum", "pv") + ` AS ptext,
		match(gantry_label, ` + numberRE + `) AS lnum,
		toFloat64OrZero(gantry_label) AS lv,
		` + correct + ` AS correct
	FROM (
		SELECT served_entity, shadow, client_request_id AS gantry_key, preds[1] AS first_token
		FROM (` + s.base() + `)
		WHERE status_code < 400 AND client_request_id != '' AND notEmpty(preds)
	)
	ANY LEFT JOIN (
		SELECT ifNull(toString(` + key + `), '') AS gantry_key, ifNull(toString(` + col + `), '') AS gantry_label, toUInt8(1) AS gantry_matched
		FROM ` + l.Table.Quoted() + `
		WHERE isNotNull(` + key + `) AND isNotNull(` + col + `)
	) USING gantry_key
	WHERE gantry_matched = 1
)
GROUP BY served_entity, shadow
ORDER BY served_entity, shadow`
}

// quote is s as a ClickHouse string literal.
func quote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}
