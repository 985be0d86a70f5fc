#!/usr/bin/env bash
# Throughput of chatd's engines with the project's load tool, in one run:
#   storage: memory only vs SQLite sync = off / batch / always (issue 4)
#   cluster: one room on one node vs the same room spread over two nodes
#            sharing a private redis-server (issue 7)
# Each row is one chatload fanout run (every delivery counted, latency from
# the send timestamp). chatd is pinned to CPU 0, chatload to CPU 1; in the
# two-node case both nodes share CPU 0 and Redis runs on CPU 1.
#
# Every configuration runs each rate of RATES (messages/s in total) in turn,
# on one server process; its saturation is the highest rate with no loss
# and p99 < P99_MS, reported with its ratio to memory only.
#
# Each row also gives the server's CPU time per delivery at its saturation
# step (CPU seconds / deliveries): with the server on one core, 1 / that
# cost is the rate at which it would run out of CPU, a finer figure than
# the doubling steps when two builds are compared.
#
# --baseline BIN runs every configuration with BIN as well, right before
# the same configuration of this build (rows labelled "... @baseline"), and
# reports this build's cost per delivery relative to the baseline's: the
# "no throughput regression" check of a refactor, in one run.
#
# Usage: bench/engines.sh [--build-dir DIR] [--out FILE] [--baseline BIN]
# Sizes (environment): CLIENTS=200 SENDERS=10 RATES="500 1000 2000 4000 8000"
# PAYLOAD=64 DURATION=5 P99_MS=200. To run fewer configurations (e.g. to
# repeat a comparison): STORAGE_MODES="memory batch" (default "memory off
# batch always"), CLUSTER_NODES="1" (default "1 2"; "" skips the cluster).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=build-bench
OUT=""
BASELINE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) BUILD=$2; shift ;;
    --out) OUT=$2; shift ;;
    --baseline) BASELINE=$(readlink -f "$2"); shift ;;
    -h|--help) sed -n 2,25p "$0"; exit 0 ;;
    *) echo "engines.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
: "${CLIENTS:=200}" "${SENDERS:=10}" "${RATES:=500 1000 2000 4000 8000}" "${PAYLOAD:=64}" "${DURATION:=5}" "${P99_MS:=200}"
: "${STORAGE_MODES=memory off batch always}" "${CLUSTER_NODES=1 2}"

scripts/setup.sh --test >/dev/null
scripts/build.sh "$BUILD" -DCHATD_TESTS=OFF >/dev/null
CHATD_CUR=$PWD/$BUILD/chatd
CHATD=$CHATD_CUR
[ -z "$BASELINE" ] || [ -x "$BASELINE" ] || { echo "engines.sh: $BASELINE is not an executable" >&2; exit 2; }
LOAD=$PWD/$BUILD/tools/chatload/chatload
TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

free_port() { /usr/bin/python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# start_chatd NAME PORT EXTRA_TOML: sets CHATD_PID. Not called in $( ):
# PIDS must be this shell's, or stop_all and the EXIT trap miss the server.
start_chatd() {
  local name=$1 port=$2 extra=$3 cfg=$TMP/$1.toml
  printf '[server]\nport = %s\nnode_id = "%s"\n[limits]\nrate = 100000\nburst = 100000\nsend_queue_messages = 4096\nsend_queue_bytes = 8388608\n[log]\nlevel = "warn"\n%b' \
    "$port" "$name" "$extra" > "$cfg"
  taskset -c 0 "$CHATD" -c "$cfg" > "$TMP/$name.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && { CHATD_PID=${PIDS[-1]}; return; }
    sleep 0.05
  done
  echo "engines.sh: $name did not start" >&2; cat "$TMP/$name.log" >&2; exit 1
}

stop_all() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  PIDS=()
}

run_load() {   # label pid url...   (one JSON line per rate of RATES)
  local label=$1 pid=$2 rate; shift 2
  local urls=()
  for u in "$@"; do urls+=(--url "$u"); done
  for rate in $RATES; do
    taskset -c 1 "$LOAD" --mode fanout "${urls[@]}" --clients "$CLIENTS" --senders "$SENDERS" \
      --rate "$rate" --payload "$PAYLOAD" --duration "$DURATION" --server-pid "$pid" --label "$label" \
      2>>"$TMP/load.err" | tail -1 || true   # chatload exits non-zero on a lossy step
    kill -0 "$pid" 2>/dev/null || break
  done
}

results=$TMP/results.jsonl
: > "$results"

# run_storage SUFFIX / run_cluster SUFFIX: every configuration with $CHATD,
# labels ending in SUFFIX ("" or "@baseline").
run_storage() {
  local sfx=$1 mode port pid extra
  for mode in $STORAGE_MODES; do
    port=$(free_port)
    if [ "$mode" = memory ]; then extra='[storage]\npath = ""\n'
    else extra="[storage]\npath = \"$TMP/$mode$sfx.db\"\nsync = \"$mode\"\n"; fi
    start_chatd "st-$mode" "$port" "$extra"
    pid=$CHATD_PID
    run_load "storage-$mode$sfx" "$pid" "ws://127.0.0.1:$port/ws" >> "$results"
    curl -s "http://127.0.0.1:$port/metrics" | grep -E '^chatd_storage_(commits_total|messages_total|commit_seconds_(total|max)) ' \
      | sed "s/^/storage-$mode$sfx /" >> "$TMP/storage-metrics.txt" || true
    stop_all
  done
}

