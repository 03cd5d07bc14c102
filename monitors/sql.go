package monitors

import (
	"strconv"
	"strings"
)

// Metric tables. Both are long (one metric per row) so that a new metric
// needs no migration, and both are ReplacingMergeTree keyed on everything
// that names a value: writing a window again replaces its rows (the
// highest version wins; read with FINAL), it never adds a second copy.
// Rows of one key share a window_start and so a partition, which FINAL
// needs. The key holds the granularity, so that changing a monitor's
// granularity leaves the old rows apart instead of mixing them.
const (
	profileSuffix = "_profile_metrics"
	driftSuffix   = "_drift_metrics"
	profileDDL    = `(
	monitor String,
	granularity String,
	window_start DateTime,
	window_end DateTime,
	served_entity String,
	slice_key String,
	slice_value String,
	column_name String,
	metric String,
	value Float64,
	version UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(window_start)
ORDER BY (monitor, granularity, window_start, served_entity, slice_key, slice_value, column_name, metric)`
	driftDDL = `(
	monitor String,
	granularity String,
	window_start DateTime,
	window_end DateTime,
	served_entity String,
	slice_key String,
	slice_value String,
	column_name String,
	drift_type String,
	metric String,
	value Float64,
	version UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(window_start)
ORDER BY (monitor, granularity, window_start, served_entity, slice_key, slice_value, column_name, drift_type, metric)`
)

// Drift types.
const (
	Consecutive = "CONSECUTIVE" // each window against the one before it
	BaselineRef = "BASELINE"    // each window against the monitor's baseline
)

// PSIBins is the number of PSI bins, and psiFloor the share an empty bin
// counts as (PSI is infinite otherwise). The bin edges are the reference's
// deciles: edge k (k = 1..9) is the reference's sorted value at index
// floor(k*n/10), counting from 0; equal edges merge, so a reference with
// few distinct values has fewer bins. A value v falls in bin j = how many
// edges are <= v (0..edges). PSI = sum over bins (p - q) ln(p / q), with
// p the window's share and q the reference's, each at least psiFloor.
const (
	PSIBins  = 10
	psiFloor = 1e-4
)

// quantiles of the profile: quantilesExact picks the sorted value at index
// floor(level*n) (from 0), an observed value, not an interpolation.
var quantiles = []struct {
	name  string
	level string
}{{"p25", "0.25"}, {"median", "0.5"}, {"p75", "0.75"}, {"p90", "0.9"}, {"p99", "0.99"}}

// inList is an SQL IN list of the names of cols of kind k.
func inList(cols []Column, k Kind) string {
	var q []string
	for _, c := range cols {
		if c.Kind == k {
			q = append(q, quote(c.Name))
		}
	}
	if len(q) == 0 {
		return "('')" // no column has that kind; '' names none
	}
	return "(" + strings.Join(q, ", ") + ")"
}

// head is the first columns every metric row starts with.
func (m *Monitor) head(window string) string {
	g := strconv.FormatInt(m.Window().Milliseconds(), 10)
	return quote(m.Name) + ", " + quote(m.Granularity) + ", toDateTime(intDiv(" + window + ", 1000)), toDateTime(intDiv(" + window + " + " + g + ", 1000))"
}

