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

# Kafka 4.x logs through log4j2, but its Maven dependencies carry no SLF4J
# binding (the release tarball ships log4j-slf4j-impl): without one a broker
# logs nothing, and a test that sees a broker not come back cannot say why.
# The binding matching the broker's log4j-core, in a cache of an older run too.
for v in "${VERSIONS[@]}"; do
  dir=$CACHE/$v
  core=$(ls "$dir"/log4j-core-*.jar 2>/dev/null | head -1) || true
  [[ -n $core ]] || continue
  ls "$dir"/log4j-slf4j*-impl-*.jar >/dev/null 2>&1 && continue
  l4j=${core##*/log4j-core-}; l4j=${l4j%.jar}
  echo "fetching log4j-slf4j-impl $l4j (Kafka $v's logging) into $dir" >&2
  if ! mvn -q -B -f tests/kafka/pom.xml dependency:copy -Dartifact="org.apache.logging.log4j:log4j-slf4j-impl:$l4j" \
      -DoutputDirectory="$dir" >"$dir.log4j.log" 2>&1; then
    echo "could not fetch log4j-slf4j-impl $l4j with maven (log: $dir.log4j.log):" >&2
    tail -5 "$dir.log4j.log" >&2
    exit 1
  fi
  rm -f "$dir.log4j.log"
done

# A class-data archive of each version's broker classes for this JDK
# (tests/integration/servers_kafka.py § JVM start-up): a broker reaches its
# first answer with about 40% less CPU, and the suite starts about 90 of them.
# Made once per machine and JDK (a ~10 s broker run); without it the tests
# only run slower, so a failure here is reported, not fatal.
for v in "${VERSIONS[@]}"; do
  if ! out=$(/usr/bin/python3 tests/integration/servers_kafka.py cds "$v" 2>&1); then
    echo "warning: no class-data archive for Kafka $v (the tests start its brokers slower):" >&2
    tail -5 <<<"$out" >&2
  fi
done
