#!/usr/bin/env bash
# cairn's main job on this host, end to end through the daemons: a controller
# and an agent on loopback, the agent enrolled by an operator; real etcd,
# ZooKeeper, Prometheus and HAProxy servers from Debian's packages (installed
# when missing) on free loopback ports, plus a directory of files; each one
# backed up through the controller, damaged, restored through the controller
# and checked with the component's own tools. Everything lives in a fresh
# temporary directory, removed at the end; every process is stopped by its
# PID. Exit 0 = OK, 1 = something failed (the daemons' logs are printed).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --quickstart
bash scripts/build.sh cairnctl cairn-controller cairn-agent   # only what this script runs
exec python3 scripts/quickstart.py
