"""Reference values for monitors' parity test, with Debian's python3-scipy.

Reads on stdin {"cases": [{"key": ..., "kind": "numeric"|"categorical",
"cur": [...], "ref": [...]}], "profiles": [{"key": ..., "kind": ...,
"values": [... with nulls]}]} and writes {key/metric: value} on stdout.
The definitions follow monitors/sql.go: PSI bins from the reference's
deciles at sorted index floor(k*n/10), shares floored at 1e-4;
chi-squared is chi2_contingency without Yates' correction; JS in base 2;
the KS p-value is the asymptotic kstwobign.sf(D * sqrt(n*m/(n+m))).
"""
import json
import sys

import numpy as np
from scipy import stats
from scipy.spatial import distance

PSI_BINS, PSI_FLOOR = 10, 1e-4
QUANTILES = [("p25", 0.25), ("median", 0.5), ("p75", 0.75), ("p90", 0.9), ("p99", 0.99)]


def psi(cur, ref):
    s = np.sort(ref)
    n = len(s)
    edges = np.unique(s[[k * n // PSI_BINS for k in range(1, PSI_BINS)]])
    bins = len(edges) + 1
    pb = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=bins) / len(cur)
    qb = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=bins) / n
    p, q = np.maximum(pb, PSI_FLOOR), np.maximum(qb, PSI_FLOOR)
    return float(np.sum((p - q) * np.log(p / q)))


def numeric(cur, ref):
    cur, ref = np.array(cur, dtype=float), np.array(ref, dtype=float)
    d = float(stats.ks_2samp(cur, ref).statistic)
    en = len(cur) * len(ref) / (len(cur) + len(ref))
    return {
        "ks_statistic": d,
        # The asymptotic p-value; ks_2samp's own is exact for small samples.
        "ks_pvalue": float(stats.kstwobign.sf(d * np.sqrt(en))),
        "wasserstein_distance": float(stats.wasserstein_distance(cur, ref)),
        "psi": psi(cur, ref),
    }


def categorical(cur, ref):
    cats = sorted(set(cur) | set(ref))
    pc = np.array([cur.count(c) for c in cats], dtype=float)
    qc = np.array([ref.count(c) for c in cats], dtype=float)
    p, q = pc / pc.sum(), qc / qc.sum()
    if len(cats) > 1:
        chi2, pvalue, _, _ = stats.chi2_contingency(np.array([pc, qc]), correction=False)
    else:
        chi2, pvalue = 0.0, 1.0
    return {
        "chi_squared_statistic": float(chi2),
        "chi_squared_pvalue": float(pvalue),
        "tv_distance": float(0.5 * np.abs(p - q).sum()),
        "l_infinity_distance": float(np.abs(p - q).max()),
        "js_distance": float(distance.jensenshannon(p, q, base=2)),
    }


def profile(kind, values):
    valid = [v for v in values if v is not None]
    out = {"count": len(values), "null_count": len(values) - len(valid),
           "null_fraction": (len(values) - len(valid)) / len(values),
           "distinct_count": len(set(valid))}
    if kind == "numeric" and valid:
        a = np.sort(np.array(valid, dtype=float))
        out.update({"mean": float(a.mean()), "min": float(a[0]), "max": float(a[-1])})
        if len(a) > 1:
            out["stddev"] = float(a.std(ddof=1))
        for name, level in QUANTILES:
            out[name] = float(a[int(level * len(a))])
    return out


def main():
    spec = json.load(sys.stdin)
    out = {}
    for c in spec["cases"]:
        # cur and ref hold nulls: the deltas count them, the rest does not.
        cur = [v for v in c["cur"] if v is not None]
        ref = [v for v in c["ref"] if v is not None]
        if not cur or not ref:
            continue  # no drift without values on both sides
        f = numeric if c["kind"] == "numeric" else categorical
        res = f(cur, ref)
        res["count_delta"] = len(c["cur"]) - len(c["ref"])
        res["null_fraction_delta"] = (1 - len(cur) / len(c["cur"])) - (1 - len(ref) / len(c["ref"]))
        if c["kind"] == "numeric":
            res["mean_delta"] = float(np.mean(cur) - np.mean(ref))
        for metric, v in res.items():
            out[c["key"] + "/" + metric] = v
    for p in spec["profiles"]:
        if not p["values"]:
            continue  # no profile for a slice without rows
        for metric, v in profile(p["kind"], p["values"]).items():
            out[p["key"] + "/" + metric] = v
    json.dump(out, sys.stdout)


main()
