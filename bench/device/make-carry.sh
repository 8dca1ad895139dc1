#!/bin/bash
# Builds .devcarry/: what a benchmark needs on the lent device machine (Ubuntu,
# no package registries), from this Debian 12 machine: stripped cairn binaries
# from ./build, the files of the Debian packages named, and every shared library
# they load (the device installs only the ones it lacks, by soname: setup.sh).
#
#   bash bench/device/make-carry.sh postgresql-15 postgresql-client-15 pgbackrest
#   then, through the device tool:  run(command="bash .devcarry/setup.sh && …", carry=[".devcarry"])
#
# .devcarry/ must be ignored by git (the tool carries only ignored paths named in
# carry): this script adds it to .git/info/exclude. The tool's limit is 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/../.."
D=.devcarry
grep -qx '/.devcarry/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.devcarry/' >> .git/info/exclude; }
rm -rf "$D" && mkdir -p "$D/stage/lib" "$D/stage/root" "$D/tools"
for b in agent/cairn-agent controller/cairn-controller cairnctl/cairnctl; do
  mkdir -p "$D/stage/build/$(dirname $b)"; strip -o "$D/stage/build/$b" "build/$b"
done
: > /tmp/devcarry-files
for p in "$@"; do dpkg -L "$p" | while read -r f; do [ -f "$f" ] && echo "$f"; done; done \
  | grep -v -E '/man/|/doc/|/locale/|llvmjit|/bitcode/' >> /tmp/devcarry-files || true
[ -s /tmp/devcarry-files ] && tar -cf - -T /tmp/devcarry-files 2>/dev/null | tar -xf - -C "$D/stage/root"
# Every shared library the binaries load, except glibc's own (the device's is newer).
# (ldd fails on files that are not dynamic executables: those give no lines)
{ find "$D/stage" -type f \( -perm -u+x -o -name '*.so*' \) -print0 | xargs -0 -r ldd 2>/dev/null || true; } \
  | awk '/=> \// {print $3}' | sort -u \
  | grep -v -E '/(libc|libm|libpthread|libdl|librt|libresolv)\.so|ld-linux' \
  | while read -r l; do cp -L "$l" "$D/stage/lib/"; done
# The device has no zstd: carry the binary and what it loads.
cp /usr/bin/zstd "$D/tools/"; ldd /usr/bin/zstd | awk '/=> \// {print $3}' | grep -v -E 'libc\.so' | xargs -r cp -L -t "$D/tools/"
tar -C "$D/stage" -cf - . | zstd -19 -T0 -q -o "$D/carry.tar.zst"
rm -rf "$D/stage"
cp bench/device/setup.sh "$D/"
du -sh "$D"
