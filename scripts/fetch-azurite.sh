#!/usr/bin/env bash
# Installs Azurite (Microsoft's Azure Storage emulator; `azurite-blob` is the
# Blob service the Azure backend's tests run on loopback) from the npm registry
# into a cache reused between runs:
#   ${CAIRN_AZURITE_CACHE:-/var/cache/cairn/azurite}/<version>/node_modules/.bin/azurite-blob
# Debian does not package it. Idempotent: a version with its .complete stamp is
# not installed again. Needs node (/usr/bin/node) and npm.
set -euo pipefail
CACHE=${CAIRN_AZURITE_CACHE:-/var/cache/cairn/azurite}
VERSION=${CAIRN_AZURITE_VERSION:-3.37.0}
NPM=${CAIRN_NPM:-$(command -v npm || echo /usr/bin/npm)}
dir=$CACHE/$VERSION
[[ -f $dir/.complete && -x $dir/node_modules/.bin/azurite-blob ]] && exit 0
if [[ ! -x $NPM ]]; then
  echo "no npm (looked for 'npm' on PATH and /usr/bin/npm): Azurite, the server of the Azure tests, cannot be installed: install nodejs and npm (Debian packages), then run this again" >&2
  exit 1
fi
echo "installing Azurite $VERSION from the npm registry into $dir (once per machine)" >&2
rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
log=$CACHE/install.log
if ! "$NPM" install --prefix "$dir.tmp" --no-audit --no-fund --omit=dev "azurite@$VERSION" >"$log" 2>&1; then
  echo "could not install Azurite (log: $log):" >&2; tail -5 "$log" >&2; exit 1
fi
[[ -x $dir.tmp/node_modules/.bin/azurite-blob ]] || { echo "the Azurite package has no azurite-blob (log: $log)" >&2; exit 1; }
touch "$dir.tmp/.complete"
rm -rf "$dir" && mv "$dir.tmp" "$dir" && rm -f "$log"
