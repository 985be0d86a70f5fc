#!/usr/bin/env bash
# Publish-API throughput and its effect on fan-out (issue 13), in one run:
#   1. POST /api/publish throughput with tools/api_load.py at 1, 4 and 8
#      keep-alive connections, memory only and with storage.sync = "batch"
#      (each answer waits for the commit);
#   2. S2a's fan-out (chatload: 1000 clients in one room, 10 senders,
#      100 messages/s of 64 B = 100,000 deliveries/s) alone, then with
#      api_load publishing into another room over 8 connections at the same
#      time, to show what API load does to the chat's latency.
# chatd is pinned to CPU 0; chatload and api_load to CPU 1. api_load is
# Python (one thread per connection, each waiting for its answer): its
# throughput is the tool's as much as chatd's, so chatd's CPU is reported
# beside it.
#
# Usage: bench/api.sh [--build-dir DIR] [--out FILE]
# Sizes (environment): DURATION=10 CONNS="1 4 8"
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=build-bench
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) BUILD=$2; shift ;;
    --out) OUT=$2; shift ;;
    -h|--help) sed -n 2,17p "$0"; exit 0 ;;
    *) echo "api.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
: "${DURATION:=10}" "${CONNS:=1 4 8}"

scripts/setup.sh --test >/dev/null
scripts/build.sh "$BUILD" -DCHATD_TESTS=OFF >/dev/null
CHATD=$PWD/$BUILD/chatd
LOAD=$PWD/$BUILD/chatload/chatload
TMP=$(mktemp -d)
PID=""
cleanup() { [ -z "$PID" ] || kill "$PID" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT

free_port() { /usr/bin/python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

(umask 077; openssl rand -hex 32 > "$TMP/api.keys")
results=$TMP/results.txt
: > "$results"

start_chatd() {   # label storage_toml
  WS_PORT=$(free_port); API_PORT=$(free_port)
  printf '[server]\nport = %s\n[api]\nlisten = "127.0.0.1"\nport = %s\nkeys_file = "%s"\n[limits]\nrate = 1000000\nburst = 1000000\nsend_queue_messages = 256\nsend_queue_bytes = 1048576\n[log]\nlevel = "warn"\n%b' \
    "$WS_PORT" "$API_PORT" "$TMP/api.keys" "$2" > "$TMP/$1.toml"
  taskset -c 0 "$CHATD" -c "$TMP/$1.toml" > "$TMP/$1.log" 2>&1 &
  PID=$!
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$API_PORT/healthz" >/dev/null && return
    sleep 0.05
  done
  echo "api.sh: chatd did not start" >&2; cat "$TMP/$1.log" >&2; exit 1
}

stop_chatd() { kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""; }

api_load() {   # label connections [extra args]
  local label=$1 n=$2 t0 t1; shift 2
  t0=$(cpu_ticks "$PID")
  taskset -c 1 /usr/bin/python3 tools/api_load.py --url "http://127.0.0.1:$API_PORT" \
    --key-file "$TMP/api.keys" --connections "$n" --duration "$DURATION" "$@" 2>/dev/null \
    | tail -1 > "$TMP/one.json"
  t1=$(cpu_ticks "$PID")
  /usr/bin/python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); r["label"]=sys.argv[2]; r["server_cpu_pct"]=round((int(sys.argv[4])-int(sys.argv[3]))/100/r["duration"]*100,1); print(json.dumps(r))' \
    "$TMP/one.json" "$label" "$t0" "$t1" >> "$results"
}

fanout() {   # label
  echo "{\"label\": \"$1\", \"chatload\": $(taskset -c 1 "$LOAD" --url "ws://127.0.0.1:$WS_PORT/ws" \
    --server-pid "$PID" --label "$1" --mode fanout --clients 1000 --senders 10 --rate 100 --payload 64 \
    --duration "$DURATION" 2>/dev/null | tail -1)}" >> "$results"
}

for st in memory batch; do
  if [ $st = memory ]; then start_chatd $st '[storage]\npath = ""\n'
  else start_chatd $st "[storage]\npath = \"$TMP/api.db\"\nsync = \"batch\"\n"; fi
  for n in $CONNS; do api_load "publish-$st" "$n"; done
  stop_chatd
done

start_chatd fanout '[storage]\npath = ""\n'
fanout "fanout-alone"
api_load "publish-during-fanout" 8 > /dev/null &
APID=$!
sleep 0.5
fanout "fanout-with-publish"
wait "$APID"
stop_chatd

/usr/bin/python3 - "$results" <<'PY' | tee ${OUT:+"$OUT"}
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("| run | connections | publishes/s | publish p50 ms | publish p99 ms | errors | chatd CPU % |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    if "connections" in r:
        print("| %s | %d | %.0f | %.2f | %.2f | %d | %.0f |" % (r["label"], r["connections"], r["per_second"],
              r["latency_p50_ms"] or 0, r["latency_p99_ms"] or 0, r["errors"], r["server_cpu_pct"]))
print()
print("| S2a fan-out (1000 clients, 100,000 deliveries/s) | delivered | lost | p50 ms | p99 ms | chatd CPU % |")
print("|---|---|---|---|---|---|")
for r in rows:
    c = r.get("chatload")
    if c:
        print("| %s | %d | %d | %.2f | %.2f | %.0f |" % (r["label"], c["delivered"], c["lost"],
              c["latency_ms"]["p50"], c["latency_ms"]["p99"], c["server_cpu_pct"]))
PY
