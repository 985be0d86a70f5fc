#!/usr/bin/env bash
# Set up, build and run chatd in the foreground with the sample config.
# Extra arguments are passed to chatd (e.g. -c other.toml replaces the config).
# --build-only: set up and build, do not run (.ci/run uses it to check that
# this path needs none of the test-only packages).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# Only the run-time packages are installed here, so the tests (cmocka) are
# not configured. -D is given every time because the CMake cache is sticky:
# scripts/test.sh turns them on again in the same build directory.
scripts/build.sh build -DCHATD_TESTS=OFF
if [ "${1:-}" = "--build-only" ]; then exit 0; fi
if [ $# -eq 0 ]; then set -- -c conf/chatd.toml; fi
mkdir -p var   # the sample config keeps its database in var/chatd.db
exec build/chatd "$@"
