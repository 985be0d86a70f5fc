#!/usr/bin/env bash
# Install and build the peers chatd is compared with (bench/compare.sh):
#   Bun (npm @oven/bun-linux-x64, pinned in package.json), Node ws (npm),
#   the Go gorilla/websocket hub (Debian golang-go + golang-github-gorilla-websocket-dev,
#   built offline in GOPATH mode), and Debian python3-matplotlib for bench/report.py charts.
# Usage: bench/peers/install.sh [BUILD_DIR]   (default: build; the Go binary goes to BUILD_DIR/peers/gohub)
# Needs: apt-get (root or sudo) and the npm registry. Idempotent.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${1:-$root/build}
case "$build" in /*) ;; *) build=$root/$build ;; esac

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
need=()
for p in golang-go golang-github-gorilla-websocket-dev python3-matplotlib nodejs npm; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
# node/npm may come from elsewhere (e.g. nodesource); only install Debian's if missing
if command -v node >/dev/null && command -v npm >/dev/null; then
  tmp=(); for p in "${need[@]}"; do [ "$p" = nodejs ] || [ "$p" = npm ] || tmp+=("$p"); done; need=("${tmp[@]}")
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "peers: installing Debian packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

echo "peers: npm packages (ws, @oven/bun-linux-x64)"
(cd "$here" && if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --loglevel=error; else npm install --no-audit --no-fund --loglevel=error; fi)
"$here/node_modules/@oven/bun-linux-x64/bin/bun" --version >/dev/null

echo "peers: building the Go hub (GOPATH mode, offline)"
mkdir -p "$build/peers"
(cd "$here/gohub" && GO111MODULE=off GOPATH=/usr/share/gocode:$build/peers/gopath GOFLAGS= \
   go build -o "$build/peers/gohub" main.go)
echo "peers: ready (bun $("$here/node_modules/@oven/bun-linux-x64/bin/bun" --version), node $(node --version)," \
     "ws $(node -p "require('$here/node_modules/ws/package.json').version"), $(go version | awk '{print $3}')," \
     "gorilla/websocket $(dpkg-query -W -f='${Version}' golang-github-gorilla-websocket-dev))"
