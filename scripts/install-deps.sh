#!/usr/bin/env bash
# Installs every Debian package cairn needs to build, test and benchmark.
# Idempotent: skips apt entirely when everything is already installed.
set -euo pipefail
PKGS=(build-essential dpkg-dev cmake ninja-build pkg-config git
      librdkafka-dev cppzmq-dev libzmq3-dev libsodium-dev libprotobuf-dev protobuf-compiler
      libsqlite3-dev libspdlog-dev libssl-dev catch2 libzstd-dev
      clang-format  # the sources' format, checked by scripts/test.sh (scripts/format.sh)
      libcurl4-openssl-dev libsystemd-dev libcli11-dev nlohmann-json3-dev
      libtomlplusplus-dev libsimdjson-dev ccache python3 python3-pytest python3-cryptography python3-zmq python3-yaml attr procps time
      libgrpc++-dev protobuf-compiler-grpc  # the etcd driver speaks etcd's v3 gRPC API
      etcd-server etcd-client zookeeper prometheus haproxy  # the drivers' tests and the quickstart run the real servers
      openjdk-17-jdk-headless maven python3-confluent-kafka  # Kafka's broker and OpenSearch's node from Maven Central (scripts/fetch-kafka.sh, fetch-opensearch.sh), and a Kafka client for the tests
      systemd dbus-daemon util-linux  # service control over D-Bus, tested against a private systemd manager (tests/integration/servers_systemd.py)
      libcctz-dev tzdata  # policies' schedules in a configured time zone (controller/schedule.h)
      libmicrohttpd-dev chromium  # the controller's /metrics and status page, and the headless browser its test loads it in
      libarchive-dev  # cairnctl export and import: .tar.gz archives
      libpq-dev postgresql-15  # the postgresql driver's client library, and the server its tests run
      debootstrap lintian
      python3-botocore)  # the object-storage tests: AWS's own SigV4 signer as the reference for ours  # the .deb packages' test: installed into a clean Debian 12 root, checked by lintian
if [[ "${1:-}" == "--bench" ]]; then PKGS+=(restic borgbackup zstd pgbackrest); fi
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
  # The server packages (etcd, prometheus, haproxy) start their system service
  # when installed; cairn's tests start their own on free loopback ports, so
  # the install starts none (policy-rc.d 101 = "not allowed", honoured by
  # invoke-rc.d and deb-systemd-invoke), unless the host already has a policy.
  own_policy=""
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 755 /usr/sbin/policy-rc.d
    own_policy=1
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [[ -n $own_policy ]] && $SUDO rm -f /usr/sbin/policy-rc.d
  trap - EXIT
fi
# The controller's libzmq is built from Debian's source of the installed
# libzmq5 (cmake/controller_libzmq.cmake); without it the build still works and
# the controller loads Debian's libzmq5 (more memory per agent), and says so.
bash "$(dirname "$0")/fetch-libzmq-source.sh" ||
  echo "install-deps: the controller will be built on Debian's libzmq5 as it is (see above)" >&2
# Kafka is not packaged by Debian: its jars come from Maven Central, cached
# (tests/kafka/pom.xml; nothing is fetched when the cache is complete).
bash "$(dirname "$0")/fetch-kafka.sh"
# The object-store and search-cluster tests' servers: not for the quick start (--quickstart), which runs none.
[[ "${1:-}" == "--quickstart" ]] && exit 0
# OpenSearch is not packaged by Debian: its jars come from Maven Central, cached
# like Kafka's, with the launcher that starts a test node (tests/opensearch/).
bash "$(dirname "$0")/fetch-opensearch.sh"
# SeaweedFS, the S3 server of the object-storage tests, is not packaged by
# Debian: built once from the Go module proxy into a cache (~3.5 min of 2 cores the first time).
bash "$(dirname "$0")/fetch-seaweedfs.sh"
# Azurite, the Azure Blob server of the Azure backend's tests, is not packaged by
# Debian: installed once from the npm registry into a cache.
bash "$(dirname "$0")/fetch-azurite.sh"