// profileSQL writes the profile metrics of the windows of samples that
// start at or after fromMs (the samples hold the window before, for
// CONSECUTIVE drift). count counts every row, nulls included;
// the other metrics describe the non-null values. stddev is the sample
// standard deviation (n-1); a metric without a finite value (the mean of
// no values, the stddev of one) is left out.
func (m *Monitor) profileSQL(table, samples string, fromMs int64, version uint64) string {
	numeric := []string{
		"tuple('count', toFloat64(n))", "tuple('null_count', toFloat64(nulls))",
		"tuple('null_fraction', nulls / n)", "tuple('distinct_count', toFloat64(distinct_num))",
		"tuple('mean', if(valid > 0, mean, nan))", "tuple('stddev', if(valid > 1, sd, nan))",
		"tuple('min', if(valid > 0, mn, nan))", "tuple('max', if(valid > 0, mx, nan))",
	}
	var levels []string
	for i, q := range quantiles {
		levels = append(levels, q.level)
		numeric = append(numeric, "tuple('"+q.name+"', if(valid > 0, qs["+strconv.Itoa(i+1)+"], nan))")
	}
	categorical := []string{
		"tuple('count', toFloat64(n))", "tuple('null_count', toFloat64(nulls))",
		"tuple('null_fraction', nulls / n)", "tuple('distinct_count', toFloat64(distinct_label))",
	}
	return `INSERT INTO ` + table + ` (monitor, granularity, window_start, window_end, served_entity, slice_key, slice_value, column_name, metric, value, version)
SELECT ` + m.head("w") + `, served_entity, slice_key, slice_value, column_name, mv.1, mv.2, toUInt64(` + strconv.FormatUint(version, 10) + `)
FROM (
	SELECT w, served_entity, slice_key, slice_value, column_name,
		arrayJoin(if(column_name IN ` + inList(m.watched(), Numeric) + `,
			[` + strings.Join(numeric, ", ") + `],
			[` + strings.Join(categorical, ", ") + `])) AS mv
	FROM (
		SELECT window_ms AS w, served_entity, slice_key, slice_value, column_name,
			count() AS n, sum(is_null) AS nulls, countIf(NOT is_null) AS valid,
			avgIf(num, NOT is_null) AS mean, stddevSampIf(num, NOT is_null) AS sd,
			minIf(num, NOT is_null) AS mn, maxIf(num, NOT is_null) AS mx,
			quantilesExactIf(` + strings.Join(levels, ", ") + `)(num, NOT is_null) AS qs,
			uniqExactIf(num, NOT is_null) AS distinct_num, uniqExactIf(label, NOT is_null) AS distinct_label
		FROM (` + samples + `)
		WHERE window_ms >= ` + strconv.FormatInt(fromMs, 10) + `
		GROUP BY w, served_entity, slice_key, slice_value, column_name
	)
)
WHERE isFinite(mv.2)`
}

// dist sums samples of kind k into one row per window, entity, slice and
// column: d, the sorted array of (value, count) of the non-null values,
// n, their number, and total, the samples' number, nulls included. The statistics below work on these arrays, which
// hold one element per distinct value, so a window of a million requests
// with a thousand distinct values costs a thousand-element array.
func dist(samples string, cols []Column, k Kind) string {
	v := "num"
	if k == Categorical {
		v = "label"
	}
	return `SELECT w, served_entity, slice_key, slice_value, column_name,
		arraySort(groupArrayIf(tuple(v, c), NOT z)) AS d, sumIf(c, NOT z) AS n, sum(c) AS total
	FROM (
		SELECT window_ms AS w, served_entity, slice_key, slice_value, column_name, is_null AS z, ` + v + ` AS v, count() AS c
		FROM (` + samples + `)
		WHERE column_name IN ` + inList(cols, k) + `
		GROUP BY w, served_entity, slice_key, slice_value, column_name, z, v
	)
	GROUP BY w, served_entity, slice_key, slice_value, column_name`
}

