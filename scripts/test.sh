#!/usr/bin/env bash
# Installs what is needed, builds, and runs the whole test suite: unit,
# integration and the fuzz corpora replays (fuzz_replay.*), in ./build; then
# every unit test and replay, and the integration tests that
# tests/integration/sanitizers.txt selects, again in an AddressSanitizer +
# UndefinedBehaviorSanitizer build (./build-asan, daemons and cairnctl
# included). See docs/testing.md. At the end (also after a failure) it prints
# each stage's time and the slowest tests (scripts/ctest_summary.py).
#
# CAIRN_SKIP_SANITIZERS=1 skips the sanitizer stage (quick local runs); CI
# (.ci/run) runs it. CAIRN_WERROR=1 (set by .ci/run) makes a compiler
# warning an error in both builds. CAIRN_TEST_JOBS sets ctest's parallelism
# (default: the number of cores + 3; tests that start JVMs or server
# clusters take two slots). Extra arguments go to every ctest run (e.g. -R regex).
set -euo pipefail
cd "$(dirname "$0")/.."

times=$(mktemp)
junit_normal=$PWD/build/ctest-junit.xml
junit_asan=$PWD/build-asan/ctest-junit.xml
junit_asan_unit=$PWD/build-asan/ctest-junit-unit.xml
lane=$PWD/build-asan/lane  # the sanitizer integration tests run beside the normal stage (scripts/ctest_lane.py)
rm -f "$junit_normal" "$junit_asan" "$junit_asan_unit"
rm -rf "$lane" "$lane.log"
summary() {
  local rc=$?
  echo "wall-clock $SECONDS" >>"$times"
  python3 scripts/ctest_summary.py "$times" "normal stage=$junit_normal" \
    "sanitizer stage, unit tests and replays beside the normal stage=$junit_asan_unit" \
    "sanitizer stage, integration tests beside the normal stage=$lane/junit.xml" "sanitizer stage=$junit_asan" || true
  rm -f "$times"
  exit $rc
}
trap summary EXIT
stage() { printf '\n==== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }
timed() {  # timed NAME COMMAND...: runs it, records its seconds as a stage
  local name=$1 t=$SECONDS
  shift
  stage "$name"
  local rc=0
  "$@" || rc=$?
  echo "$name $((SECONDS - t))" >>"$times"
  return $rc
}

timed install-deps bash scripts/install-deps.sh
timed format bash scripts/format.sh --check
jobs=${CAIRN_TEST_JOBS:-$(($(nproc) + 3))}
werror=OFF
[[ "${CAIRN_WERROR:-0}" == 1 ]] && werror=ON

# -Og -g1: GCC's optimisation for debugging. It compiles the sanitizer build
# with 32% less CPU than -O1 (785 s against 1,153 s from an empty cache on two
# cores) and the sanitizer tests ran about as fast (docs/testing.md § Time
# budget); stack traces keep their files and lines. CAIRN_ASAN_OPT=-O1 builds
# as before (a tree of its own is not needed: ccache keys on the flags).
# Assertions stay on. No benchmark tools. A unity build: 685 s instead of 931 s
# from an empty cache on two cores. With a warm cache a changed file recompiles
# its whole batch; that runs beside the tests, where it costs the tests only
# the CPU it takes from them.
asan_opt=${CAIRN_ASAN_OPT:--Og}
build_asan() {
  local launcher=()
  if command -v ccache >/dev/null; then
    launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
    export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1  # as in scripts/build.sh
  fi
  cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Sanitize -DCAIRN_SANITIZE=address,undefined -DCMAKE_UNITY_BUILD=ON \
    -DCMAKE_C_FLAGS_SANITIZE="$asan_opt -g1" -DCMAKE_CXX_FLAGS_SANITIZE="$asan_opt -g1" -DCAIRN_BENCH_TOOLS=OFF \
    -DCAIRN_WERROR="$werror" "${launcher[@]}" >/dev/null
  cmake --build build-asan -j "$(nproc)"
}

# Reports of the processes the integration tests start land here and fail the
# test that was running (tests/integration/conftest.py). Unit tests and the
# replays report on stderr and exit non-zero.
reports=$PWD/build-asan/sanitizer-reports
asan_ctest() {  # asan_ctest ARGS...: ctest in build-asan with the sanitizers' options
  CAIRN_SANITIZER_LOG_DIR=$reports ASAN_OPTIONS=detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=0 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --test-dir build-asan --output-on-failure "$@"
}

# The sanitizer build starts with the normal build and runs on while the
# normal stage's tests run, at the lowest CPU priority: it takes the cycles the
# normal build leaves (its last batches and its links keep one core of two
# busy: about a quarter of the cores from an empty cache), then those the
# tests leave (they mostly wait on servers and timers). Under nice 19 it gets
# ~1.5% of a core the build or the tests want, so the daemons' liveness is not
# starved. Its output goes to
# build-asan.log, printed when it fails. Then, still beside the normal
# stage's tests (nice 10, two at a time), the sanitizer build's unit tests and
# corpus replays: pure computation with no daemon whose liveness they could
# starve, and about a quarter of the sanitizer stage's test time, off the
# critical path. Their output goes to build-asan/unit-tests.log, printed
# after the normal stage. Then, while the normal stage still runs, the
# sanitizer stage's integration tests, longest first, two at a time, nice 10
# (scripts/ctest_lane.py): when the normal stage ends no more start there,
# and the sanitizer stage runs the rest beside the ones still running.
# Exit 90 + the build's or 120 + ctest's status, or 150 when a test of the lane failed.
asan_pid=
if [[ "${CAIRN_SKIP_SANITIZERS:-0}" != 1 ]]; then
  mkdir -p build-asan
  rm -f build-asan/.normal-stage-done build-asan/.unit-tests-beside
  (
    t=$SECONDS; rc=0
    nice -n 19 bash -c "$(declare -f build_asan); werror=$werror; asan_opt=$asan_opt; build_asan" >build-asan.log 2>&1 || rc=$?
    echo "build-asan(beside-build-and-tests) $((SECONDS - t))" >>"$times"
    ((rc == 0)) || exit $((90 + (rc > 29 ? 29 : rc)))
    # The normal stage already over (a build without ccache takes longer
    # than the tests): they run with the integration tests, at full width.
    [[ -e build-asan/.normal-stage-done ]] && exit 0
    : >build-asan/.unit-tests-beside
    rm -rf "$reports" && mkdir -p "$reports"
    t=$SECONDS
    nice -n 10 bash -c "$(declare -f asan_ctest); reports=$reports; asan_ctest \"\$@\"" _ --timeout 600 -j 2 \
      -LE integration --output-junit "$junit_asan_unit" "$@" >build-asan/unit-tests.log 2>&1 || rc=$?
    echo "tests-asan-unit(beside-tests) $((SECONDS - t))" >>"$times"
    ((rc == 0)) || exit $((120 + (rc > 29 ? 29 : rc)))
    [[ -e build-asan/.normal-stage-done ]] && exit 0
    t=$SECONDS
    mkdir -p "$lane"
    CAIRN_SANITIZER_LOG_DIR=$reports ASAN_OPTIONS=detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=0 \
      UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 nice -n 10 python3 scripts/ctest_lane.py build-asan "$lane" 2 \
      -- -L integration "$@" >"$lane.log" 2>&1 || rc=$?
    echo "tests-asan-lane(beside-tests) $((SECONDS - t))" >>"$times"
    ((rc == 0)) || exit 150
  ) &
  asan_pid=$!
fi
kill_tree() {  # kill_tree PID: the process and everything it started
  local c
  for c in $(pgrep -P "$1"); do kill_tree "$c"; done
  kill "$1" 2>/dev/null || true
}
if ! timed build bash scripts/build.sh; then
  [[ -n "$asan_pid" ]] && kill_tree "$asan_pid"
  exit 1
fi
# --timeout: a test with no limit of its own (the Catch2 ones) that hangs
# fails after 5 minutes (10 under ASan) instead of ctest's default 25.
tests_rc=0
timed tests ctest --test-dir build --output-on-failure --timeout 300 -j "$jobs" --output-junit "$junit_normal" "$@" ||
  tests_rc=$?
[[ -d build-asan ]] && : >build-asan/.normal-stage-done
[[ -d "$lane" ]] && : >"$lane/stop"
lane_pid=
if [[ -n "$asan_pid" ]]; then
  stage "waiting for the sanitizer build and its unit tests (started with the tests)"
  # The lane, when it runs, stops starting tests: what it started it finishes
  # beside the sanitizer stage, which runs the rest.
  while kill -0 "$asan_pid" 2>/dev/null && [[ ! -e "$lane/stopped" ]]; do
    [[ -d "$lane" ]] && : >"$lane/stop"
    sleep 0.5
  done
  asan_rc=0
  if [[ -e "$lane/stopped" ]] && kill -0 "$asan_pid" 2>/dev/null; then
    lane_pid=$asan_pid
  else
    wait "$asan_pid" || asan_rc=$?
  fi
  if ((asan_rc >= 90 && asan_rc < 120)); then
    tail -n 60 build-asan.log
    echo "the sanitizer build failed (exit $((asan_rc - 90))); its whole output is in build-asan.log"
    exit 1
  fi
  if [[ -e build-asan/.unit-tests-beside ]]; then
    stage "tests-asan-unit: the sanitizer build's unit tests and replays (ran beside the normal stage)"
    if ((asan_rc >= 120 && asan_rc < 150)); then
      cat build-asan/unit-tests.log
      echo "the sanitizer build's unit tests failed (ctest exit $((asan_rc - 120)))"
      exit 1
    fi
    grep -E '^[0-9]+% tests passed|^Total Test time' build-asan/unit-tests.log || true
  elif ((asan_rc != 0 && asan_rc != 150)); then
    echo "the sanitizer build's job ended with exit $asan_rc"
    exit 1
  fi
fi
# The lane's end: its output, and whether its tests passed.
lane_done() {
  local rc=0
  if [[ -n "$lane_pid" ]]; then
    wait "$lane_pid" || rc=$?
    lane_pid=
  elif [[ -n "${asan_rc:-}" ]]; then
    rc=$asan_rc
  fi
  if [[ -e "$lane.log" ]]; then
    stage "tests-asan-lane: sanitizer integration tests run beside the normal stage"
    if ((rc != 0)); then cat "$lane.log"; else tail -n 1 "$lane.log"; fi
  fi
  ((rc == 0)) || { echo "a sanitizer integration test run beside the normal stage failed (output above)"; return 1; }
}
if ((tests_rc != 0)); then
  lane_done || true
  exit "$tests_rc"
fi
if [[ "${CAIRN_SKIP_SANITIZERS:-0}" == 1 ]]; then
  echo "CAIRN_SKIP_SANITIZERS=1: sanitizer stage skipped"
  exit 0
fi

only=(-L integration)  # the unit tests and replays ran beside the normal stage
if [[ ! -e build-asan/.unit-tests-beside ]]; then  # the build ended after it: everything here
  only=()
  rm -rf "$reports" && mkdir -p "$reports"
fi
if [[ ! -e "$lane/started" && -e "$lane.log" ]]; then
  # The lane ended before it wrote what it started: nothing of it counts, and everything runs here.
  cat "$lane.log"
  echo "the lane of sanitizer integration tests ended early (its output above); they all run now"
fi
if [[ -e "$lane/started" ]]; then
  # What the lane did not start, by test number (the selection "$@" made is in the list).
  rest=$(python3 scripts/ctest_lane.py --rest build-asan "$lane" -- -L integration "$@")
  asan_tests_rc=0
  if [[ -n "$rest" ]]; then
    timed tests-asan asan_ctest --timeout 600 -j "$jobs" -I "$rest" --output-junit "$junit_asan" || asan_tests_rc=$?
  fi
  lane_done
  exit "$asan_tests_rc"
fi
timed tests-asan asan_ctest --timeout 600 -j "$jobs" "${only[@]}" --output-junit "$junit_asan" "$@"
