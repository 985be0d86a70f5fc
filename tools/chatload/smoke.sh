#!/usr/bin/env bash
# Smoke test of chatload (not a performance test: no timing assertions).
# Starts chatd on a free port with a temp config, runs every mode for about
# two seconds at tiny sizes, checks that each prints one JSON line that
# parses and shows work done (connections, deliveries or cycles), stops chatd.
# Usage: tools/chatload/smoke.sh CHATD_BIN CHATLOAD_BIN
set -uo pipefail
CHATD=${1:?usage: smoke.sh CHATD_BIN CHATLOAD_BIN}
CHATLOAD=${2:?usage: smoke.sh CHATD_BIN CHATLOAD_BIN}
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

tmp=$(mktemp -d)
pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

cat > "$tmp/chatd.toml" <<'EOF'
[server]
listen = "127.0.0.1"
port = 0
handshake_timeout = 10
[limits]
rate = 100000
burst = 100000
[log]
level = "info"
EOF

"$CHATLOAD" --self-test || { echo "smoke: chatload --self-test failed"; exit 1; }

"$CHATD" -c "$tmp/chatd.toml" 2> "$tmp/chatd.log" &
pid=$!
port=""
for _ in $(seq 1 100); do
  port=$(grep -o 'listening on ws://127\.0\.0\.1:[0-9]*' "$tmp/chatd.log" 2>/dev/null | head -1 | sed 's/.*://')
  [ -n "$port" ] && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$port" ]; then
  echo "smoke: chatd did not start:"; cat "$tmp/chatd.log"; exit 1
fi
url="ws://127.0.0.1:$port/ws"
echo "smoke: chatd (pid $pid) on $url"

fail=0
passed=0
failed=0
# run NAME CHECK chatload-args... ; CHECK is a Python expression over d (the JSON object)
run() {
  local name=$1 check=$2; shift 2
  local out="$tmp/$name.json"
  timeout 60 "$CHATLOAD" --url "$url" --server-pid "$pid" --label smoke --settle 0.2 "$@" > "$out" 2> "$tmp/$name.err"
  local rc=$?
  if "$PY" - "$out" "$check" <<'EOF'
import json, sys
lines = [l for l in open(sys.argv[1]).read().splitlines() if l.strip()]
assert len(lines) == 1, "expected one JSON line, got %d" % len(lines)
d = json.loads(lines[0])
assert d.get("tool") == "chatload", "not a chatload result"
assert eval(sys.argv[2], {}, {"d": d}), "check failed: " + sys.argv[2]
EOF
  then
    echo "smoke: $name ok (chatload exit $rc): $(cut -c1-160 "$out")"
    passed=$((passed + 1))
  else
    echo "smoke: $name FAILED (chatload exit $rc)"; cat "$out" "$tmp/$name.err"; fail=1
    failed=$((failed + 1))
  fi
}

run idle   "d['mode']=='idle' and d['connected']==20" \
  --mode idle --clients 20 --rooms 2 --duration 1
run fanout "d['mode']=='fanout' and d['delivered']>0 and d['sent']>0" \
  --mode fanout --clients 10 --senders 2 --rate 50 --payload 64 --duration 2 --drain 1
run fanout-rooms "d['mode']=='fanout' and d['delivered']>0" \
  --mode fanout --clients 12 --rooms 3 --senders 12 --rate 24 --duration 2 --drain 1 --workers 2
run slow   "d['mode']=='slow' and d['delivered']>0 and 'series' in d" \
  --mode slow --clients 6 --senders 2 --rate 200 --payload 1024 --duration 2 --drain 0.5 --slow-clients 1
run churn  "d['mode']=='churn' and d['cycles']>0" \
  --mode churn --concurrency 5 --cycles 50 --duration 10

# a refused target must be refused
if "$CHATLOAD" --mode idle --url ws://10.0.0.1:80/ws --clients 1 --duration 1 >/dev/null 2>&1; then
  echo "smoke: a non-loopback target was not refused"; fail=1; failed=$((failed + 1))
else
  passed=$((passed + 1))
fi
if ! kill -0 "$pid" 2>/dev/null; then
  echo "smoke: chatd died during the smoke test:"; cat "$tmp/chatd.log"; fail=1
fi
echo "smoke: $passed passed, $failed failed"
exit $fail
