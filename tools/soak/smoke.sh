#!/usr/bin/env bash
# CI's soak smoke (ctest soak_smoke): a short, deterministic soak of each
# shape with one fault of each kind and a fixed seed, judged by the checker.
# Fails on any violation. Usage: tools/soak/smoke.sh CHATD_BIN [OUT_DIR] [--sanitize]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
chatd=${1:?usage: smoke.sh CHATD_BIN [OUT_DIR] [--sanitize]}
out=${2:-$(mktemp -d /tmp/chatd-soak-smoke.XXXXXX)}
shift $(( $# >= 2 ? 2 : 1 ))
py=/usr/bin/python3
[ -x "$py" ] || py=python3
rc=0
for mode in single cluster; do
  dur=20
  [ $mode = cluster ] && dur=25
  echo "== soak smoke: $mode, ${dur}s, seed 7, one fault of each kind -> $out/$mode"
  "$py" "$here/soak.py" --chatd "$chatd" --mode $mode --duration $dur --seed 7 --faults each \
    --clients 18 --out "$out/$mode" "$@"
  "$py" "$here/check.py" "$out/$mode/history.jsonl" || rc=1
  "$py" "$here/report.py" "$out/$mode" || rc=1
done
[ $rc = 0 ] && echo "soak smoke: no violation" || echo "soak smoke: VIOLATIONS (see $out/*/report.md)" >&2
exit $rc
