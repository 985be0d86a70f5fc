#!/usr/bin/env bash
# Build the libFuzzer targets (tests/fuzz) with clang + ASan + UBSan and run
# each for a bounded time on a scratch copy of its seed corpus.
#
#   scripts/fuzz.sh [SECONDS]          default 60 seconds per target
#
# Environment:
#   FUZZ_TARGETS="fuzz_proto fuzz_hub"  run only these (default: all)
#   FUZZ_BUILD_DIR=build-fuzz           the build directory
#   FUZZ_JOBS=N                         targets run at the same time (default: nproc, at most 3)
#
# Exits non-zero if any target crashes, leaks, times out (-timeout=10 per
# input), runs out of memory (-rss_limit_mb=2048) or fails a harness check.
# The committed corpus is never written: new inputs land in a temp dir that is
# deleted; crash inputs are kept in $FUZZ_BUILD_DIR/fuzz-artifacts/<target>/,
# and the summary says how to replay them.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-60}
case "$secs" in
  ''|*[!0-9]*) echo "usage: scripts/fuzz.sh [SECONDS]" >&2; exit 2 ;;
esac
bdir=${FUZZ_BUILD_DIR:-build-fuzz}
read -r -a targets <<<"${FUZZ_TARGETS:-fuzz_proto fuzz_config fuzz_hub}"
jobs=${FUZZ_JOBS:-$(nproc)}
[ "$jobs" -gt ${#targets[@]} ] && jobs=${#targets[@]}
[ "$jobs" -ge 1 ] || jobs=1

for tool in clang clang++; do
  command -v "$tool" >/dev/null || { echo "fuzz: $tool not found (Debian: apt-get install clang libclang-rt-14-dev)" >&2; exit 2; }
done

echo "== fuzz: configure and build $bdir (clang, ASan+UBSan, libFuzzer)"
# -O1 -g: fast enough to fuzz, still readable stacks. A build dir first
# configured with another compiler is reconfigured from scratch by cmake.
CC=clang CXX=clang++ cmake -S . -B "$bdir" \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_FLAGS=-O1 -DCMAKE_CXX_FLAGS=-O1 \
  -DCHATD_FUZZ=ON -DCHATD_SANITIZE=ON -DCHATD_TESTS=OFF >/dev/null
if ! grep -q '^CHATD_FUZZ:BOOL=ON' "$bdir/CMakeCache.txt"; then
  echo "fuzz: CMakeLists.txt has no CHATD_FUZZ option (it should add_subdirectory(tests/fuzz))" >&2
  exit 2
fi
cmake --build "$bdir" --target "${targets[@]}" -j"$(nproc)"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/lsan.supp:print_suppressions=0}

work=$(mktemp -d "${TMPDIR:-/tmp}/chatd-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT

run_one() {
  local t=$1 bin="$bdir/tests/fuzz/$1" seeds="tests/fuzz/corpus/$1"
  local arts="$bdir/fuzz-artifacts/$t" dict=()
  mkdir -p "$work/$t" "$arts"
  [ -d "$seeds" ] && cp -r "$seeds/." "$work/$t/"
  case "$t" in
    fuzz_config) dict=(-dict=tests/fuzz/fuzz_config.dict) ;;
    *) dict=(-dict=tests/fuzz/fuzz_proto.dict) ;;
  esac
  set +e
  "$bin" -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$arts/" "${dict[@]}" "$work/$t" >"$work/$t.log" 2>&1
  echo $? >"$work/$t.rc"
  set -e
}

i=0
for t in "${targets[@]}"; do
  if [ ! -x "$bdir/tests/fuzz/$t" ]; then
    echo "fuzz: $t was not built" >&2
    exit 2
  fi
  echo "== fuzz: $t for ${secs}s"
  run_one "$t" &
  i=$((i + 1))
  if [ $((i % jobs)) -eq 0 ]; then wait; fi
done
wait

fail=0
echo "== fuzz: summary (${secs}s per target)"
for t in "${targets[@]}"; do
  rc=$(cat "$work/$t.rc")
  log="$work/$t.log"
  # A target that dies on its seeds prints no cov/corp line: with pipefail
  # a grep that finds nothing must not end the script before it says so.
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$( (grep -Eo 'cov: [0-9]+' "$log" || true) | tail -1 | cut -d' ' -f2)
  corp=$( (grep -Eo 'corp: [0-9]+' "$log" || true) | tail -1 | cut -d' ' -f2)
  art=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
  if [ "$rc" -eq 0 ] && [ -z "$art" ]; then
    printf 'fuzz: %-12s OK      %10s runs, cov %s, corpus %s\n' "$t" "${runs:-?}" "${cov:-?}" "${corp:-?}"
  else
    fail=1
    kind=$( (grep -Eo 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer): [a-z-]+( signal)?|SUMMARY: UndefinedBehaviorSanitizer|fuzz_hub: check failed' "$log" || true) | head -1)
    printf 'fuzz: %-12s FAILED  exit %s: %s\n' "$t" "$rc" "${kind:-see log}"
    echo "---- $t log (last 60 lines) ----"
    tail -60 "$log"
    echo "---- end of $t log ----"
    mkdir -p "$bdir/fuzz-artifacts/$t"
    cp "$log" "$bdir/fuzz-artifacts/$t/last-run.log"
    if [ -n "$art" ]; then
      echo "fuzz: $t: input kept in $art; replay: $bdir/tests/fuzz/$t $art"
    fi
  fi
done
exit $fail
