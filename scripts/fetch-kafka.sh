#!/usr/bin/env bash
# Fetches the Kafka brokers the tests run (Debian does not package Kafka) from
# Maven Central with Debian's maven, into a cache reused between runs:
#   ${CAIRN_KAFKA_CACHE:-/var/cache/cairn/kafka}/<version>/*.jar
# 3.9 (ZooKeeper mode, with Debian's ZooKeeper) and 4.x (KRaft), because users
# run both. Idempotent: a version whose jars are complete (.complete stamp) is
# not fetched again. See tests/kafka/pom.xml.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${CAIRN_KAFKA_CACHE:-/var/cache/cairn/kafka}
VERSIONS=(${CAIRN_KAFKA_VERSIONS:-3.9.1 4.1.1})
for v in "${VERSIONS[@]}"; do
  dir=$CACHE/$v
  [[ -f $dir/.complete ]] && continue
  echo "fetching Kafka $v from Maven Central into $dir" >&2
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
  if ! mvn -q -B -f tests/kafka/pom.xml dependency:copy-dependencies -Dkafka.version="$v" \
      -DincludeScope=runtime -DoutputDirectory="$dir.tmp" >"$dir.tmp.log" 2>&1; then
    echo "could not fetch Kafka $v with maven (log: $dir.tmp.log):" >&2
    tail -5 "$dir.tmp.log" >&2
    exit 1
  fi
  ls "$dir.tmp"/kafka_2.13-"$v".jar >/dev/null
  touch "$dir.tmp/.complete"
  rm -rf "$dir" && mv "$dir.tmp" "$dir" && rm -f "$dir.tmp.log"
done
