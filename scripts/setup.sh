#!/usr/bin/env bash
# Install what chatd needs on Debian 12: to build and run it, and with
# --test also what the test suite needs (pytest, cmocka, redis-server,
# clang for the fuzzers, chromium + playwright-core for the web page).
# Idempotent: what is installed already is skipped quickly.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(
  build-essential cmake pkg-config g++
  libev-dev libwebsockets-dev libcjson-dev uthash-dev libtomlplusplus-dev
  libsqlite3-dev libjwt-dev libsystemd-dev libhiredis-dev
  python3 python3-websockets ca-certificates
  libssl-dev openssl   # chatload's wss:// (OpenSSL); bench/compare.sh makes its TLS certificate
)
TEST_PKGS=(
  libcmocka-dev python3-pytest sqlite3 curl procps iproute2
  systemd dpkg-dev file
  redis-server
  clang libclang-rt-14-dev llvm
  chromium fonts-dejavu-core
)

with_tests=0
[ "${1:-}" = "--test" ] && with_tests=1
want=("${PKGS[@]}")
[ $with_tests = 1 ] && want+=("${TEST_PKGS[@]}")

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Any Node.js already on the machine is kept (Debian's nodejs and npm would
# conflict with a nodesource build); without one, Debian's is installed.
if [ $with_tests = 1 ] && ! command -v node >/dev/null; then
  missing+=(nodejs npm)
fi

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all Debian packages present"
else
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "setup: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    SUDO="sudo"
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

[ $with_tests = 1 ] || exit 0

# Browser tests: playwright-core from npm, pinned by package-lock.json; it
# drives Debian's chromium and downloads no browser of its own.
cd tests/browser
lock_version=$(node -p 'require("./package-lock.json").packages["node_modules/playwright-core"].version')
have_version=$(node -p 'try { require("./node_modules/playwright-core/package.json").version } catch (e) { "" }')
if [ "$lock_version" != "$have_version" ]; then
  echo "setup: npm ci in tests/browser (playwright-core $lock_version)"
  # A failure here is reported, not fatal: the rest of the suite still
  # runs, and the browser test then fails with the reason.
  npm ci --no-audit --no-fund --loglevel=error ||
    echo "setup: WARNING: npm ci failed in tests/browser; the browser tests will fail" >&2
fi
