#!/usr/bin/env bash
# Install what chatd needs to build, run and test on Debian 12.
# Idempotent: packages already installed are skipped quickly.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config g++
  libev-dev libwebsockets-dev libcjson-dev uthash-dev libtomlplusplus-dev
  libsqlite3-dev sqlite3 libjwt-dev libsystemd-dev openssl
  systemd dpkg-dev file
  libhiredis-dev redis-server
  clang libclang-rt-14-dev llvm
  libcmocka-dev
  python3 python3-pytest python3-websockets
  curl ca-certificates procps
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all Debian packages present"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
