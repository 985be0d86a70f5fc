#!/usr/bin/env bash
# Run the performance scenarios S1..S5 (issue 3) against chatd and the peers
# (Bun pub/sub, Node ws, Go gorilla hub) back to back, each server pinned to
# CPU 0 and chatload to CPU 1, and write the table into docs/performance.md.
#
# Usage: bench/compare.sh [--quick] [--servers "chatd bun node go"] [--scenarios "S1 S2a S2aTLS S2b S3 S4 S5"]
#                         [--chatd-bin PATH] [--baseline-bin PATH] [--build-dir DIR]
#                         [--results DIR] [--doc FILE] [--no-install] [--no-doc]
# Every size is a variable (environment overrides, see the defaults below),
# e.g. S1_CLIENTS=10000 bench/compare.sh --scenarios S1.
# On a fresh Debian 12 machine it installs what it needs (scripts/setup.sh,
# bench/peers/install.sh): apt-get and the npm registry.
# S2aTLS is S2a over wss:// (chatd and Bun only; one self-signed ECDSA P-256
# certificate per results directory, used by both).
# --baseline-bin PATH adds a server "chatd-base": that chatd build with the
# same config, run right after chatd in every scenario, for a "no
# regression" comparison of two builds in one run (BASELINE_REV names it).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

QUICK=0
SERVERS="chatd bun node go"
SCENARIOS="S1 S2a S2aTLS S2b S3 S4 S5"
CHATD_BIN=""
BASE_BIN=""
BUILD=${BUILD_DIR:-build-bench}
RESULTS=""
DOC=docs/performance.md
INSTALL=1
WRITE_DOC=1
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --servers) SERVERS=$2; shift ;;
    --scenarios) SCENARIOS=$2; shift ;;
    --chatd-bin) CHATD_BIN=$2; shift ;;
    --baseline-bin) BASE_BIN=$(readlink -f "$2"); shift ;;
    --build-dir) BUILD=$2; shift ;;
    --results) RESULTS=$2; shift ;;
    --doc) DOC=$2; shift ;;
    --no-install) INSTALL=0 ;;
    --no-doc) WRITE_DOC=0 ;;
    -h|--help) sed -n 2,18p "$0"; exit 0 ;;
    *) echo "compare.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

# ---- sizes: the issue's, or small ones with --quick; each overridable ----
if [ "$QUICK" = 1 ]; then
  : "${S1_CLIENTS:=2000}" "${S1_HOLD:=3}"
  : "${S2_CLIENTS:=200}" "${S2_SENDERS:=10}" "${S2_PAYLOAD:=64}" "${S2A_DELIVERIES:=20000}" "${S2A_DURATION:=3}"
  : "${S2B_START:=20000}" "${S2B_STEPS:=6}" "${S2B_DURATION:=2}"
  : "${S3_CLIENTS:=1000}" "${S3_ROOM_SIZE:=10}" "${S3_DURATION:=3}"
  : "${S4_CLIENTS:=100}" "${S4_SENDERS:=10}" "${S4_RATE:=1000}" "${S4_PAYLOAD:=1024}" "${S4_DURATION:=8}" "${S4_BASE_DURATION:=3}"
  : "${S5_CYCLES:=2000}" "${S5_CONCURRENCY:=50}"
else
  : "${S1_CLIENTS:=19000}" "${S1_HOLD:=5}"
  : "${S2_CLIENTS:=1000}" "${S2_SENDERS:=10}" "${S2_PAYLOAD:=64}" "${S2A_DELIVERIES:=100000}" "${S2A_DURATION:=10}"
  : "${S2B_START:=100000}" "${S2B_STEPS:=8}" "${S2B_DURATION:=5}"
  : "${S3_CLIENTS:=10000}" "${S3_ROOM_SIZE:=10}" "${S3_DURATION:=10}"
  : "${S4_CLIENTS:=100}" "${S4_SENDERS:=10}" "${S4_RATE:=1000}" "${S4_PAYLOAD:=1024}" "${S4_DURATION:=30}" "${S4_BASE_DURATION:=10}"
  : "${S5_CYCLES:=20000}" "${S5_CONCURRENCY:=200}"
fi
: "${S1_ROOM_SIZE:=10}"          # chatd's idle clients join rooms of this size (presence stays small)
: "${S3_SWEEP:=2 4 8}"           # S3's chart: these multiples of the base rate, after it
: "${S2B_P99_MS:=200}"           # saturation: highest rate with no loss and p99 below this
: "${S5_MAX_S:=120}"             # churn: time bound
: "${SERVER_CPU:=0}" "${TOOL_CPU:=1}"
: "${PORT_BASE:=18700}"

