#!/usr/bin/env bash
# Installs every Debian package cairn needs to build, test and benchmark.
# Idempotent: skips apt entirely when everything is already installed.
set -euo pipefail
PKGS=(build-essential cmake ninja-build pkg-config git
      librdkafka-dev cppzmq-dev libzmq3-dev libprotobuf-dev protobuf-compiler
      libsqlite3-dev libspdlog-dev libssl-dev catch2 libzstd-dev
      libcurl4-openssl-dev libsystemd-dev libcli11-dev nlohmann-json3-dev
      libtomlplusplus-dev libsimdjson-dev python3 python3-pytest python3-cryptography python3-zmq attr procps time)
if [[ "${1:-}" == "--bench" ]]; then PKGS+=(restic borgbackup zstd); fi
# libFuzzer builds (docs/testing.md); CI replays the corpora with gcc and needs none of it.
if [[ "${1:-}" == "--fuzz" ]]; then PKGS+=(clang libclang-rt-14-dev lld); fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO=sudo
  echo "installing: ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
