#!/usr/bin/env bash
# Smoke test of chatload (not a performance test: no timing assertions).
# Starts chatd on a free port with a temp config, runs every mode for about
# two seconds at tiny sizes, checks that each prints one JSON line that
# parses and shows work done (connections, deliveries or cycles), stops chatd.
# Then the same over wss:// against a second chatd with [tls] (a throw-away
# self-signed certificate): fan-out with no loss, churn, and --tls-verify
# accepting the right CA and refusing another.
# Usage: tools/chatload/smoke.sh CHATD_BIN CHATLOAD_BIN
set -uo pipefail
CHATD=${1:?usage: smoke.sh CHATD_BIN CHATLOAD_BIN}
CHATLOAD=${2:?usage: smoke.sh CHATD_BIN CHATLOAD_BIN}
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

tmp=$(mktemp -d)
pid=""
tls_pid=""
stop_chatd() { # PID
  if [ -n "$1" ] && kill -0 "$1" 2>/dev/null; then
    kill -TERM "$1" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null
  fi
}
cleanup() {
  stop_chatd "$pid"
  stop_chatd "$tls_pid"
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

# ---- wss:// against a chatd with TLS ----
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=127.0.0.1 \
  -addext subjectAltName=IP:127.0.0.1 -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null &&
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=127.0.0.1 \
  -addext subjectAltName=IP:127.0.0.1 -keyout "$tmp/other-key.pem" -out "$tmp/other.pem" 2>/dev/null ||
  { echo "smoke: openssl could not make a test certificate"; exit 1; }
{ cat "$tmp/chatd.toml"; printf '[tls]\ncert = "%s"\nkey = "%s"\n' "$tmp/cert.pem" "$tmp/key.pem"; } > "$tmp/chatd-tls.toml"
"$CHATD" -c "$tmp/chatd-tls.toml" 2> "$tmp/chatd-tls.log" &
tls_pid=$!
tls_port=""
for _ in $(seq 1 100); do
  tls_port=$(grep -o 'listening on wss://127\.0\.0\.1:[0-9]*' "$tmp/chatd-tls.log" 2>/dev/null | head -1 | sed 's/.*://')
  [ -n "$tls_port" ] && break
  kill -0 "$tls_pid" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$tls_port" ]; then
  echo "smoke: chatd with TLS did not start:"; cat "$tmp/chatd-tls.log"; exit 1
fi
plain_url=$url plain_pid=$pid
url="wss://127.0.0.1:$tls_port/ws" pid=$tls_pid
echo "smoke: chatd with TLS (pid $pid) on $url"
run wss-fanout "d['tls'] and d['connected']==10 and d['expected']==1000 and d['delivered']==1000 and d['lost']==0" \
  --mode fanout --clients 10 --senders 2 --rate 50 --payload 64 --duration 2 --drain 1
run wss-fanout-rooms "d['tls'] and d['connected']==12 and d['delivered']>0 and d['lost']==0" \
  --mode fanout --clients 12 --rooms 3 --senders 12 --rate 24 --payload 2000 --duration 2 --drain 1 --workers 2
run wss-churn "d['tls'] and d['cycles']==50 and d['cycle_failures']==0" \
  --mode churn --concurrency 5 --cycles 50 --duration 10
run wss-verify "d['tls'] and d['connected']==5" \
  --mode idle --clients 5 --duration 1 --tls-verify "$tmp/cert.pem"
run wss-verify-refused "d['connected']==0 and d['handshake_failed']==3 and 'verify failed' in d['first_error']" \
  --mode idle --clients 3 --duration 1 --setup-timeout 5 --tls-verify "$tmp/other.pem"
if ! kill -0 "$pid" 2>/dev/null; then
  echo "smoke: chatd with TLS died during the smoke test:"; cat "$tmp/chatd-tls.log"; fail=1
fi
url=$plain_url pid=$plain_pid

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