[ -n "$RESULTS" ] || RESULTS=$BUILD/bench-results/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$RESULTS"
RESULTS=$(cd "$RESULTS" && pwd)
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
log() { echo "compare: $*" >&2; }

# ---- build and install ----
if [ "$INSTALL" = 1 ]; then
  scripts/setup.sh >&2
  bench/peers/install.sh "$BUILD" >&2
fi
if [ -z "$CHATD_BIN" ]; then
  scripts/build.sh "$BUILD" >&2
  CHATD_BIN=$ROOT/$BUILD/chatd
fi
cmake -S tools/chatload -B "$BUILD/chatload" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD/chatload" -j2 >&2
CHATLOAD=$ROOT/$BUILD/chatload/chatload
"$CHATLOAD" --self-test

# ---- metadata ----
BUN=$ROOT/bench/peers/node_modules/@oven/bun-linux-x64/bin/bun
{
  echo "date_utc=$(date -u +%Y-%m-%dT%H:%MZ)"
  echo "mode=$([ "$QUICK" = 1 ] && echo quick || echo full)"
  echo "machine=$(uname -srm), $(nproc) cores, $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo), $(free -g | awk '/Mem:/{print $2}') GiB"
  echo "os=$(. /etc/os-release; echo "$PRETTY_NAME")"
  # CHATD_REV describes a --chatd-bin built elsewhere (e.g. "git 1234abc")
  echo "chatd=$("$CHATD_BIN" --version 2>&1 | head -1) (${CHATD_REV:-git $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src include CMakeLists.txt 2>/dev/null || echo ' + local changes')})"
  [ -z "$BASE_BIN" ] || echo "chatd_base=$("$BASE_BIN" --version 2>&1 | head -1) (${BASELINE_REV:-$BASE_BIN})"
  echo "libwebsockets=$(dpkg-query -W -f='${Version}' libwebsockets-dev 2>/dev/null || echo '?')"
  echo "bun=$("$BUN" --version 2>/dev/null || echo '?')"
  echo "node=$(node --version 2>/dev/null || echo '?'), ws $(node -p "require('$ROOT/bench/peers/node_modules/ws/package.json').version" 2>/dev/null || echo '?')"
  echo "go=$(go version 2>/dev/null | awk '{print $3}'), gorilla/websocket $(dpkg-query -W -f='${Version}' golang-github-gorilla-websocket-dev 2>/dev/null || echo '?')"
  echo "kernel_knobs=somaxconn $(cat /proc/sys/net/core/somaxconn), tcp_congestion_control $(cat /proc/sys/net/ipv4/tcp_congestion_control), ip_local_port_range $(tr '\t' '-' </proc/sys/net/ipv4/ip_local_port_range), nofile $(ulimit -n)"
  echo "pinning=server on CPU $SERVER_CPU, chatload on CPU $TOOL_CPU (taskset)"
} > "$RESULTS/meta.txt"
: > "$RESULTS/commands.txt"
: > "$RESULTS/events.txt"

# ---- servers ----
SRV_PID=""
SRV_NAME=""
SRV_TLS=0                        # 1: the next start_server serves wss:// (S2aTLS)
PORT=$PORT_BASE
TLS_DIR=$RESULTS/tls

# One self-signed certificate per results directory, the same for every
# server (ECDSA P-256, so both sides do the same handshake work). The IP
# subjectAltName lets chatload --tls-verify check it by hand if wanted.
tls_files() {
  [ -s "$TLS_DIR/cert.pem" ] && [ -s "$TLS_DIR/key.pem" ] && return 0
  mkdir -p "$TLS_DIR"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
    -keyout "$TLS_DIR/key.pem" -out "$TLS_DIR/cert.pem" 2>/dev/null
}

chatd_config() { # file port queue_messages queue_bytes max_connections
  cat > "$1" <<EOF
# chatd bench config (bench/compare.sh): limits raised so that the load,
# not the per-session rate limit or connection cap, is what is measured.
# max_connections stays at its default (10000) unless the scenario needs
# more: chatd sizes its open-files limit, and so libwebsockets' fd table,
# by it.
[server]
listen = "127.0.0.1"
port = $2
max_connections = $5
handshake_timeout = 60
[limits]
rate = 1000000
burst = 1000000
send_queue_messages = $3
send_queue_bytes = $4
total_queue_bytes = 1073741824
[log]
level = "warn"
EOF
  if [ "$SRV_TLS" = 1 ]; then
    cat >> "$1" <<EOF
[tls]
cert = "$TLS_DIR/cert.pem"
key = "$TLS_DIR/key.pem"
EOF
  fi
}

