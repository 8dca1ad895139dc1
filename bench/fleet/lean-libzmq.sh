#!/bin/bash
# For benchmarks only: builds Debian's own libzmq source, the version this
# machine has installed, with Debian's patches and one constant changed,
# libzmq's message_pipe_granularity (256 by default: each pipe direction of
# every connection holds 256-message chunks, and keeps a spare one). It is the
# evidence behind docs/benchmarks.md § "libzmq's own floor": what the
# controller's memory at 1,000 and 10,000 agents would be on a libzmq with
# smaller chunks. cairn itself links Debian's libzmq5 and nothing here
# changes that.
#
#   bench/fleet/lean-libzmq.sh [--granularity N] [--drafts] OUTDIR
#
# Then OUTDIR/lib holds libzmq.so.5: `LD_LIBRARY_PATH=OUTDIR/lib
# build/bench/fleet/cairn-bench-zmq-floor …`, or `bench/fleet/run.py
# --libzmq-dir OUTDIR/lib …` (the controller alone uses it).
#
# The source comes through apt (`apt-get source`, from a deb-src entry in a
# temporary apt state under OUTDIR), so its hashes are checked against
# Debian's signed Sources index. Needs dpkg-dev, cmake, ninja-build and
# libsodium-dev (scripts/install-deps.sh installs them).
set -euo pipefail

granularity=32
drafts=OFF
while [ $# -gt 1 ]; do
  case "$1" in
    --granularity) granularity="$2"; shift 2 ;;
    --drafts) drafts=ON; shift ;;
    *) echo "lean-libzmq: unknown option '$1' (usage: $0 [--granularity N] [--drafts] OUTDIR)" >&2; exit 2 ;;
  esac
done
[ $# -eq 1 ] || { echo "usage: $0 [--granularity N] [--drafts] OUTDIR" >&2; exit 2; }
case "$granularity" in
  ''|*[!0-9]*) echo "lean-libzmq: --granularity wants a number of messages, got '$granularity'" >&2; exit 2 ;;
esac
[ "$granularity" -ge 2 ] || { echo "lean-libzmq: --granularity must be at least 2" >&2; exit 2; }

out=$(realpath -m "$1")
mkdir -p "$out"
version=$(dpkg-query -W -f='${source:Version}' libzmq5 2>/dev/null) ||
  { echo "lean-libzmq: Debian's libzmq5 is not installed (bash scripts/install-deps.sh installs it)" >&2; exit 1; }
package=$(dpkg-query -W -f='${source:Package}' libzmq5)
suite=$(. /etc/os-release && echo "$VERSION_CODENAME")

apt_dir="$out/apt"
mkdir -p "$apt_dir/parts" "$apt_dir/lists/partial" "$apt_dir/cache" "$out/src"
cat > "$apt_dir/parts/debian-src.sources" <<EOF
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: $suite
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
apt_opts=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$apt_dir/parts"
          -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache")
apt-get "${apt_opts[@]}" -qq update
rm -rf "$out/src" && mkdir -p "$out/src"
(cd "$out/src" && apt-get "${apt_opts[@]}" -qq source "$package=$version" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
tree=$(find "$out/src" -mindepth 1 -maxdepth 1 -type d | head -n1)
[ -n "$tree" ] && [ -f "$tree/src/config.hpp" ] || { echo "lean-libzmq: no unpacked libzmq source under $out/src" >&2; exit 1; }

grep -q 'message_pipe_granularity = 256,' "$tree/src/config.hpp" ||
  { echo "lean-libzmq: $tree/src/config.hpp does not set message_pipe_granularity = 256 as 4.3.4 does" >&2; exit 1; }
sed -i "s/message_pipe_granularity = 256,/message_pipe_granularity = $granularity,/" "$tree/src/config.hpp"

cmake -S "$tree" -B "$out/build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DENABLE_DRAFTS="$drafts" \
  -DWITH_LIBSODIUM=ON -DENABLE_CURVE=ON -DBUILD_TESTS=OFF -DBUILD_STATIC=OFF -DWITH_DOCS=OFF \
  -DWITH_PERF_TOOL=OFF > "$out/cmake.log" 2>&1 || { echo "lean-libzmq: cmake failed, see $out/cmake.log" >&2; exit 1; }
ninja -C "$out/build" libzmq > "$out/ninja.log" 2>&1 || { echo "lean-libzmq: build failed, see $out/ninja.log" >&2; exit 1; }
rm -rf "$out/lib" && mkdir -p "$out/lib"
cp -a "$out/build/lib/"libzmq.so* "$out/lib/"
echo "lean-libzmq: $package $version, message_pipe_granularity $granularity, drafts $drafts: $out/lib/libzmq.so.5"
