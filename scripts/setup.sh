#!/usr/bin/env bash
# Install what chatd needs on Debian 12: to build and run it, and with
# --test also what the test suite needs (pytest, cmocka, redis-server,
# clang for the fuzzers, chromium + playwright-core for the web page,
# prometheus + matplotlib for the dashboard and alert rules).
# Idempotent: what is installed already is skipped quickly.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(
  build-essential cmake pkg-config g++
  libev-dev libwebsockets-dev libcjson-dev uthash-dev libtomlplusplus-dev
  libsqlite3-dev libjwt-dev libsystemd-dev libhiredis-dev libssl-dev
  libcurl4-openssl-dev   # webhooks (libcurl multi-socket on libev)
  python3 python3-websockets ca-certificates
  openssl              # TLS certificates for bench/compare.sh and the tests
)
TEST_PKGS=(
  libcmocka-dev python3-pytest python3-cryptography python3-jwt sqlite3 curl procps iproute2
  systemd libseccomp2 util-linux dpkg-dev file
  redis-server
  clang libclang-rt-14-dev llvm
  chromium fonts-dejavu-core fonts-noto-color-emoji   # emoji: reactions on the page and its screenshot
  prometheus python3-matplotlib
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
  # The tests run the prometheus binary on a port of their own; the Debian
  # package also enables and starts a system service on :9090, which the
  # tests do not need. Stop and disable it, but only when installed here,
  # never an operator's own.
  if [[ " ${missing[*]} " == *" prometheus "* ]]; then
    if [ -d /run/systemd/system ]; then
      $SUDO systemctl disable --now prometheus.service >/dev/null 2>&1 || true
    elif [ -x /etc/init.d/prometheus ]; then
      $SUDO /etc/init.d/prometheus stop >/dev/null 2>&1 || true
      $SUDO update-rc.d prometheus disable >/dev/null 2>&1 || true
    fi
  fi
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
