#!/usr/bin/env bash
# Fetches the OpenSearch nodes the tests run (Debian packages neither
# OpenSearch nor Elasticsearch) from Maven Central with Debian's maven, into a
# cache reused between runs:
#   ${CAIRN_OPENSEARCH_CACHE:-/var/cache/cairn/opensearch}/<version>/*.jar
# the server, the modules a node needs for what the tests do (netty4 transport
# and HTTP, analysis-common, lang-painless, mapper-extras: see
# tests/opensearch/pom.xml), log4j-core, and cairn-opensearch-node.jar: the
# launcher in tests/opensearch/CairnOpenSearchNode.java, compiled here with
# javac, which starts a node with those modules as classpath plugins, as
# OpenSearch's own integration tests do. Idempotent: a version whose jars are
# complete (.complete stamp) is not fetched again; the launcher is compiled
# again only when its source changed (launcher.sha256), and the class-data
# archive (classes-<jdk>.jsa, below) made only when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${CAIRN_OPENSEARCH_CACHE:-/var/cache/cairn/opensearch}
VERSIONS=(${CAIRN_OPENSEARCH_VERSIONS:-2.19.6})
LAUNCHER=tests/opensearch/CairnOpenSearchNode.java
for v in "${VERSIONS[@]}"; do
  dir=$CACHE/$v
  if [[ ! -f $dir/.complete ]]; then
    echo "fetching OpenSearch $v from Maven Central into $dir" >&2
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
    if ! mvn -q -B -f tests/opensearch/pom.xml dependency:copy-dependencies -Dopensearch.version="$v" \
        -DincludeScope=runtime -DoutputDirectory="$dir.tmp" >"$dir.tmp.log" 2>&1; then
      echo "could not fetch OpenSearch $v with maven (log: $dir.tmp.log):" >&2
      tail -5 "$dir.tmp.log" >&2
      exit 1
    fi
    # The server's log4j-core dependency is optional (a distribution ships it
    # in lib/): the one matching its log4j-api, or a node logs nothing.
    api=$(ls "$dir.tmp"/log4j-api-*.jar | head -1)
    l4j=${api##*/log4j-api-}; l4j=${l4j%.jar}
    if ! mvn -q -B -f tests/opensearch/pom.xml dependency:copy -Dartifact="org.apache.logging.log4j:log4j-core:$l4j" \
        -DoutputDirectory="$dir.tmp" >>"$dir.tmp.log" 2>&1; then
      echo "could not fetch log4j-core $l4j with maven (log: $dir.tmp.log):" >&2
      tail -5 "$dir.tmp.log" >&2
      exit 1
    fi
    ls "$dir.tmp"/opensearch-"$v".jar "$dir.tmp"/transport-netty4-client-"$v".jar >/dev/null
    touch "$dir.tmp/.complete"
    rm -rf "$dir" && mv "$dir.tmp" "$dir" && rm -f "$dir.tmp.log"
  fi

  # The launcher, compiled against this version's jars.
  sum=$(sha256sum "$LAUNCHER" | cut -d' ' -f1)
  [[ -f $dir/cairn-opensearch-node.jar && $(cat "$dir/launcher.sha256" 2>/dev/null) == "$sum" ]] && continue
  echo "compiling the OpenSearch $v test node launcher into $dir" >&2
  classes=$(mktemp -d)
  trap 'rm -rf "$classes"' EXIT
  javac -d "$classes" -cp "$dir/*" "$LAUNCHER"
  jar cf "$dir/cairn-opensearch-node.jar.tmp" -C "$classes" .
  rm -f "$dir"/classes-*.jsa  # archived the old launcher's classes
  mv "$dir/cairn-opensearch-node.jar.tmp" "$dir/cairn-opensearch-node.jar"
  echo "$sum" >"$dir/launcher.sha256"
  rm -rf "$classes"
done

# A class-data archive of each version's node classes for this JDK
# (tests/integration/servers_opensearch.py § JVM start-up): a node reaches
# green with about 40% less CPU. Made once per machine and JDK (a ~15 s node
# run, ~80 MB); without it the tests only run slower, so a failure here is
# reported, not fatal.
for v in "${VERSIONS[@]}"; do
  if ! out=$(/usr/bin/python3 tests/integration/servers_opensearch.py cds "$v" 2>&1); then
    echo "warning: no class-data archive for OpenSearch $v (the tests start its nodes slower):" >&2
    tail -5 <<<"$out" >&2
  fi
done
