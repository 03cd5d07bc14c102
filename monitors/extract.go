package monitors

import (
	"strconv"
	"strings"
	"time"

	"github.com/gantry/gantry/loggers"
)

// Regular expressions (re2, written as ClickHouse string literals, hence the
// doubled backslashes). Like loggers/report, they read JSON with what 18.16
// has: visitParamExtractRaw finds a key's raw value, extractAll splits it.
const (
	// tokenRE is one element of a flat JSON list: a string with its quotes
	// and escapes (a comma inside it does not split it), or a bare number,
	// true, false or null.
	tokenRE = `'"(?:[^"\\\\]|\\\\.)*"|[^\\s,\\[\\]]+'`
	// flatListRE matches a flat list: "[" not followed by "[" or "{".
	flatListRE = `'^\\s*\\[\\s*([^\\s\\[{]|\\])'`
	// rowRE is one row of dataframe_split's data: a flat list, strings
	// skipped whole so that a "]" inside one does not end it. The outer
	// list does not match, since its first element starts with "[".
	rowRE = `'\\[(?:[^\\[\\]"]|"(?:[^"\\\\]|\\\\.)*")*\\]'`
	// objectRE is one record of dataframe_records or instances: a flat
	// object, strings skipped whole.
	objectRE = `'\\{(?:[^{}"]|"(?:[^"\\\\]|\\\\.)*")*\\}'`
	// numberRE is a JSON number. toFloat64OrNull alone would also take
	// "nan" and "inf", which are not JSON.
	numberRE = `'^-?[0-9]+(\\.[0-9]+)?([eE][-+]?[0-9]+)?$'`
)

// A sample is one value of one watched column in one row of a request. The
// samples query gives one row per sample and slice with the columns
//
//	window_ms Int64        start of the sample's window, Unix ms (0 for a baseline)
//	served_entity String   ('' for a baseline: it pools every entity)
//	slice_key String       the slice expression ('' for the whole window)
//	slice_value String
//	column_name String
//	is_null UInt8          missing, JSON null, or (numeric columns) not a number
//	num Float64            the value of a numeric column
//	label String           the value of a categorical column as text
//
// Both sources (the inference table and a baseline table) first give, per
// row of data, for each referenced column i, z<i> (null) and s<i> (the value
// as text); samples turns those into the rows above.

// referenced are the columns the samples query reads: the watched ones,
// then the slice columns not watched.
func (m *Monitor) referenced() (cols []string, slices []slice) {
	seen := map[string]bool{}
	for _, c := range m.watched() {
		cols = append(cols, c.Name)
		seen[c.Name] = true
	}
	for _, s := range m.Slices {
		sl, _ := parseSlice(s) // Validate has passed
		slices = append(slices, sl)
		if !seen[sl.column] {
			cols = append(cols, sl.column)
			seen[sl.column] = true
		}
	}
	return cols, slices
}

// samples turns per-row text values (the rows of src) into sample rows.
func (m *Monitor) samples(src string) string {
	cols, slices := m.referenced()
	idx := map[string]string{}
	for i, c := range cols {
		idx[c] = strconv.Itoa(i)
	}
	num := func(i string) string { return "toFloat64OrZero(s" + i + ")" }
	isNum := func(i string) string { return "match(s" + i + ", " + numberRE + ")" }
	// 1 and 1.0 are one category: numbers are normalised through Float64.
	label := func(i string) string { return "if(" + isNum(i) + ", toString(" + num(i) + "), s" + i + ")" }

	sl := []string{"tuple('', '')"}
	for _, s := range slices {
		i := idx[s.column]
		sl = append(sl, "tuple("+quote(s.expr)+", "+s.valueSQL("z"+i, num(i), isNum(i), label(i))+")")
	}
	var cv []string
	for _, c := range m.watched() {
		i := idx[c.Name]
		if c.Kind == Numeric {
			cv = append(cv, "tuple("+quote(c.Name)+", toUInt8(NOT "+isNum(i)+"), "+num(i)+", '')")
		} else {
			cv = append(cv, "tuple("+quote(c.Name)+", toUInt8(z"+i+"), toFloat64(0), if(z"+i+", '', "+label(i)+"))")
		}
	}
	return `SELECT window_ms, served_entity, sl.1 AS slice_key, sl.2 AS slice_value,
		cv.1 AS column_name, cv.2 AS is_null, cv.3 AS num, cv.4 AS label
	FROM (
		SELECT window_ms, served_entity,
			arrayJoin([` + strings.Join(sl, ", ") + `]) AS sl,
			arrayJoin([` + strings.Join(cv, ", ") + `]) AS cv
		FROM (` + src + `)
	)`
}