wait_port() {
  local i
  for i in $(seq 1 100); do
    if (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; then return 0; fi
    if ! kill -0 "$SRV_PID" 2>/dev/null; then return 1; fi
    sleep 0.1
  done
  return 1
}

start_server() { # name scenario [queue_messages queue_bytes]
  local name=$1 sc=$2 qm=${3:-4096} qb=${4:-4194304} maxc=10000
  case "$sc" in
    S1) maxc=$(( S1_CLIENTS + 900 )) ;;
    S3) maxc=$(( S3_CLIENTS + 500 )) ;;
  esac
  [ "$maxc" -ge 10000 ] || maxc=10000
  PORT=$((PORT + 1))
  SRV_NAME=$name
  local logf=$RESULTS/$sc-$name.server.log
  case "$name" in
    chatd|chatd-base)
      local bin=$CHATD_BIN
      [ "$name" = chatd-base ] && bin=$BASE_BIN
      chatd_config "$RESULTS/$sc-$name.toml" "$PORT" "$qm" "$qb" "$maxc"
      taskset -c "$SERVER_CPU" "$bin" -c "$RESULTS/$sc-$name.toml" >"$logf" 2>&1 &
      echo "taskset -c $SERVER_CPU $bin -c $sc-$name.toml" >> "$RESULTS/commands.txt" ;;
    *)
      if [ "$SRV_TLS" = 1 ]; then
        TLS_CERT=$TLS_DIR/cert.pem TLS_KEY=$TLS_DIR/key.pem \
          taskset -c "$SERVER_CPU" bench/peers/start.sh "$name" "$PORT" "$BUILD" >"$logf" 2>&1 &
        echo "TLS_CERT=tls/cert.pem TLS_KEY=tls/key.pem taskset -c $SERVER_CPU bench/peers/start.sh $name $PORT" >> "$RESULTS/commands.txt"
      else
        taskset -c "$SERVER_CPU" bench/peers/start.sh "$name" "$PORT" "$BUILD" >"$logf" 2>&1 &
        echo "taskset -c $SERVER_CPU bench/peers/start.sh $name $PORT" >> "$RESULTS/commands.txt"
      fi ;;
  esac
  SRV_PID=$!
  if ! wait_port "$PORT"; then
    log "$name did not start (see $logf)"
    echo "$sc $name: server did not start" >> "$RESULTS/events.txt"
    return 1
  fi
}

stop_server() { # scenario
  local sc=$1 i rc
  [ -n "$SRV_PID" ] || return 0
  if ! kill -0 "$SRV_PID" 2>/dev/null; then
    wait "$SRV_PID" 2>/dev/null && rc=0 || rc=$?
    log "$SRV_NAME died during $sc (exit status $rc)"
    echo "$sc $SRV_NAME: server DIED during the run (exit status $rc); log $sc-$SRV_NAME.server.log" >> "$RESULTS/events.txt"
    SRV_PID=""
    return 0
  fi
  kill -TERM "$SRV_PID" 2>/dev/null || true
  for i in $(seq 1 50); do kill -0 "$SRV_PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$SRV_PID" 2>/dev/null; then
    [[ "$SRV_NAME" = chatd* ]] && echo "$sc $SRV_NAME: did not exit within 5 s of SIGTERM" >> "$RESULTS/events.txt"
    kill -KILL "$SRV_PID" 2>/dev/null || true
  fi
  wait "$SRV_PID" 2>/dev/null || true
  if [[ "$SRV_NAME" = chatd* ]] && grep -qiE "error|assert|sanitizer|abort" "$RESULTS/$sc-$SRV_NAME.server.log"; then
    echo "$sc $SRV_NAME: errors in its log: $(grep -iE "error|assert|sanitizer|abort" "$RESULTS/$sc-$SRV_NAME.server.log" | head -2 | tr '\n' ' ')" >> "$RESULTS/events.txt"
  fi
  SRV_PID=""
}
trap '[ -n "$SRV_PID" ] && kill -KILL "$SRV_PID" 2>/dev/null; true' EXIT

