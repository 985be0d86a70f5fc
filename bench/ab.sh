#!/usr/bin/env bash
# Compare two chatd builds on the same fan-out load, in one run: the "no
# throughput regression" check of a change (issues 12 and 14).
#
# Timed mode (default): for each rate, PAIRS pairs of short runs, the two
# builds alternating (A B, B A, ...) so that drift of a shared machine hits
# both alike. Each run is a fresh server pinned to CPU 0 and chatload on
# CPU 1 (one room, CLIENTS members, 10 senders). Per run: the server's CPU
# time per delivery (chatload's --server-pid reading), p99, loss, and
# frames per socket write (chatd's /metrics). Per rate: the median of the
# per-pair ratios B/A and their spread.
#
# Instruction mode (--instr): each build under callgrind, at a small load,
# for DURATION and 3 x DURATION; the difference is the steady state's
# user-space instructions per delivery, without connection setup. It counts
# instructions, not seconds: the same figure whatever else the machine does
# (the kernel's share is not in it: compare syscalls with the timed mode).
#
# Usage: bench/ab.sh --base BIN [--new BIN] [--engine memory|batch|cluster]
#                    [--rates "4000 12000"] [--clients 200] [--pairs 6]
#                    [--duration 4] [--instr] [--out DIR]
# --new defaults to this tree's build (build-bench/chatd). --rates are
# messages/s in total (each delivered to every member). Writes rows.txt,
# summary.txt and, in timed mode, ab.png into --out (default
# build-bench/ab-results/<time>).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD=build-bench
BASE="" NEW="" ENGINE=memory RATES="4000 12000" CLIENTS=200 PAIRS=6 DUR=4 INSTR=0 OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --base) BASE=$(readlink -f "$2"); shift ;;
    --new) NEW=$(readlink -f "$2"); shift ;;
    --engine) ENGINE=$2; shift ;;
    --rates) RATES=$2; shift ;;
    --clients) CLIENTS=$2; shift ;;
    --pairs) PAIRS=$2; shift ;;
    --duration) DUR=$2; shift ;;
    --instr) INSTR=1 ;;
    --out) OUT=$2; shift ;;
    -h|--help) sed -n 2,26p "$0"; exit 0 ;;
    *) echo "ab.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$BASE" ] && [ -x "$BASE" ] || { echo "ab.sh: --base BIN (an executable chatd) is required" >&2; exit 2; }
case "$ENGINE" in memory|batch|cluster) ;; *) echo "ab.sh: --engine memory, batch or cluster" >&2; exit 2 ;; esac

scripts/setup.sh --test >&2
if [ "$INSTR" = 1 ] && ! command -v valgrind >/dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get install -y -qq --no-install-recommends valgrind >&2
fi
if [ -z "$NEW" ]; then
  scripts/build.sh "$BUILD" -DCHATD_TESTS=OFF >&2
  NEW=$ROOT/$BUILD/chatd
fi
cmake -S tools/chatload -B "$BUILD/chatload" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD/chatload" -j2 >&2
LOAD=$ROOT/$BUILD/chatload/chatload
[ -n "$OUT" ] || OUT=$BUILD/ab-results/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

RPORT=""
if [ "$ENGINE" = cluster ]; then
  RPORT=$(( 16400 + RANDOM % 500 ))
  taskset -c 1 redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$OUT" --logfile "$OUT/redis.log" &
  PIDS+=($!)
  for _ in $(seq 100); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.05; done
fi

config() { # file port
  cat > "$1" <<EOF
[server]
listen = "127.0.0.1"
port = $2
max_connections = 10000
handshake_timeout = 60
[heartbeat]
interval = 600
timeout = 1200
[limits]
rate = 1000000
burst = 1000000
send_queue_messages = 4096
send_queue_bytes = 4194304
total_queue_bytes = 1073741824
[log]
level = "warn"
EOF
  case "$ENGINE" in
    memory) printf '[storage]\npath = ""\n' >> "$1" ;;
    batch) rm -f "$OUT"/store.db*; printf '[storage]\npath = "%s/store.db"\nsync = "batch"\n' "$OUT" >> "$1" ;;
    cluster) redis-cli -p "$RPORT" flushall >/dev/null
             printf '[storage]\npath = ""\n[cluster]\nredis = "redis://127.0.0.1:%s"\n' "$RPORT" >> "$1" ;;
  esac
}

