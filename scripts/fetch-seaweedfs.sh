#!/usr/bin/env bash
# Builds SeaweedFS (`weed`), the S3-compatible server the object-storage tests
# run on loopback, from the Go module proxy into a cache reused between runs:
#   ${CAIRN_SEAWEEDFS_CACHE:-/var/cache/cairn/seaweedfs}/<version>/weed
# Debian does not package it. `go install` refuses the module (its go.mod has
# replace directives), so the module is downloaded, copied somewhere writable
# and built there (../shared/NOTES-storage.md). About 5 minutes of 2 cores the
# first time; idempotent: a version with its .complete stamp is not built again.
set -euo pipefail
CACHE=${CAIRN_SEAWEEDFS_CACHE:-/var/cache/cairn/seaweedfs}
VERSION=${CAIRN_SEAWEEDFS_VERSION:-v0.0.0-20261109003541-7506e5f91cd6}
GO=${CAIRN_GO:-$(command -v go || echo /usr/local/go/bin/go)}
dir=$CACHE/$VERSION
[[ -f $dir/.complete && -x $dir/weed ]] && exit 0
if [[ ! -x $GO ]]; then
  echo "no Go toolchain (looked for 'go' on PATH and /usr/local/go/bin/go): SeaweedFS, the server of the S3 tests, cannot be built: install a current Go toolchain into /usr/local/go (this machine kind has 1.26; Debian 12's golang 1.19 is too old), then run this again" >&2
  exit 1
fi
echo "building SeaweedFS $VERSION from the Go module proxy into $dir (once per machine, ~5 min)" >&2
work=$CACHE/build.tmp
rm -rf "$work" && mkdir -p "$work"
export GOPATH=$CACHE/gopath GOMODCACHE=$CACHE/gopath/pkg/mod GOCACHE=$CACHE/gocache GOFLAGS=-mod=mod
log=$CACHE/build.log
if ! src=$("$GO" mod download -json "github.com/seaweedfs/seaweedfs@$VERSION" 2>"$log" | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p'); then
  echo "could not download the SeaweedFS module (log: $log)" >&2; tail -5 "$log" >&2; exit 1
fi
[[ -n $src && -d $src ]] || { echo "go mod download gave no module directory (log: $log)" >&2; exit 1; }
cp -r "$src" "$work/src" && chmod -R u+w "$work/src"
if ! (cd "$work/src" && "$GO" build -trimpath -ldflags '-s -w' -o "$work/weed" ./weed) >>"$log" 2>&1; then
  echo "could not build SeaweedFS (log: $log):" >&2; tail -5 "$log" >&2; exit 1
fi
mkdir -p "$dir.tmp" && mv "$work/weed" "$dir.tmp/weed" && touch "$dir.tmp/.complete"
rm -rf "$dir" && mv "$dir.tmp" "$dir" && rm -rf "$work" "$log"
# The module and build caches are only needed to build again.
rm -rf "$CACHE/gocache"
GOMODCACHE=$CACHE/gopath/pkg/mod "$GO" clean -modcache 2>/dev/null || true
rm -rf "$CACHE/gopath"