# run_load OUTFILE chatload-args...   (appends the JSON line to OUTFILE)
run_load() {
  local out=$1; shift
  local raw=() scheme=ws
  [[ "$SRV_NAME" = chatd* ]] || raw=(--raw)
  [ "$SRV_TLS" = 1 ] && scheme=wss
  local cmd=(taskset -c "$TOOL_CPU" "$CHATLOAD" "${raw[@]}" --url "$scheme://127.0.0.1:$PORT/ws" --server-pid "$SRV_PID" --label "$SRV_NAME" "$@")
  echo "${cmd[*]}" | sed "s#$ROOT/##g; s#--server-pid [0-9]*#--server-pid \$PID#" >> "$RESULTS/commands.txt"
  "${cmd[@]}" >> "$out" 2> "$RESULTS/last.stderr" || true
  cat "$RESULTS/last.stderr" >> "$RESULTS/chatload.stderr"
  grep -v "^chatload: .* connected" "$RESULTS/last.stderr" >&2 || true
}

jget() { # file expr -> value of the last JSON line
  "$PY" -c "import json,sys; d=json.loads(open(sys.argv[1]).read().strip().splitlines()[-1]); print(eval(sys.argv[2]))" "$1" "$2" 2>/dev/null || echo ""
}

sc_S1() {
  local name=$1 out=$RESULTS/S1-$1.json rooms=1
  [[ "$name" = chatd* ]] && rooms=$(( (S1_CLIENTS + S1_ROOM_SIZE - 1) / S1_ROOM_SIZE ))
  start_server "$name" S1 || return 0
  run_load "$out" --mode idle --clients "$S1_CLIENTS" --rooms "$rooms" --duration "$S1_HOLD" --workers $(( (S1_CLIENTS + 9499) / 9500 ))
  stop_server S1
}

sc_S2a() {
  local name=$1 out=$RESULTS/S2a-$1.json
  local rate=$(( S2A_DELIVERIES / S2_CLIENTS ))
  start_server "$name" S2a || return 0
  run_load "$out" --mode fanout --clients "$S2_CLIENTS" --senders "$S2_SENDERS" --rate "$rate" --payload "$S2_PAYLOAD" --duration "$S2A_DURATION"
  stop_server S2a
}

# S2aTLS: S2a's sizes over wss://, chatd and Bun only (the Node and Go peers
# serve plain ws:// only; they are skipped).
sc_S2aTLS() {
  local name=$1 out=$RESULTS/S2aTLS-$1.json
  local rate=$(( S2A_DELIVERIES / S2_CLIENTS ))
  case "$name" in chatd|chatd-base|bun) ;; *) log "S2aTLS: skipping $name (wss:// peer only for Bun)"; return 0 ;; esac
  tls_files
  SRV_TLS=1
  start_server "$name" S2aTLS || { SRV_TLS=0; return 0; }
  run_load "$out" --mode fanout --clients "$S2_CLIENTS" --senders "$S2_SENDERS" --rate "$rate" --payload "$S2_PAYLOAD" --duration "$S2A_DURATION"
  stop_server S2aTLS
  SRV_TLS=0
}

# S2b: double the rate until a step loses messages, misses its p99 bound or
# cannot be sent at the target; then one bisection step. One server process.
sc_S2b() {
  local name=$1 out=$RESULTS/S2b-$1.json
  local d=$S2B_START pass_d=0 fail_d=0 i ok
  : > "$out"
  start_server "$name" S2b || return 0
  for i in $(seq 1 "$S2B_STEPS"); do
    run_load "$out" --mode fanout --clients "$S2_CLIENTS" --senders "$S2_SENDERS" --rate $(( d / S2_CLIENTS )) --payload "$S2_PAYLOAD" --duration "$S2B_DURATION"
    ok=$(jget "$out" "int(d['connected']==d['clients'] and d['lost']==0 and d['latency_ms']['p99']<$S2B_P99_MS and d['send_behind']<=0.01*d['rate']*d['duration_s'] and d['delivered']>0)")
    if ! kill -0 "$SRV_PID" 2>/dev/null; then break; fi
    if [ "$ok" = 1 ]; then
      pass_d=$d; d=$(( d * 2 ))
      [ "$fail_d" -gt 0 ] && break
    else
      fail_d=$d
      # no passing step yet: halve (up to 3 times below the start) to find one
      if [ "$pass_d" -eq 0 ] && [ "$d" -gt $(( S2B_START / 8 )) ]; then d=$(( d / 2 )); continue; fi
      break
    fi
  done
  if [ "$fail_d" -gt 0 ] && [ "$pass_d" -gt 0 ] && kill -0 "$SRV_PID" 2>/dev/null; then
    d=$(( (pass_d + fail_d) / 2 ))
    run_load "$out" --mode fanout --clients "$S2_CLIENTS" --senders "$S2_SENDERS" --rate $(( d / S2_CLIENTS )) --payload "$S2_PAYLOAD" --duration "$S2B_DURATION"
  fi
  stop_server S2b
}