wait_port() { # port pid
  for _ in $(seq 300); do
    (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

PORT=$(( 20000 + RANDOM % 2000 ))
{
  echo "date_utc=$(date -u +%Y-%m-%dT%H:%MZ) machine=$(uname -srm), $(nproc) cores"
  echo "A=$BASE ($("$BASE" --version 2>&1 | head -1))"
  echo "B=$NEW ($("$NEW" --version 2>&1 | head -1))"
  echo "engine=$ENGINE clients=$CLIENTS rates=$RATES pairs=$PAIRS duration=$DUR instr=$INSTR"
} > "$OUT/meta.txt"
: > "$OUT/rows.txt"

# ---- instruction mode ----
if [ "$INSTR" = 1 ]; then
  rate=${RATES%% *}
  for tag in A B; do
    bin=$BASE; [ $tag = B ] && bin=$NEW
    for d in "$DUR" $(( DUR * 3 )); do
      PORT=$((PORT + 1))
      config "$OUT/$tag-$d.toml" "$PORT"
      valgrind --tool=callgrind --callgrind-out-file="$OUT/cg-$tag-$d.out" "$bin" -c "$OUT/$tag-$d.toml" \
        > "$OUT/cg-$tag-$d.log" 2>&1 &
      pid=$!; PIDS+=($pid)
      wait_port "$PORT" "$pid" || { echo "ab.sh: $bin did not start under valgrind (see $OUT/cg-$tag-$d.log)" >&2; exit 1; }
      "$LOAD" --mode fanout --clients "$CLIENTS" --senders 10 --rate "$rate" --payload 64 --duration "$d" \
        --drain 5 --url "ws://127.0.0.1:$PORT/ws" --label "$tag" > "$OUT/cg-$tag-$d.json" 2>> "$OUT/chatload.stderr"
      kill -TERM "$pid"; wait "$pid" || true
    done
  done
  "$PY" bench/ab_report.py instr "$OUT" "$DUR" | tee "$OUT/summary.txt"
  exit 0
fi

# ---- timed mode ----
for rate in $RATES; do
  for r in $(seq 1 "$PAIRS"); do
    order="A B"; [ $(( r % 2 )) = 0 ] && order="B A"
    for tag in $order; do
      bin=$BASE; [ $tag = B ] && bin=$NEW
      PORT=$((PORT + 1))
      config "$OUT/c.toml" "$PORT"
      taskset -c 0 "$bin" -c "$OUT/c.toml" > "$OUT/srv-$rate-$tag-$r.log" 2>&1 &
      pid=$!; PIDS+=($pid)
      wait_port "$PORT" "$pid" || { echo "ab.sh: $bin did not start (see $OUT/srv-$rate-$tag-$r.log)" >&2; exit 1; }
      taskset -c 1 "$LOAD" --mode fanout --clients "$CLIENTS" --senders 10 --rate "$rate" --payload 64 \
        --duration "$DUR" --url "ws://127.0.0.1:$PORT/ws" --server-pid "$pid" --label "$tag" \
        > "$OUT/load-$rate-$tag-$r.json" 2>> "$OUT/chatload.stderr"
      # frames per socket write, from chatd's own counters
      fpw=$(exec 3<>/dev/tcp/127.0.0.1/"$PORT"; printf 'GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n' >&3; cat <&3 |
            awk '/^chatd_frames_out_total/ {f=$2} /^chatd_socket_writes_total/ {w=$2} END {if (w > 0) printf "%.2f", f/w; else print 0}')
      kill -TERM "$pid"; wait "$pid" || true
      echo "$rate $tag $r $fpw $OUT/load-$rate-$tag-$r.json" >> "$OUT/rows.txt"
      "$PY" bench/ab_report.py row "$OUT/load-$rate-$tag-$r.json" "$rate $tag $r" "$fpw" >&2
    done
  done
done
"$PY" bench/ab_report.py timed "$OUT" | tee "$OUT/summary.txt"
