#!/usr/bin/env bash
# Measures one invocation path three ways with the same load generator and
# connection count: straight to a worker, through the activator (gantry dev),
# and through nginx as a reverse proxy to the same worker. Rounds alternate
# between the three so that machine noise hits them alike; the summary gives
# medians over rounds and the ratios to the direct path.
#
#   deploy/bench/proxy.sh            # ROUNDS=3 CONNS=16 DURATION=10s
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-16}
DURATION=${DURATION:-10s}
PY=/usr/bin/python3

work=$(mktemp -d)
cleanup() {
	[ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
	[ -n "${dev:-}" ] && kill "$dev" 2>/dev/null && wait "$dev" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

go build -o "$work/loadgen" ./deploy/bench/loadgen
GANTRY=bin/gantry
port=$(free_port)
export GANTRY_ADDR=http://127.0.0.1:$port
export GANTRY_DATA_DIR=$work/data # the CLI reads the admin token gantry dev writes there
$GANTRY dev --listen 127.0.0.1:$port --data-dir "$work/data" >"$work/dev.log" 2>&1 &
dev=$!
for _ in $(seq 100); do curl -sf "$GANTRY_ADDR/healthz" >/dev/null && break; sleep 0.1; done

model=worker/testdata/models/binary
$GANTRY models upload bench "$model" >/dev/null
echo '{"name": "bench-ep", "config": {"served_entities": [{"entity_name": "bench", "entity_version": "1"}]}}' >"$work/ep.json"
$GANTRY endpoints create -f "$work/ep.json" --wait >/dev/null 2>&1
routes=$(curl -sf -H "Authorization: Bearer $(cat "$work/data/admin-token")" "$GANTRY_ADDR/api/2.0/gantry/routes")
worker=$(echo "$routes" | $PY -c 'import json,sys; t=json.load(sys.stdin); print(t["endpoints"][0]["entities"][0]["replicas"][0]["addr"])')
# The worker answers only requests that carry its deployment's secret, as the activator's do.
secret=$(echo "$routes" | $PY -c 'import json,sys; t=json.load(sys.stdin); print(t["endpoints"][0]["entities"][0]["secret"])')

# One row of the fixture, as a client would send it.
$PY - "$model/expected.json" >"$work/body.json" <<'PY'
import json, sys
e = json.load(open(sys.argv[1]))
print(json.dumps({"dataframe_split": {"columns": e["columns"], "data": e["data"][:1]}}))
PY

nport=$(free_port)
cat >"$work/nginx.conf" <<NGINX
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
    access_log off;
    upstream worker { server $worker; keepalive 64; }
    server {
        listen 127.0.0.1:$nport;
        location / {
            proxy_pass http://worker/invocations;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Gantry-Worker-Secret "$secret";
        }
    }
}
NGINX
nginx -c "$work/nginx.conf" -p "$work"
sleep 0.3

declare -A urls=(
	[direct]="http://$worker/invocations"
	[activator]="$GANTRY_ADDR/serving-endpoints/bench-ep/invocations"
	[nginx]="http://127.0.0.1:$nport/"
)
echo "# $(date -u +%FT%TZ) $(nproc) cores; $CONNS connections, $DURATION per run, $ROUNDS rounds; body $(wc -c <"$work/body.json") bytes"
for r in $(seq "$ROUNDS"); do
	for name in direct activator nginx; do
		"$work/loadgen" -url "${urls[$name]}" -body "$work/body.json" -c "$CONNS" -d "$DURATION" -warmup 1s -label "$name" \
			-token-file "$work/data/admin-token" -header "X-Gantry-Worker-Secret: $secret" -json >>"$work/results.jsonl"
	done
done
$PY - "$work/results.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in rows:
    by.setdefault(r["label"], []).append(r)
med = {k: {m: statistics.median(x[m] for x in v) for m in ("req_per_s", "p50_ms", "p99_ms", "errors")} for k, v in by.items()}
d = med["direct"]
print(f"{'path':10} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}  {'req/s vs direct':>15} {'p50 added ms':>12}")
for k in ("direct", "activator", "nginx"):
    m = med[k]
    print(f"{k:10} {m['req_per_s']:9.0f} {m['p50_ms']:8.3f} {m['p99_ms']:8.3f} {m['errors']:6.0f}  {m['req_per_s']/d['req_per_s']:15.2f} {m['p50_ms']-d['p50_ms']:12.3f}")
a, n = med["activator"], med["nginx"]
print(f"activator/nginx throughput ratio: {a['req_per_s']/n['req_per_s']:.2f}")
PY
