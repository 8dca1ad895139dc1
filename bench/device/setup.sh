#!/bin/bash
# On the device machine (run from the repository root there): unpacks
# .devcarry/carry.tar.zst (make-carry.sh) to /opt/cairncarry, puts the Debian
# packages' files in place (new directories only), installs only the shared
# libraries the machine lacks, and makes a `postgres` user for servers that
# refuse root. Afterwards: export CAIRN_BUILD_DIR=/opt/cairncarry/build.
set -u
C=$(cd "$(dirname "$0")" && pwd)
X=/opt/cairncarry; mkdir -p $X
LD_LIBRARY_PATH=$C/tools $C/tools/zstd -dc "$C/carry.tar.zst" | tar -xf - -C $X || exit 1
# Debian package files: copied where Debian puts them, never over a file the machine has.
(cd $X/root && find . -type f) | while read -r f; do
  t="/${f#./}"; [ -e "$t" ] || { mkdir -p "$(dirname "$t")"; cp -a "$X/root/$f" "$t"; }
done
mkdir -p /usr/local/lib/cairncarry
for l in $X/lib/*; do n=$(basename "$l"); ldconfig -p | grep -q "^[[:space:]]*$n " || cp "$l" /usr/local/lib/cairncarry/; done
echo /usr/local/lib/cairncarry > /etc/ld.so.conf.d/zz-cairncarry.conf; ldconfig
echo "carried libraries this machine lacked: $(ls /usr/local/lib/cairncarry | wc -l)"
id postgres >/dev/null 2>&1 || useradd -r -m -d /var/lib/postgresql -s /bin/bash postgres
for b in $X/build/*/*; do ldd "$b" | grep "not found" && echo "MISSING for $b"; done
nproc; grep PRETTY_NAME /etc/os-release