// pairs joins each window's distribution (d, n) with its reference's
// (rd, rn, rtotal). CONSECUTIVE: the same distributions shifted one window later,
// so window w meets w-1. BASELINE: the baseline's, by slice and column.
// A window without a reference gets no drift rows.
func (m *Monitor) pairs(cur, ref string, fromMs int64, driftType string) string {
	right := `SELECT w + ` + strconv.FormatInt(m.Window().Milliseconds(), 10) + ` AS window_ms, served_entity, slice_key, slice_value, column_name, d AS rd, n AS rn, total AS rtotal FROM (` + ref + `)`
	using := "window_ms, served_entity, slice_key, slice_value, column_name"
	if driftType == BaselineRef {
		right = `SELECT slice_key, slice_value, column_name, d AS rd, n AS rn, total AS rtotal FROM (` + ref + `)`
		using = "slice_key, slice_value, column_name"
	}
	return `SELECT window_ms, served_entity, slice_key, slice_value, column_name, d, n, total, rd, rn, rtotal
	FROM (SELECT w AS window_ms, served_entity, slice_key, slice_value, column_name, d, n, total FROM (` + cur + `) WHERE w >= ` + strconv.FormatInt(fromMs, 10) + `)
	ALL INNER JOIN (` + right + `) USING (` + using + `)`
}

// driftInsert wraps the metrics of pairs as drift rows. The WHERE repeats
// every column a lambda captures: 18.16 drops a subquery column that only
// a lambda body names ("Unknown identifier").
func (m *Monitor) driftInsert(table, driftType, pairs, metrics, tuples string, version uint64) string {
	return `INSERT INTO ` + table + ` (monitor, granularity, window_start, window_end, served_entity, slice_key, slice_value, column_name, drift_type, metric, value, version)
SELECT ` + m.head("window_ms") + `, served_entity, slice_key, slice_value, column_name, ` + quote(driftType) + `, mv.1, mv.2, toUInt64(` + strconv.FormatUint(version, 10) + `)
FROM (
	SELECT window_ms, served_entity, slice_key, slice_value, column_name, arrayJoin([` + tuples + `]) AS mv
	FROM (
		SELECT window_ms, served_entity, slice_key, slice_value, column_name,
			` + metrics + `
		FROM (` + pairs + `)
		WHERE n > 0 AND rn > 0 AND notEmpty(d) AND notEmpty(rd)
	)
)`
}

