#!/usr/bin/env bash
# make bench-pyfunc: one scikit-learn model (the py_sklearn_pipeline fixture:
# ColumnTransformer + LogisticRegression), served on this machine by
#   gantry-batch    gantry worker, Python runtime, adaptive batching (default)
#   gantry-nobatch  gantry worker, --max-batch-size 1
#   fastapi         FastAPI + uvicorn, one process (the stack of `mlflow models serve`)
# with the same load generator, one-row requests, at 1, 16 and 64
# connections; rounds alternate between the servers so that machine noise
# hits them alike. Then the single-row p50 of model.predict in a Python loop
# (the floor), and cold start (process start to first answer) of the sklearn
# model next to the native XGBoost one.
#
#   deploy/bench/pyfunc.sh       # ROUNDS=2 DURATION=8s CONNS="1 16 64" TRIALS=5
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-8s}
CONNS=${CONNS:-1 16 64}
TRIALS=${TRIALS:-5}
PY=${PYTHON:-/usr/bin/python3}
GANTRY=bin/gantry
MODEL=worker/testdata/models/py_sklearn_pipeline
XGB=worker/testdata/models/binary

work=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT

free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_ping() { for _ in $(seq 600); do curl -sf "http://$1/ping" >/dev/null && return 0; sleep 0.05; done; echo "no /ping on $1" >&2; return 1; }

go build -o "$work/loadgen" ./deploy/bench/loadgen
$PY - "$MODEL/expected.json" >"$work/body.json" <<'PY'
import json, sys
e = json.load(open(sys.argv[1]))
print(json.dumps({"dataframe_split": {"columns": e["columns"], "data": e["data"][:1]}}))
PY

declare -A addr
start_server() { # name, command...
	local name=$1 port
	shift
	port=$(free_port)
	addr[$name]=127.0.0.1:$port
	"$@" "$port" >"$work/$name.log" 2>&1 &
	pids+=($!)
	wait_ping "${addr[$name]}"
}
gantry_on() { exec $GANTRY worker --model-dir "$MODEL" --python "$PY" --listen "127.0.0.1:$1"; }
gantry_off() { exec $GANTRY worker --model-dir "$MODEL" --python "$PY" --max-batch-size 1 --listen "127.0.0.1:$1"; }
fastapi() { exec $PY deploy/bench/pyfunc_python.py serve "$MODEL" "$1"; }
start_server gantry-batch gantry_on
start_server gantry-nobatch gantry_off
start_server fastapi fastapi

echo "# $(date -u +%FT%TZ) $(nproc) cores; $DURATION per run, $ROUNDS rounds; body $(wc -c <"$work/body.json") bytes; $($PY -c 'import sklearn, sys; print("python", sys.version.split()[0], "scikit-learn", sklearn.__version__)')"
for r in $(seq "$ROUNDS"); do
	for c in $CONNS; do
		for name in gantry-batch gantry-nobatch fastapi; do
			"$work/loadgen" -url "http://${addr[$name]}/invocations" -body "$work/body.json" -c "$c" -d "$DURATION" \
				-warmup 1s -label "$name c=$c" -json >>"$work/results.jsonl"
		done
	done
done
$PY - "$work/results.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in rows:
    by.setdefault(r["label"], []).append(r)
med = {k: {m: statistics.median(x[m] for x in v) for m in ("req_per_s", "p50_ms", "p99_ms", "errors")} for k, v in by.items()}
print(f"{'server':24} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}  {'x fastapi':>9}")
for k in by:
    m = med[k]
    base = med["fastapi c=" + k.split("c=")[1]]
    print(f"{k:24} {m['req_per_s']:9.0f} {m['p50_ms']:8.3f} {m['p99_ms']:8.3f} {m['errors']:6.0f}  {m['req_per_s']/base['req_per_s']:9.2f}")
PY
for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
pids=()

echo
$PY deploy/bench/pyfunc_python.py loop "$MODEL" "$work/body.json"

# Cold start: process start to the first 200 answer of a one-row request.
xgb_body=$work/xgb.json
$PY - "$XGB/expected.json" >"$xgb_body" <<'PY'
import json, sys
e = json.load(open(sys.argv[1]))
print(json.dumps({"dataframe_split": {"columns": e["columns"], "data": e["data"][:1]}}))
PY
cold() { # label model body
	local ms=()
	for _ in $(seq "$TRIALS"); do
		local port t0 t1
		port=$(free_port)
		t0=$(date +%s%N)
		$GANTRY worker --model-dir "$2" --python "$PY" --listen "127.0.0.1:$port" >"$work/cold.log" 2>&1 &
		local p=$!
		until curl -sf -o /dev/null -H 'Content-Type: application/json' --data-binary @"$3" "http://127.0.0.1:$port/invocations"; do sleep 0.005; done
		t1=$(date +%s%N)
		kill "$p"; wait "$p" 2>/dev/null || true
		ms+=($(( (t1 - t0) / 1000000 )))
	done
	printf '%s\n' "${ms[@]}" | sort -n | awk -v l="$1" '{a[NR]=$1} END {printf "cold start %-22s p50=%dms min=%dms max=%dms (n=%d)\n", l, a[int((NR+1)/2)], a[1], a[NR], NR}'
}
cold "sklearn (python host)" "$MODEL" "$work/body.json"
cold "xgboost (native)" "$XGB" "$xgb_body"
