#!/usr/bin/env bash
# cairn's main job on this host, end to end through the daemons: a controller
# and an agent on loopback, the agent enrolled by an operator, one of its
# directories backed up, damaged, restored by the controller, and checked
# byte for byte. Everything lives in a fresh temporary directory, removed at
# the end; the daemons are stopped by PID. Exit 0 = OK, 1 = something failed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh cairnctl cairn-controller cairn-agent   # only what this script runs
B="$PWD/build"
C="$B/cairnctl/cairnctl" CONTROLLER="$B/controller/cairn-controller" AGENT="$B/agent/cairn-agent"
work=$(mktemp -d /tmp/cairn-quickstart.XXXXXX)
pids=()
step() { echo "== $*"; }
fail() { echo "== FAILED: $*" >&2; exit 1; }
logs() {
  for f in "$work"/controller.log "$work"/agent.log; do
    [[ -f $f ]] && { echo "---- last 25 lines of $f" >&2; tail -n 25 "$f" >&2; }
  done
  return 0
}
cleanup() {
  local rc=$?
  trap - EXIT
  ((rc == 0)) || { echo "== FAILED (exit $rc); daemon logs follow" >&2; logs; }
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do   # give each 10 s to stop cleanly, then kill it
    for _ in {1..100}; do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true
  done
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# wait_for SECONDS WHAT COMMAND...: retries COMMAND every 0.5 s until it succeeds
wait_for() {
  local secs=$1 what=$2; shift 2
  for ((i = 0; i < secs * 2; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null || fail "a daemon (pid $p) exited while waiting for $what"; done
    sleep 0.5
  done
  fail "$what did not happen within $secs s"
}
# sha256 of every regular file below a directory, one line each, sorted by path
manifest() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum); }

step "working in $work"
export CAIRN_OPERATOR_KEY_DIR="$work/keys"
step "keys (controller signing + CURVE, operator CURVE) in $work/keys"
"$C" keys init --dir "$work/keys" >/dev/null

step "repository $work/repo"
( umask 077; head -c 24 /dev/urandom | base64 > "$work/repo.pass" )
CAIRN_REPOSITORY="$work/repo" CAIRN_PASSWORD_FILE="$work/repo.pass" "$C" repo init >/dev/null

step "data to protect: a copy of /etc and a 20 MB file in $work/data"
mkdir -p "$work/data"
cp -a /etc "$work/data/etc" 2>/dev/null || true
head -c 20000000 /dev/urandom > "$work/data/member.db"

# The controller binds free ports itself (port 0) and logs them: picking a free
# port here and binding it later would race with other processes.
step "controller config: fleet and operator sockets on loopback, ports chosen by the controller"
cat > "$work/controller.toml" <<EOF
[controller]
id = "quickstart"
data_dir = "$work/controller"
key_dir = "$work/keys"
[fleet]
listen = "tcp://127.0.0.1:*"
heartbeat_interval_ms = 500
[operator]
listen = "tcp://127.0.0.1:*"
authorized_keys = { quickstart = "$work/keys/operator-curve.pub" }
EOF
"$CONTROLLER" --config "$work/controller.toml" --check-config >/dev/null
step "starting cairn-controller (log: $work/controller.log)"
"$CONTROLLER" --config "$work/controller.toml" > "$work/controller.log" 2>&1 & pids+=($!)
bound() { grep -oE 'listening: fleet tcp://127\.0\.0\.1:[0-9]+ operator tcp://127\.0\.0\.1:[0-9]+' "$work/controller.log"; }
wait_for 20 "the controller logging the ports it bound" bound
ports=($(bound | grep -oE ':[0-9]+' | tr -d :))
fleet_port=${ports[0]} op_port=${ports[1]}
export CAIRN_CONTROLLER="tcp://127.0.0.1:$op_port"
echo "   fleet tcp://127.0.0.1:$fleet_port, operator $CAIRN_CONTROLLER"
wait_for 20 "the controller answering on $CAIRN_CONTROLLER" "$C" status

step "starting cairn-agent (log: $work/agent.log)"
cat > "$work/agent.toml" <<EOF
name = "quickstart-node"
state_dir = "$work/agent"
[controller]
endpoint = "tcp://127.0.0.1:$fleet_port"
public_key = "$(cat "$work/keys/controller-curve.pub")"
signing_keys_file = "$work/keys/controller-signing.pub"
heartbeat_interval_ms = 500
[[repository]]
name = "main"
path = "$work/repo"
password_file = "$work/repo.pass"
[[component]]
name = "data"
driver = "files"
paths = ["$work/data"]
EOF
"$AGENT" --config "$work/agent.toml" --check-config >/dev/null
agent_key=$("$AGENT" --config "$work/agent.toml" --print-public-key 2>/dev/null)
"$AGENT" --config "$work/agent.toml" > "$work/agent.log" 2>&1 & pids+=($!)
echo "   controller pid ${pids[0]}, agent pid ${pids[1]}, agent key $agent_key"

step "waiting for the agent to show up as pending"
pending() { "$C" agent list | awk -v k="$agent_key" '$1 == "pending" && $4 == k {print $2}' | grep .; }
wait_for 30 "the agent appearing as pending in 'cairnctl agent list'" pending
step "approving $(pending)"
"$C" agent approve "$(pending)"
step "waiting for quickstart-node to connect as approved"
connected() { "$C" agent list | awk '$2 == "quickstart-node" && $3 == "approved" && $4 == "yes"' | grep -q .; }
wait_for 60 "quickstart-node connected and approved" connected
"$C" agent list

before=$(manifest "$work/data")
step "backup create --wait"
"$C" backup create --wait | tee "$work/backup.out" || fail "backup set did not complete (exit ${PIPESTATUS[0]})"
set_id=$(awk '/^backup set .* created/ {print $3; exit}' "$work/backup.out")
[[ -n $set_id ]] || fail "no backup set id in the output of 'backup create'"
step "backup list"
"$C" backup list

step "damaging the data: deleting etc/, overwriting 1 MiB of member.db"
rm -rf "$work/data/etc"
head -c 1048576 /dev/zero | dd of="$work/data/member.db" bs=1M seek=3 conv=notrunc status=none
[[ $(manifest "$work/data") != "$before" ]] || fail "damaging the data changed nothing"

step "restore $set_id --wait"
"$C" restore "$set_id" --wait || fail "restore of $set_id did not complete (exit $?)"

step "verifying sha256 of every file"
after=$(manifest "$work/data")
if [[ "$before" != "$after" ]]; then
  diff <(echo "$before") <(echo "$after") | head -n 20 >&2
  fail "restored content differs from what was backed up"
fi
step "OK: all $(wc -l <<<"$before") files are back byte for byte (backup set $set_id)"
