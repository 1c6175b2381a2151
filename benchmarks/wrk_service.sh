#!/usr/bin/env bash
# Search-by-face throughput and latency of `facelens serve` measured with wrk, a load generator written
# in C, so that the clients take little of the machine (bench_service.py's Python clients take ~35% of
# two cores). Needs wrk (Debian/Ubuntu: apt install wrk); not part of the test suite.
#
#   benchmarks/wrk_service.sh HOME COLLECTION [PROCESSES...]     e.g. /tmp/svc_home bench 1 2
#
# For each PROCESSES value: starts `facelens serve --processes P` on a free port with a temporary admin
# key (revoked at the end), 5 s of warm-up, then 20 s with 16 connections searching by a stored face id
# (max_results 10), and prints wrk's latency percentiles and requests/s; then GET /health the same way
# (the HTTP floor). Every search is written to HOME's search log, whose chain is verified at the end.
set -euo pipefail
HOME_DIR=$1; COLLECTION=$2; shift 2
PY=${PYTHON:-python}
cd "$(dirname "$0")/.."
TOKEN=$($PY -m facelens keys create --admin --name wrk_service --home "$HOME_DIR" 2>/dev/null | tail -1)
LUA=$(mktemp --suffix .lua)
trap '$PY -m facelens keys revoke "${TOKEN:3:12}" --home "$HOME_DIR" > /dev/null; rm -f "$LUA"' EXIT
for P in "${@:-1}"; do
  PORT=$($PY -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
  $PY -m facelens serve --home "$HOME_DIR" --port "$PORT" --processes "$P" --rate-limit 0 --no-access-log \
      --purpose-optional "$COLLECTION" --request-timeout 300 2> /dev/null &
  SERVER=$!
  until curl -sf "http://127.0.0.1:$PORT/health" > /dev/null; do sleep 1; done
  sleep 3  # every process up
  FACE=$(curl -s -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/v1/collections/$COLLECTION/faces?limit=1" |
         $PY -c "import json, sys; print(json.load(sys.stdin)['faces'][0]['face_id'])")
  cat > "$LUA" <<LUA
wrk.method = "POST"
wrk.body = '{"face_id": "$FACE", "max_results": 10}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $TOKEN"
LUA
  URL="http://127.0.0.1:$PORT/v1/collections/$COLLECTION/search/face"
  wrk -t2 -c16 -d5s -s "$LUA" "$URL" > /dev/null
  echo "== --processes $P: POST search/face, 16 connections, 20 s"
  wrk -t2 -c16 -d20s --latency -s "$LUA" "$URL" | grep -E " (50|90|99)%|Requests/sec|Non-2xx|errors"
  echo "== --processes $P: GET /health, 16 connections, 10 s"
  wrk -t2 -c16 -d10s --latency "http://127.0.0.1:$PORT/health" | grep -E " (50|90|99)%|Requests/sec|Non-2xx|errors"
  kill -TERM "$SERVER"; wait "$SERVER" || true  # 143: uvicorn re-raises SIGTERM after its graceful shutdown
done
$PY -m facelens log verify --home "$HOME_DIR" | tail -1