// numericMetrics are KS, Wasserstein and PSI of (d, n) against (rd, rn).
//
// The two sorted arrays are merged into one of (value, count here, count
// in the reference), sorted by value, and running sums of both counts
// give the two empirical CDFs at each element. A value present on both
// sides takes two elements; only the last one of a run of equal values
// holds both CDFs' values there, so KS (the largest CDF gap) looks at run
// ends only. Wasserstein-1 is the area between the CDFs, the sum of
// gap * (next value - value), in which the inner elements of a run add
// zero. The next value comes in as a shifted copy of the array, NaN after
// the last (values are never NaN: numberRE refuses it), rather than by
// indexing the array inside the lambda: ClickHouse copies an array that a
// lambda body names once per element, which made a window of 50,000
// distinct values take seconds. No lambda below names an array it does
// not take as an argument, except arrays of at most PSIBins elements, or
// inside a lambda over at most PSIBins elements. These are scipy's ks_2samp statistic and wasserstein_distance.
// PSI bins as PSIBins says.
//
// The KS p-value is the asymptotic one, the Kolmogorov distribution's
// survival function at D * sqrt(n*m/(n+m)) (scipy's
// kstwobign.sf), from its two series: the alternating one above 1 and
// the theta-function one below, each exact to double precision within 50
// terms there. scipy's ks_2samp computes an exact p-value for small
// samples instead, which this approaches as the windows grow.
var numericMetrics = `arraySort(arrayConcat(
				arrayMap(t -> tuple(t.1, t.2, toUInt64(0)), d),
				arrayMap(t -> tuple(t.1, toUInt64(0), t.2), rd))) AS x_merged,
			arrayMap(t -> t.1, x_merged) AS x_vals,
			arrayPushBack(arrayPopFront(x_vals), nan) AS x_next,
			arrayMap((a, b) -> abs(a / n - b / rn),
				arrayCumSum(arrayMap(t -> t.2, x_merged)),
				arrayCumSum(arrayMap(t -> t.3, x_merged))) AS x_gap,
			arrayReduce('max', arrayMap((g, v, w) -> if(w != v, g, 0), x_gap, x_vals, x_next)) AS x_ks,
			arraySum(arrayMap((g, v, w) -> if(isNaN(w), 0, g * (w - v)), x_gap, x_vals, x_next)) AS x_wd,
			x_ks * sqrt(toFloat64(n) * rn / (n + rn)) AS x_lam,
			if(x_lam <= 0, 1, greatest(0, least(1, if(x_lam < 1,
				1 - sqrt(2 * pi()) / x_lam * arraySum(arrayMap(k -> exp(-pow(2 * k + 1, 2) * pi() * pi() / (8 * x_lam * x_lam)), range(50))),
				2 * arraySum(arrayMap(k -> pow(-1, k) * exp(-2 * pow(k + 1, 2) * x_lam * x_lam), range(50))))))) AS x_ks_pvalue,
			arrayMap(t -> t.1, rd) AS x_rv,
			arrayCumSum(arrayMap(t -> t.2, rd)) AS x_rcum,
			arrayDistinct(arrayMap(j -> arrayFirst((v, c) -> c > intDiv(j * rn, ` + strconv.Itoa(PSIBins) + `), x_rv, x_rcum),
				arrayMap(j -> j + 1, range(` + strconv.Itoa(PSIBins-1) + `)))) AS x_edges,
			arrayMap(t -> arraySum(arrayMap(e -> t.1 >= e, x_edges)), d) AS x_pbin,
			arrayMap(t -> arraySum(arrayMap(e -> t.1 >= e, x_edges)), rd) AS x_qbin,
			arrayMap(j -> greatest(arraySum(arrayMap((b, t) -> if(b = j, t.2, 0), x_pbin, d)) / n, ` + psiFloorSQL + `), range(length(x_edges) + 1)) AS x_pf,
			arrayMap(j -> greatest(arraySum(arrayMap((b, t) -> if(b = j, t.2, 0), x_qbin, rd)) / rn, ` + psiFloorSQL + `), range(length(x_edges) + 1)) AS x_qf,
			arraySum(arrayMap((p, q) -> (p - q) * log(p / q), x_pf, x_qf)) AS x_psi,
			arraySum(arrayMap(t -> t.1 * t.2, d)) / n - arraySum(arrayMap(t -> t.1 * t.2, rd)) / rn AS x_mean_delta,
			` + deltas

var numericTuples = "tuple('" + KS + "', x_ks), tuple('" + KSP + "', toFloat64(x_ks_pvalue)), tuple('" + Wasserstein + "', x_wd), tuple('" + PSI + "', x_psi), tuple('" +
	MeanDelta + "', x_mean_delta), " + deltaTuples

// deltas are what every column gets: the change in the number of samples
// (nulls included) and in the null fraction, this window minus the
// reference. Counts become Float64 before subtracting: UInt64 would wrap.
const deltas = `toFloat64(total) - toFloat64(rtotal) AS x_count_delta,
			(total - n) / total - (rtotal - rn) / rtotal AS x_null_delta`

var deltaTuples = "tuple('" + CountDelta + "', x_count_delta), tuple('" + NullFractionDelta + "', x_null_delta)"

var psiFloorSQL = strconv.FormatFloat(psiFloor, 'g', -1, 64)