# S3: the base rate (1 message/s per client), then the sweep for the chart
# (S3_SWEEP: multiples of it) until a step loses messages or the server dies.
sc_S3() {
  local name=$1 out=$RESULTS/S3-$1.json
  local rooms=$(( S3_CLIENTS / S3_ROOM_SIZE )) m ok
  : > "$out"
  start_server "$name" S3 || return 0
  for m in 1 $S3_SWEEP; do
    run_load "$out" --mode fanout --clients "$S3_CLIENTS" --rooms "$rooms" --senders "$S3_CLIENTS" --rate $(( S3_CLIENTS * m )) --payload 64 --duration "$S3_DURATION"
    kill -0 "$SRV_PID" 2>/dev/null || break
    ok=$(jget "$out" "int(d['lost']==0 and d['connected']==d['clients'])")
    [ "$ok" = 1 ] || break
  done
  stop_server S3
}

# S4: chatd with its default queue caps (256 messages, 1 MiB per session).
sc_S4() {
  local name=$1 out=$RESULTS/S4-$1.json base=$RESULTS/S4base-$1.json
  start_server "$name" S4 256 1048576 || return 0
  run_load "$base" --mode fanout --clients "$S4_CLIENTS" --senders "$S4_SENDERS" --rate "$S4_RATE" --payload "$S4_PAYLOAD" --duration "$S4_BASE_DURATION"
  run_load "$out" --mode slow --clients "$S4_CLIENTS" --senders "$S4_SENDERS" --rate "$S4_RATE" --payload "$S4_PAYLOAD" --duration "$S4_DURATION" --slow-clients 1
  stop_server S4
}

sc_S5() {
  local name=$1 out=$RESULTS/S5-$1.json
  start_server "$name" S5 || return 0
  # Warm-up round first, over the same rooms: chatd keeps each room's recent
  # messages (history.messages_per_room), so the first round's RSS growth is
  # mostly stored history, by design; the measured second round shows creep.
  run_load "$RESULTS/S5warmup-$name.json" --mode churn --concurrency "$S5_CONCURRENCY" --cycles "$S5_CYCLES" --duration "$S5_MAX_S" --settle 3 --room-prefix s5
  run_load "$out" --mode churn --concurrency "$S5_CONCURRENCY" --cycles "$S5_CYCLES" --duration "$S5_MAX_S" --settle 3 --room-prefix s5
  stop_server S5
}

if [ -n "$BASE_BIN" ]; then
  [ -x "$BASE_BIN" ] || { log "--baseline-bin $BASE_BIN is not an executable"; exit 2; }
  [[ " $SERVERS " = *" chatd-base "* ]] || SERVERS=$(echo " $SERVERS " | sed 's/ chatd / chatd chatd-base /')
  [[ " $SERVERS " = *" chatd-base "* ]] || SERVERS="chatd-base $SERVERS"
fi
log "results in $RESULTS"
for sc in $SCENARIOS; do
  for srv in $SERVERS; do
    log "$sc against $srv"
    "sc_$sc" "$srv"
  done
done

{
  echo "sizes: S1_CLIENTS=$S1_CLIENTS S1_ROOM_SIZE=$S1_ROOM_SIZE S1_HOLD=$S1_HOLD S2_CLIENTS=$S2_CLIENTS S2_SENDERS=$S2_SENDERS S2_PAYLOAD=$S2_PAYLOAD S2A_DELIVERIES=$S2A_DELIVERIES S2A_DURATION=$S2A_DURATION S2B_START=$S2B_START S2B_STEPS=$S2B_STEPS S2B_DURATION=$S2B_DURATION S2B_P99_MS=$S2B_P99_MS S3_CLIENTS=$S3_CLIENTS S3_ROOM_SIZE=$S3_ROOM_SIZE S3_DURATION=$S3_DURATION S3_SWEEP=${S3_SWEEP// /,} S4_CLIENTS=$S4_CLIENTS S4_SENDERS=$S4_SENDERS S4_RATE=$S4_RATE S4_PAYLOAD=$S4_PAYLOAD S4_DURATION=$S4_DURATION S4_BASE_DURATION=$S4_BASE_DURATION S5_CYCLES=$S5_CYCLES S5_CONCURRENCY=$S5_CONCURRENCY"
} >> "$RESULTS/meta.txt"

if [ "$WRITE_DOC" = 1 ]; then
  "$PY" bench/report.py "$RESULTS" "$DOC" "$(dirname "$DOC")/perf"
  log "wrote the tables into $DOC and the charts into $(dirname "$DOC")/perf"
fi
log "done: $RESULTS"
