#!/usr/bin/env bash
# cairn's main job on this host: back up a directory into an encrypted,
# deduplicating repository, damage the directory, restore it, and show that the
# content is back. Everything lives under a temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
C="$PWD/build/cairnctl/cairnctl"
work=$(mktemp -d /tmp/cairn-quickstart.XXXXXX)
trap 'rm -rf "$work"' EXIT
echo "== working in $work"
# the data to protect: this host's /etc plus a generated database-like file
mkdir -p "$work/data"
cp -a /etc "$work/data/etc" 2>/dev/null || true
head -c 20000000 /dev/urandom > "$work/data/member.db"
( umask 077; head -c 24 /dev/urandom | base64 > "$work/passphrase" )
export CAIRN_REPOSITORY="$work/repo" CAIRN_PASSWORD_FILE="$work/passphrase"
echo "== init";            "$C" repo init
echo "== backup";          "$C" repo backup "$work/data" --tag quickstart
echo "== second backup (nothing changed: nothing re-read)"; "$C" repo backup "$work/data"
echo "== snapshots";       "$C" repo snapshots
before=$(cd "$work/data" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum)
echo "== damage the data"
rm -rf "$work/data/etc"; head -c 4096 /dev/zero | dd of="$work/data/member.db" conv=notrunc status=none
echo "== check the repository (reading every byte)"; "$C" repo check --read-data
echo "== restore";         "$C" repo restore latest --target "$work/restored"
after=$(cd "$work/restored$work/data" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum)
if [[ "$before" == "$after" ]]; then
  echo "== OK: every file came back byte for byte ($(find "$work/restored" -type f | wc -l) files)"
else
  echo "== FAILED: restored content differs" >&2; exit 1
fi