// categoricalMetrics compare the categories' shares p (here) and q (the
// reference) over the union of categories seen on either side. The union
// is made like numericMetrics' merge: the two sorted (label, count) arrays
// sorted together, a label on both sides adding up at the end of its run.
//   - total variation distance, sum |p - q| / 2;
//   - L-infinity distance, max |p - q|;
//   - Jensen-Shannon distance in base 2 (so within [0, 1]), scipy's
//     jensenshannon(p, q, base=2): sqrt((KL(p||m) + KL(q||m)) / 2), m = (p+q)/2;
//   - chi-squared: Pearson's test of homogeneity on the 2 x k table of
//     counts (this window's, the reference's), without Yates' correction,
//     scipy's chi2_contingency(table, correction=False). Its p-value is
//     the chi-squared survival function with k-1 degrees of freedom,
//     Q(k/2 - 1/2, x/2), computed exactly by the finite series that hold
//     for whole and half-whole shapes (terms in log space through lgamma,
//     erfc for the half-whole case), since ClickHouse has no gamma CDF.
//     One category on both sides: statistic 0, p-value 1, like scipy.
var categoricalMetrics = `arraySort(arrayConcat(
				arrayMap(t -> tuple(t.1, t.2, toUInt64(0)), d),
				arrayMap(t -> tuple(t.1, toUInt64(0), t.2), rd))) AS x_merged,
			arrayMap(t -> t.1, x_merged) AS x_l,
			arrayMap(t -> t.2, x_merged) AS x_a,
			arrayMap(t -> t.3, x_merged) AS x_b,
			arrayMap((l, w, r) -> r = 1 OR l != w, x_l, arrayPushBack(arrayPopFront(x_l), ''), arrayReverse(arrayEnumerate(x_l))) AS x_end,
			arrayMap((l, w, i) -> i > 1 AND l = w, x_l, arrayPushFront(arrayPopBack(x_l), ''), arrayEnumerate(x_l)) AS x_peq,
			arrayFilter((c, e) -> e, arrayMap((c, pc, eq) -> c + if(eq, pc, 0), x_a, arrayPushFront(arrayPopBack(x_a), toUInt64(0)), x_peq), x_end) AS x_po,
			arrayFilter((c, e) -> e, arrayMap((c, pc, eq) -> c + if(eq, pc, 0), x_b, arrayPushFront(arrayPopBack(x_b), toUInt64(0)), x_peq), x_end) AS x_qo,
			length(x_po) AS x_k,
			arrayMap(c -> c / n, x_po) AS x_p,
			arrayMap(c -> c / rn, x_qo) AS x_q,
			0.5 * arraySum(arrayMap((a, b) -> abs(a - b), x_p, x_q)) AS x_tv,
			arrayReduce('max', arrayMap((a, b) -> abs(a - b), x_p, x_q)) AS x_linf,
			sqrt(greatest(0, 0.5 * arraySum(arrayMap((a, b) -> if(a > 0, a * log2(2 * a / (a + b)), 0), x_p, x_q))
				+ 0.5 * arraySum(arrayMap((a, b) -> if(b > 0, b * log2(2 * b / (a + b)), 0), x_p, x_q)))) AS x_js,
			arraySum(arrayMap((a, b) -> pow(a - n * (a + b) / (n + rn), 2) / (n * (a + b) / (n + rn))
				+ pow(b - rn * (a + b) / (n + rn), 2) / (rn * (a + b) / (n + rn)), x_po, x_qo)) AS x_chi2,
			x_k - 1 AS x_dof,
			x_chi2 / 2 AS x_half,
			if(x_half <= 0 OR x_dof = 0, 1,
				if(x_dof % 2 = 0,
					arraySum(arrayMap(k -> exp(-x_half + k * log(x_half) - lgamma(k + 1)), range(toUInt64(intDiv(x_dof, 2))))),
					erfc(sqrt(x_half)) + arraySum(arrayMap(k -> exp(-x_half + (k + 0.5) * log(x_half) - lgamma(k + 1.5)), range(toUInt64(intDiv(x_dof, 2))))))) AS x_pvalue,
			` + deltas

var categoricalTuples = "tuple('" + ChiSquared + "', x_chi2), tuple('" + ChiSquaredP + "', toFloat64(x_pvalue)), tuple('" +
	TotalVariation + "', x_tv), tuple('" + LInfinity + "', x_linf), tuple('" + JensenShannon + "', x_js), " + deltaTuples
