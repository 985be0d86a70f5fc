#!/usr/bin/env bash
# Set up, build and run the whole test suite twice: a normal build, then an
# AddressSanitizer + UndefinedBehaviorSanitizer build (leaks fail it).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export LSAN_OPTIONS=suppressions=$PWD/tests/lsan.supp:print_suppressions=0

echo "== normal build"
scripts/build.sh build -DCHATD_TESTS=ON
(cd build && ctest --output-on-failure --timeout 1200)

echo "== ASan + UBSan build"
scripts/build.sh build-asan -DCHATD_TESTS=ON -DCHATD_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
(cd build-asan && ctest --output-on-failure --timeout 1800)

echo "== libFuzzer targets (${CHATD_FUZZ_SECONDS:-60}s each)"
scripts/fuzz.sh "${CHATD_FUZZ_SECONDS:-60}"
