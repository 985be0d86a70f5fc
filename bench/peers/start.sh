#!/usr/bin/env bash
# Start one peer as a broadcast server on 127.0.0.1:PORT, in the foreground
# (exec: the PID of this script is the server's). Install first: install.sh.
# Usage: bench/peers/start.sh bun|node|go PORT [BUILD_DIR]
# TLS_CERT and TLS_KEY (PEM paths) in the environment: wss:// (bun only; the
# environment reaches Bun through exec). The other peers refuse them rather
# than serve plain ws:// to a wss:// benchmark.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
name=${1:?usage: start.sh bun|node|go PORT [BUILD_DIR]}
port=${2:?port}
build=${3:-$root/build}
case "$build" in /*) ;; *) build=$root/$build ;; esac
if [ -n "${TLS_CERT:-}${TLS_KEY:-}" ] && [ "$name" != bun ]; then
  echo "start.sh: TLS_CERT/TLS_KEY: only the bun peer serves wss://" >&2; exit 2
fi
case "$name" in
  bun)  exec "$here/node_modules/@oven/bun-linux-x64/bin/bun" "$here/bun_server.js" "$port" ;;
  node) exec node "$here/node_ws_server.js" "$port" ;;
  go)   exec "$build/peers/gohub" -addr "127.0.0.1:$port" ;;
  *) echo "start.sh: unknown peer $name (bun, node, go)" >&2; exit 2 ;;
esac
