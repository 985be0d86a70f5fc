#!/usr/bin/env bash
# Set up, build and run chatd in the foreground with the sample config.
# Extra arguments are passed to chatd (e.g. -c other.toml replaces the config).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh build
if [ $# -eq 0 ]; then set -- -c conf/chatd.toml; fi
mkdir -p var   # the sample config keeps its database in var/chatd.db
exec build/chatd "$@"