run_cluster() {
  local sfx=$1 p1 p2 pid1 cluster
  RPORT=$(free_port)
  taskset -c 1 redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$TMP" --logfile "$TMP/redis.log" &
  PIDS+=($!)
  for _ in $(seq 100); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.05; done
  cluster="[storage]\npath = \"\"\n[cluster]\nredis = \"redis://127.0.0.1:$RPORT\"\n"
  p1=$(free_port)
  start_chatd n1 "$p1" "$cluster"
  pid1=$CHATD_PID
  case " $CLUSTER_NODES " in *" 1 "*)
    run_load "cluster-1-node$sfx" "$pid1" "ws://127.0.0.1:$p1/ws" >> "$results" ;;
  esac
  case " $CLUSTER_NODES " in *" 2 "*)
    p2=$(free_port)
    start_chatd n2 "$p2" "$cluster"
    run_load "cluster-2-nodes$sfx" "$pid1" "ws://127.0.0.1:$p1/ws" "ws://127.0.0.1:$p2/ws" >> "$results" ;;
  esac
  stop_all
}

if [ -n "$BASELINE" ]; then
  CHATD=$BASELINE; run_storage @baseline
fi
CHATD=$CHATD_CUR; run_storage ""
if [ -n "$CLUSTER_NODES" ]; then
  if [ -n "$BASELINE" ]; then
    CHATD=$BASELINE; run_cluster @baseline
  fi
  CHATD=$CHATD_CUR; run_cluster ""
fi

/usr/bin/python3 - "$results" "$TMP/storage-metrics.txt" "$P99_MS" <<'EOF' | tee ${OUT:+"$OUT"}
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
bound = float(sys.argv[3])
labels = []
for r in rows:
    if r["label"] not in labels:
        labels.append(r["label"])
def ok(r):
    return (r["lost"] == 0 and r["connected"] == r["clients"] and r["latency_ms"]["p99"] < bound
            and r["send_behind"] <= 0.01 * r["rate"] * r["duration_s"])
sat = {}
for l in labels:
    good = [r for r in rows if r["label"] == l and ok(r)]
    sat[l] = max(good, key=lambda r: r["deliveries_per_s"]) if good else None
print("Saturation: the highest step with no loss and p99 < %g ms; ratio to memory only." % bound)
print()
def cost(r):   # server CPU µs per delivery at that step
    d = r.get("deliveries_per_s") or 0
    return r.get("server_cpu_pct", 0) / 100.0 / d * 1e6 if d else None
print("| run | saturation deliveries/s | ratio to memory only | p50 ms | p99 ms | server CPU % | chatload CPU % | server CPU µs/delivery | steps (offered deliveries/s → p99 ms, loss) |")
print("|---|---|---|---|---|---|---|---|---|")
for l in labels:
    b = sat[l]
    steps = ", ".join("%.0fk→%.2f%s" % (r["rate"] * r["clients"] / 1000, r["latency_ms"]["p99"],
                                         "" if r["lost"] == 0 else " lost %.2f%%" % r["loss_pct"])
                      for r in rows if r["label"] == l)
    base = sat.get("storage-memory" + ("@baseline" if l.endswith("@baseline") else ""))
    if b:
        ratio = "%.2f" % (b["deliveries_per_s"] / base["deliveries_per_s"]) if base else "–"
        c = cost(b)
        print("| %s | %.0f | %s | %.2f | %.2f | %.0f | %.0f | %s | %s |" % (
            l, b["deliveries_per_s"], ratio, b["latency_ms"]["p50"], b["latency_ms"]["p99"],
            b.get("server_cpu_pct", 0), b.get("tool_cpu_pct", 0), "%.3f" % c if c else "–", steps))
    else:
        print("| %s | none passed | – | – | – | – | – | – | %s |" % (l, steps))
pairs = [(l, l + "@baseline") for l in labels if l + "@baseline" in labels]
if pairs:
    print()
    print("This build against --baseline, at each configuration's highest step that both passed:")
    print("server CPU per delivery (lower is better) and the saturation it implies on one core.")
    print()
    print("| run | baseline µs/delivery | this build µs/delivery | this / baseline | implied saturation ratio |")
    print("|---|---|---|---|---|")
    for l, bl in pairs:
        cur = {r["rate"]: r for r in rows if r["label"] == l and ok(r)}
        old = {r["rate"]: r for r in rows if r["label"] == bl and ok(r)}
        both = sorted(set(cur) & set(old))
        if not both:
            print("| %s | – | – | – | no common passing step |" % l)
            continue
        c1, c0 = cost(cur[both[-1]]), cost(old[both[-1]])
        if c1 and c0:
            print("| %s | %.3f | %.3f | %.2f | %.2f |" % (l, c0, c1, c1 / c0, c0 / c1))
try:
    print()
    print("Storage commits (from /metrics after each configuration):")
    for line in open(sys.argv[2]):
        print("    " + line.rstrip())
except FileNotFoundError:
    pass
EOF
