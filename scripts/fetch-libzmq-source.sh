#!/usr/bin/env bash
# Fetches Debian's source of the libzmq this machine has installed (libzmq5),
# the one the controller's own libzmq is built from (cmake/controller_libzmq.cmake,
# docs/scaling.md § The controller's libzmq), into a cache reused between runs:
#   ${CAIRN_LIBZMQ_CACHE:-/var/cache/cairn/libzmq}/<Debian version>/src
# Through apt (`apt-get source`) from deb-src entries made from this machine's
# own Debian entries (its mirror, suites and keyring) in a temporary apt state,
# so the source's hashes are checked against Debian's signed Sources index and
# Debian's patches are applied. Idempotent: a version already fetched (.complete
# stamp) is not fetched again; a newer libzmq5 (a security update) fetches its
# source, and the next build rebuilds from it.
set -euo pipefail
CACHE=${CAIRN_LIBZMQ_CACHE:-/var/cache/cairn/libzmq}
version=$(dpkg-query -W -f='${source:Version}' libzmq5 2>/dev/null) || {
  echo "fetch-libzmq-source: Debian's libzmq5 is not installed (scripts/install-deps.sh installs it)" >&2; exit 1; }
package=$(dpkg-query -W -f='${source:Package}' libzmq5)
dir=$CACHE/$version
[[ -f $dir/.complete ]] && exit 0
echo "fetching Debian's $package $version source (for the controller's libzmq) into $dir" >&2
rm -rf "$dir.tmp" && mkdir -p "$dir.tmp/apt/parts" "$dir.tmp/apt/lists/partial" "$dir.tmp/apt/cache/archives/partial" "$dir.tmp/src"

# deb-src twins of the system's Debian entries, deb822 (.sources) and one-line (.list) alike.
n=0
shopt -s nullglob
for f in /etc/apt/sources.list.d/*.sources; do
  grep -q 'debian-archive-keyring' "$f" || continue
  sed -E 's/^Types:.*/Types: deb-src/' "$f" > "$dir.tmp/apt/parts/src$((n++)).sources"
done
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
  [[ -f $f ]] || continue
  grep -E '^deb\s' "$f" | grep -E 'debian(-security)?/?\s' | sed -E 's/^deb\s/deb-src /' > "$dir.tmp/apt/parts/src$((n++)).list" || true
done
if ! grep -qs . "$dir.tmp"/apt/parts/*; then
  echo "fetch-libzmq-source: no Debian entry in /etc/apt/sources.list{,.d} to take deb-src from" >&2; exit 1
fi
apt_opts=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$dir.tmp/apt/parts"
          -o "Dir::State::Lists=$dir.tmp/apt/lists" -o "Dir::Cache=$dir.tmp/apt/cache" -o "APT::Sandbox::User=root")
if ! apt-get "${apt_opts[@]}" -qq update >"$dir.tmp/apt.log" 2>&1 ||
   ! (cd "$dir.tmp/src" && apt-get "${apt_opts[@]}" -qq source "$package=$version") >>"$dir.tmp/apt.log" 2>&1; then
  echo "fetch-libzmq-source: could not fetch $package $version with apt-get source (log: $dir.tmp/apt.log):" >&2
  tail -5 "$dir.tmp/apt.log" >&2
  exit 1
fi
tree=$(find "$dir.tmp/src" -mindepth 1 -maxdepth 1 -type d | head -n1)
[[ -n $tree && -f $tree/src/config.hpp && -f $tree/CMakeLists.txt ]] || {
  echo "fetch-libzmq-source: no unpacked libzmq source under $dir.tmp/src" >&2; exit 1; }
rm -rf "$dir" && mkdir -p "$dir"
mv "$tree" "$dir/src"
echo "$package $version" > "$dir/src/.debian-version"
touch "$dir/.complete"
rm -rf "$dir.tmp"
