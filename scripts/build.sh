#!/usr/bin/env bash
# Configures and builds cairn into ./build (-O2, line tables for stack traces).
# With arguments, builds only those targets (the quick start builds the three
# binaries it runs, not the tests). ccache is used when it is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
launcher=()
if command -v ccache >/dev/null; then
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
  # Paths relative to the checkout, and no working directory in the hash: a
  # fresh clone elsewhere (CI's) or a worktree reuses what this one compiled.
  export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
fi
# CAIRN_WERROR=1 (CI, .ci/run): a compiler warning fails the build.
werror=OFF
[[ "${CAIRN_WERROR:-0}" == 1 ]] && werror=ON
# -O2 with line tables only (-g1): stack traces with files and lines, and a
# build about a quarter faster than with full debug info (-g); configure
# without this script for -g.
# A unity build (CMake compiles each target's files in batches of 8): the
# headers every file includes (protobuf's, nlohmann's, CLI11's, Catch2's) are
# parsed and their inline code compiled once a batch, not once a file. From
# scratch on 2 cores: 430 s (799 s of CPU) against 770 s (1,479 s) file by
# file (docs/testing.md § Time budget). An edit recompiles its whole batch;
# CAIRN_UNITY=0 builds file by file (a reconfigure of ./build).
unity=ON
[[ "${CAIRN_UNITY:-1}" == 0 ]] && unity=OFF
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCAIRN_WERROR="$werror" -DCMAKE_UNITY_BUILD="$unity" \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG" -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG" \
  "${launcher[@]}" >/dev/null
targets=()
for t in "$@"; do targets+=(--target "$t"); done
cmake --build build -j "$(nproc)" "${targets[@]}"
