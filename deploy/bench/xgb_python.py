#!/usr/bin/python3
"""Time XGBoost's Python predict on the worker's fixture models.

The Python side of worker/xgboost's BenchmarkPredict: for the same
fixtures and rows (see bench_rows) it times
booster.predict(xgb.DMatrix(rows)), DMatrix construction included as in a
served request, and prints the median time per call in Go's benchmark
format, so that benchstat can show both:

    go test -run '^$' -bench Predict -count 6 ./worker/xgboost/ > go.txt
    deploy/bench/xgb_python.py --count 6 > python.txt
    benchstat go.txt python.txt                 # a table each
    deploy/bench/xgb_python.py --name Predict --count 6 > python.txt
    benchstat -ignore cpu go.txt python.txt     # side by side, with ratios

(Go and /proc/cpuinfo may name the CPU differently, hence -ignore cpu.)
Run it with Debian's /usr/bin/python3, which has python3-xgboost.
"""

import argparse
import json
import os
import platform
import statistics
import timeit

import numpy as np
import xgboost as xgb

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "worker", "testdata", "models")
PKG = "github.com/gantry/gantry/worker/xgboost"


def load_rows(fixture):
    with open(os.path.join(FIXTURES, fixture, "expected.json")) as f:
        exp = json.load(f)
    rows = [[np.nan if v is None else v for v in r] for r in exp["data"]]
    return np.array(rows, dtype=np.float64)


def bench_rows(rows, n):
    """n rows made from rows as worker/xgboost's benchRows makes them: the
    first len(rows) as they are, the others mixing columns of different
    rows, so that the branch predictor cannot learn a short cycle."""
    k = len(rows)
    out = np.empty((n, rows.shape[1]), dtype=np.float64)
    for i in range(n):
        for j in range(rows.shape[1]):
            out[i, j] = rows[(i + 7 * j * (i // k)) % k, j]
    return out


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def bench(fn, repeat):
    """Median seconds per call over repeat runs of an autoranged loop."""
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()  # enough calls for 0.2 s
    times = timer.repeat(repeat=repeat, number=number)
    return number, statistics.median(times) / number


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fixtures", nargs="+", default=["binary", "multiclass"])
    ap.add_argument("--rows", nargs="+", type=int, default=[1, 1000])
    ap.add_argument("--name", default="PythonPredict",
                    help="benchmark name after 'Benchmark' (Predict: same rows as Go's)")
    ap.add_argument("--count", type=int, default=1, help="lines per benchmark, like go test -count")
    ap.add_argument("--repeat", type=int, default=7, help="timing runs per line; the median is printed")
    ap.add_argument("--nthread", type=int, default=0,
                    help="xgboost threads (0: xgboost's default, all cores)")
    args = ap.parse_args()

    print("goos: %s" % platform.system().lower())
    print("goarch: %s" % {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(),
                                                                   platform.machine()))
    print("pkg: %s" % PKG)
    print("cpu: %s" % cpu_name())
    print("# python %s, xgboost %s, nthread %s" % (platform.python_version(), xgb.__version__,
                                                   args.nthread or "default"))
    # Go appends GOMAXPROCS to benchmark names; do the same so names match.
    procs = int(os.environ.get("GOMAXPROCS") or os.cpu_count())
    for fixture in args.fixtures:
        bst = xgb.Booster(model_file=os.path.join(FIXTURES, fixture, "model.json"))
        if args.nthread:
            bst.set_param({"nthread": args.nthread})
        names = bst.feature_names
        rows = load_rows(fixture)
        for n in args.rows:
            batch = bench_rows(rows, n)

            def predict():
                return bst.predict(xgb.DMatrix(batch, feature_names=names,
                                               nthread=args.nthread or None))

            predict()  # warm up
            for _ in range(args.count):
                number, per_call = bench(predict, args.repeat)
                print("Benchmark%s/%s/rows=%d-%d \t%8d\t%12.0f ns/op" % (
                    args.name, fixture, n, procs, number, per_call * 1e9), flush=True)


if __name__ == "__main__":
    main()