// payloadRows reads the inference table's successful, non-shadow requests
// arriving in [from, to) and gives one row per row of data, with z<i> and
// s<i> for each referenced column. windowed false pools the rows into one
// window and one entity (a baseline time range).
//
// Request formats, flat scalar values only:
//   - dataframe_split: {"columns": [...], "data": [[...], ...]};
//   - records: dataframe_records, or instances or inputs as a list of
//     objects, [{"col": v, ...}, ...];
//   - columns: instances or inputs as an object of lists, {"col": [...]}.
//
// The prediction of row k is element k of the response's flat
// "predictions" list. A request has as many rows as the longest of these
// lists, so a request whose inputs cannot be read (a tensor, a body too
// large to log) still gives its predictions, and null features that the
// null count shows. Shadow answers are left out: they duplicate the
// inputs of real requests.
//
// Every per-request list is ARRAY JOINed in parallel, each padded to the
// row count, rather than indexed per row: indexing would copy each list
// once per row, quadratic in the request's size.
func (m *Monitor) payloadRows(from, to time.Time, windowed bool) string {
	cols, _ := m.referenced()
	g := strconv.FormatInt(m.Window().Milliseconds(), 10)
	win, entity := "intDiv(timestamp_ms, "+g+") * "+g, "served_entity"
	if !windowed {
		win, entity = "0", "''"
	}
	var vals, colLists, joins []string
	lengths := []string{"length(rows_raw)", "length(preds)"}
	for i, c := range cols {
		n := strconv.Itoa(i)
		var tok string
		if c == PredictionColumn {
			tok = "pred"
		} else {
			// A column's position in dataframe_split's columns, its key in
			// a record, or its list in a columns object. Names passed
			// CheckIdent, so '"c"' needs no escaping.
			tok = `multiIf(split, cells[indexOf(cols, '"` + c + `"')], columnar, cv` + n + `, visitParamExtractRaw(row, '` + c + `'))`
			colLists = append(colLists, `if(columnar, extractAll(visitParamExtractRaw(inraw, '`+c+`'), `+tokenRE+`), emptyArrayString()) AS cl`+n)
			lengths = append(lengths, "length(cl"+n+")")
			joins = append(joins, "arrayResize(cl"+n+", nrows, '') AS cv"+n)
		}
		vals = append(vals,
			"replaceRegexpAll("+tok+`, '^\\s+|\\s+$', '') AS t`+n,
			"t"+n+" IN ('', 'null') AS z"+n,
			// A JSON string is unescaped by wrapping it in an object for
			// visitParamExtractString, the one JSON string decoder 18.16 has.
			"if(z"+n+", '', if(startsWith(t"+n+`, '"'), visitParamExtractString(concat('{"v":', t`+n+`, '}'), 'v'), t`+n+")) AS s"+n)
	}
	perRequest := ""
	if len(colLists) > 0 {
		perRequest = ",\n\t\t\t\t\t" + strings.Join(colLists, ",\n\t\t\t\t\t")
	}
	joins = append([]string{"arrayResize(rows_raw, nrows, '') AS row", "arrayResize(preds, nrows, '') AS pred"}, joins...)
	// The row level names what it keeps, so that no whole list is copied
	// down to each row.
	keep := []string{"window_ms", "served_entity", "split", "cols", "columnar", "row", "pred"}
	for _, j := range joins[2:] {
		keep = append(keep, j[strings.LastIndex(j, " ")+1:])
	}
	f, t := from.UTC(), to.UTC()
	return `SELECT window_ms, served_entity, ` + strings.Join(vals, ",\n\t\t\t") + `
		FROM (
			SELECT ` + strings.Join(keep, ", ") + `, if(split, extractAll(row, ` + tokenRE + `), emptyArrayString()) AS cells
			FROM (
				SELECT *, arrayReduce('max', [` + strings.Join(lengths, ", ") + `]) AS nrows
				FROM (
					SELECT ` + win + ` AS window_ms, ` + entity + ` AS served_entity,
						position(request, '"dataframe_split"') > 0 AS split,
						if(split, extractAll(visitParamExtractRaw(request, 'columns'), ` + tokenRE + `), emptyArrayString()) AS cols,
						multiIf(position(request, '"dataframe_records"') > 0, visitParamExtractRaw(request, 'dataframe_records'),
							position(request, '"instances"') > 0, visitParamExtractRaw(request, 'instances'),
							visitParamExtractRaw(request, 'inputs')) AS inraw,
						NOT split AND match(inraw, '^\\s*\\{') AS columnar,
						multiIf(split, extractAll(visitParamExtractRaw(request, 'data'), ` + rowRE + `),
							columnar, emptyArrayString(), extractAll(inraw, ` + objectRE + `)) AS rows_raw,
						visitParamExtractRaw(response, 'predictions') AS praw,
						if(match(praw, ` + flatListRE + `), extractAll(praw, ` + tokenRE + `), emptyArrayString()) AS preds` + perRequest + `
					FROM ` + m.Table.Quoted() + ` FINAL
					WHERE date >= toDate('` + f.Format(time.DateOnly) + `') AND date <= toDate('` + t.Format(time.DateOnly) + `')
						AND timestamp_ms >= ` + strconv.FormatInt(f.UnixMilli(), 10) + ` AND timestamp_ms < ` + strconv.FormatInt(t.UnixMilli(), 10) + `
						AND status_code < 400 AND shadow = 0 AND endpoint = ` + quote(m.Endpoint) + `
				)
			)
			ARRAY JOIN ` + strings.Join(joins, ", ") + `
		)`
}

// tableRows reads a baseline table: one row per row, each referenced
// column taken by its name, any type, as text (numbers through toString,
// so they read as numbers again).
func (m *Monitor) tableRows(t loggers.Table) string {
	cols, _ := m.referenced()
	var vals []string
	for i, c := range cols {
		n := strconv.Itoa(i)
		vals = append(vals, "isNull(`"+c+"`) AS z"+n, "ifNull(toString(`"+c+"`), '') AS s"+n)
	}
	return "SELECT toInt64(0) AS window_ms, '' AS served_entity, " + strings.Join(vals, ", ") + " FROM " + t.Quoted()
}
