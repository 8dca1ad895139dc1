#!/usr/bin/env bash
# Installs what is needed, builds, and runs the whole test suite: unit,
# integration and the fuzz corpora replays (fuzz_replay.*), in ./build; then
# the same suites again in an AddressSanitizer + UndefinedBehaviorSanitizer
# build (./build-asan, daemons and cairnctl included). See docs/testing.md.
#
# CAIRN_SKIP_SANITIZERS=1 skips the sanitizer stage (quick local runs); CI
# (.ci/run) runs it. Extra arguments go to both ctest runs (e.g. -R regex).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh

stage() { printf '\n==== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }
t0=$SECONDS
stage "build"
bash scripts/build.sh
stage "tests"
# --timeout: a test with no limit of its own (the Catch2 ones) that hangs
# fails after 5 minutes (10 under ASan) instead of ctest's default 25.
ctest --test-dir build --output-on-failure --timeout 300 -j "$(nproc)" "$@"
echo "normal stage: $((SECONDS - t0)) s"

if [[ "${CAIRN_SKIP_SANITIZERS:-0}" == 1 ]]; then
  echo "CAIRN_SKIP_SANITIZERS=1: sanitizer stage skipped"
  exit 0
fi

# -O1 -g1: most of -O2's speed for the tests, a fraction of its compile time, and
# stack traces that still make sense. Assertions stay on.
t1=$SECONDS
stage "build-asan"
launcher=()
if command -v ccache >/dev/null; then
  launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1  # as in scripts/build.sh
fi
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Sanitize -DCAIRN_SANITIZE=address,undefined \
  -DCMAKE_C_FLAGS_SANITIZE="-O1 -g1" -DCMAKE_CXX_FLAGS_SANITIZE="-O1 -g1" "${launcher[@]}" >/dev/null
cmake --build build-asan -j "$(nproc)"
echo "asan build: $((SECONDS - t1)) s"

t2=$SECONDS
stage "tests under ASan + UBSan"
# Reports of the processes the integration tests start land here and fail the
# test that was running (tests/integration/conftest.py). Unit tests and the
# replays report on stderr and exit non-zero.
reports=$PWD/build-asan/sanitizer-reports
rm -rf "$reports" && mkdir -p "$reports"
CAIRN_SANITIZER_LOG_DIR=$reports ASAN_OPTIONS=detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=0 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure --timeout 600 -j "$(nproc)" "$@"
echo "asan tests: $((SECONDS - t2)) s"
echo "total: $((SECONDS - t0)) s"
