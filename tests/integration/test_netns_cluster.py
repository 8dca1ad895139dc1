"""Three nodes and a controller host in network namespaces on one machine
(issue 12): each node runs a real etcd member (one 3-member cluster), a real
ZooKeeper server (one 3-server ensemble) and a cairn-agent, all on private
addresses of a bridge in the controller host's namespace (netns.py). Then,
with a policy declared in the controller's configuration:

1. a scheduled run backs up every node and completes;
2. one node's link is cut while its backup is in the middle of a file: the
   set ends `partial` with that node's reason within the liveness timeout;
   the link restored (and etcd and ZooKeeper, which lost a member, serving
   again), the next run completes;
3. the controller is killed mid-run and restarted: the repository and the
   catalog check clean, the run is reconciled (the held task ends under the
   new controller), the schedule goes on;
4. etcd and ZooKeeper are restored on all three nodes from one set (one
   restore each, in the controller's steps): the data is back on every member;
5. retention expires the oldest sets, prune shrinks the repository, and the
   newest sets still restore.

"In the middle of a file": the cut node's agent reads one file of an extra
`files` component through a small LD_PRELOAD shim (as test_streaming.py and
test_operator_ux.py do) that holds reads past its first MiB while a gate
file exists. The test opens the gate when it has done what it does mid-run.
"""
import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from cluster import Cluster, catalog, restore_id, set_state, task_state, write_random_file
from netns import Net
from servers_etcd import need_etcd, start_cluster
from servers_zookeeper import available as zk_why_not
from servers_zookeeper import ensemble

NODES = ["node-1", "node-2", "node-3"]
CUT = "node-3"  # the node whose link is cut; it has the gated component
LIVENESS = 25  # heartbeats of 200 ms: 5 s of silence before a side is lost (JVMs starting on 2 cores)
LIVENESS_S = LIVENESS * 0.2
EVERY = 6  # the policy's schedule: @every 6s

# Holds a read of a file whose path has "netns-gate" in it, past its first MiB,
# while the file named by $CAIRN_TEST_GATE exists (at most 120 s), and creates
# "$CAIRN_TEST_GATE.reached" when it starts holding. Only in cairn-agent: the
# servers the agent starts inherit LD_PRELOAD and are left alone.
SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/types.h>

static int enabled;
__attribute__((constructor)) static void init(void) {
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) return;
  exe[n] = 0;
  const char* base = strrchr(exe, '/');
  enabled = base && strcmp(base + 1, "cairn-agent") == 0 && getenv("CAIRN_TEST_GATE") != NULL;
}

static int gated(int fd) {
  char link[64], path[4096];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, path, sizeof path - 1);
  if (n < 0) return 0;
  path[n] = 0;
  return strstr(path, "netns-gate") != NULL;
}

static void hold(void) {
  const char* gate = getenv("CAIRN_TEST_GATE");
  if (access(gate, F_OK) != 0) return;
  char mark[4200];
  snprintf(mark, sizeof mark, "%s.reached", gate);
  int f = open(mark, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
  if (f >= 0) close(f);
  for (int i = 0; i < 1200 && access(gate, F_OK) == 0; ++i) usleep(100000);
}

typedef ssize_t (*pread_fn)(int, void*, size_t, off_t);
static ssize_t call(const char* name, int fd, void* buf, size_t n, off_t off) {
  if (enabled && off >= (1 << 20) && gated(fd)) hold();
  pread_fn real = (pread_fn)dlsym(RTLD_NEXT, name);
  return real(fd, buf, n, off);
}
ssize_t pread(int fd, void* buf, size_t n, off_t off) { return call("pread", fd, buf, n, off); }
ssize_t pread64(int fd, void* buf, size_t n, off_t off) { return call("pread64", fd, buf, n, off); }
"""


def etcd_keys(n=500):
    return {f"/registry/k{i:04d}": f"v-{i}-" + "x" * (i % 40) for i in range(n)}


def znodes():
    t = {"/app": "root", "/app/config": "retries=3;timeout=30"}
    for i in range(12):
        t[f"/app/n{i:02d}"] = f"value-{i}"
    return t


def zk_read(zk, t):
    return zk.cli([f"get {p}" for p in t])


class Env:
    """The namespaces, the servers and the control plane of one test."""

    def __init__(self, base):
        self.base = base
        self.net = Net(NODES)
        self.c = None
        self.etcd = []
        self.zk = []
        self.gate = base / "gate"
        self.bulk = base / "bulk"
        self.old = None  # a file only the first sets hold

    def stop(self):
        """Every process by its PID, then the namespaces; each step runs whatever failed before it."""
        errors = []
        if self.c:
            try:
                self.c.stop_all()
            except Exception as e:  # noqa: BLE001
                errors.append(f"control plane: {e!r}")
        self.gate.unlink(missing_ok=True)
        for m in self.etcd:
            try:
                m.stop()
            except Exception as e:  # noqa: BLE001
                errors.append(f"etcd {m.name}: {e!r}")
        for z in self.zk:
            try:
                z.stop()
            except Exception as e:  # noqa: BLE001
                errors.append(f"zookeeper {z.dir.name}: {e!r}")
        errors += self.net.teardown()
        return errors


@pytest.fixture
def env(tmp_path):
    need_etcd()
    if zk_why_not():
        pytest.fail(zk_why_not())
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "no C compiler for the gate shim"
    e = Env(tmp_path)
    try:
        e.net.up()  # skips when namespaces cannot be made
        e.net.wait_reachable()
        ns = [e.net.ns[n] for n in NODES]
        hosts = [e.net.addr[n] for n in NODES]
        e.zk = ensemble(tmp_path / "zk", hosts=hosts, netns=ns)
        for z in e.zk:
            z.start()
        e.etcd = start_cluster(tmp_path / "etcd", ["m1", "m2", "m3"], hosts=hosts, netns=ns)
        for z in e.zk:
            z.wait_serving(timeout=120)
        yield e
    finally:
        errors = e.stop()
        assert not errors, f"teardown: {errors}"


def sets_of(c, policy):
    return [s for s in c.json("backup", "list", "--limit", "1000")["sets"] if s.get("policy") == policy]


def newer_than(c, sid):
    """The policy's sets made after set sid, oldest first (`backup list` is newest first)."""
    ids = [s["backup_set_id"] for s in sets_of(c, "netns")]
    return [s for s in sets_of(c, "netns")[:ids.index(sid)]][::-1]


def show(c, sid):
    return c.json("backup", "show", sid)


def tasks_by(shown):
    """{(agent name, component): task}."""
    return {(t.get("agent_name"), t.get("component")): t for t in shown.get("tasks", [])}


def pack_bytes(c):
    return sum(p.stat().st_size for p in (c.repo / "data").rglob("*") if p.is_file())


def describe(c, sid):
    return c.ok("backup", "show", sid)


def controller_config(c, policy_extra=""):
    return f"""
[[repository]]
name = "main"
path = "{c.repo}"
password_file = "{c.repo_pass}"

[[policy]]
name = "netns"
schedule = "@every {EVERY}s"
{policy_extra}"""


def restart_with(c, base_cfg, extra):
    c.controller.stop()
    c.controller_cfg.write_text(base_cfg + extra)
    c.start_controller()


def gate_next_run(e, c):
    """Closes the gate and gives the gated file new bytes, so that the next run
    reads it again and is held past its first MiB; returns that run's set."""
    reached = e.gate.with_name("gate.reached")
    reached.unlink(missing_ok=True)
    e.gate.write_text("closed\n")
    before = {s["backup_set_id"] for s in sets_of(c, "netns")}
    write_random_file(e.bulk / "netns-gate.bin", 8 << 20)
    c.wait_for("the cut node's backup held in the middle of its file", reached.exists, timeout=4 * EVERY + 30)
    new = [s for s in sets_of(c, "netns") if s["backup_set_id"] not in before and set_state(s) == "running"]
    assert len(new) == 1, f"not one running set holding the gated read: {new}\n{c.logs()}"
    sid = new[0]["backup_set_id"]
    # Held mid-file: its progress reaches the catalog with the next report.
    c.wait_for("the gated task shown running", lambda: task_state(tasks_by(show(c, sid)).get((CUT, "bulk")) or {"state": ""})
               == "running", timeout=15)
    return sid


def servers_healthy(e, c, timeout=90):
    """Every etcd member and every ZooKeeper server serves, with one leader each."""
    def ok():
        zk = [z.srvr().get("Mode") or "" for z in e.zk]
        etcd = [m.ctl("endpoint", "health", check=False, timeout=30).returncode for m in e.etcd]
        try:
            leaders = {m.status()["leader"] for m in e.etcd} if not any(etcd) else set()
        except AssertionError:  # a member stopped answering between the two questions
            leaders = set()
        good = sorted(zk) == ["follower", "follower", "leader"] and not any(etcd) and len(leaders) == 1
        return good or (zk, etcd, leaders)
    c.wait_for("etcd and ZooKeeper serving on every node", lambda: ok() is True, timeout=timeout)


def wait_set_end(c, sid, timeout):
    return c.wait_for(f"set {sid} ending",
                      lambda: next((s for s in sets_of(c, "netns") if s["backup_set_id"] == sid
                                    and set_state(s) != "running"), None), timeout=timeout)


def assert_complete_on_every_node(c, sid):
    shown = show(c, sid)
    assert set_state(shown) == "complete", f"{describe(c, sid)}\n{c.logs()}"
    tasks = tasks_by(shown)
    for n in NODES:
        assert task_state(tasks[(n, "data")]) == "succeeded", describe(c, sid)
    assert task_state(tasks[(CUT, "bulk")]) == "succeeded", describe(c, sid)
    for comp in ("etcd", "zookeeper"):
        mine = [t for t in shown["tasks"] if t.get("component") == comp]
        assert len(mine) == 1 and task_state(mine[0]) == "succeeded", describe(c, sid)
    return shown


def test_three_nodes_in_namespaces_schedule_cut_crash_restore_retention(env, tmp_path):
    e = env
    net = e.net
    c = Cluster(tmp_path / "cp", liveness=LIVENESS, netns=net.ctl_ns, host=net.ctl_addr)
    e.c = c
    c.init()
    c.start_controller()
    base_cfg = c.controller_cfg.read_text()

    # Data in the servers, before any backup.
    keys = etcd_keys()
    e.etcd[0].put_many(keys)
    tree = znodes()
    e.zk[0].cli([f"create {p} {v}" for p, v in tree.items()])

    so = tmp_path / "gate-shim.so"
    (tmp_path / "gate-shim.c").write_text(SHIM)
    subprocess.run([shutil.which("cc") or shutil.which("gcc"), "-shared", "-fPIC", "-O1", "-o", so,
                    tmp_path / "gate-shim.c", "-ldl"], check=True)
    e.bulk.mkdir()
    write_random_file(e.bulk / "netns-gate.bin", 8 << 20)
    for i, n in enumerate(NODES):
        comps = e.etcd[i].component_toml() + e.zk[i].component()
        agent_env = None
        if n == CUT:
            comps += f'[[component]]\nname = "bulk"\ndriver = "files"\npaths = ["{e.bulk}"]\n'
            agent_env = {"LD_PRELOAD": os.fspath(so), "CAIRN_TEST_GATE": os.fspath(e.gate)}
        c.add_agent(n, {"id.txt": f"{n}\n".encode()}, components=comps, netns=net.ns[n], env=agent_env)
        c.enrol(n)
    # Unique bytes only the first sets hold: what prune gives back once they expire.
    e.old = c.agent_dirs["node-1"]["data"] / "old.bin"
    write_random_file(e.old, 4 << 20)

    # ---- 1. the policy, declared in the configuration, runs on its schedule over all three nodes
    restart_with(c, base_cfg, controller_config(c))
    first = c.wait_for("a scheduled set ending",
                       lambda: next((s for s in sets_of(c, "netns") if set_state(s) != "running"), None),
                       timeout=3 * EVERY + 30)
    assert first["trigger"] == "schedule" and first["requested_by"] == "policy:netns", first
    assert_complete_on_every_node(c, first["backup_set_id"])
    e.old.unlink()

    # ---- 2. the cut node's link goes down in the middle of its backup
    cut_sid = gate_next_run(e, c)
    assert net.link_up(CUT)
    cut_at = time.monotonic()
    net.cut(CUT)
    assert not net.link_up(CUT)
    wait_set_end(c, cut_sid, timeout=LIVENESS_S + 30)
    took = time.monotonic() - cut_at
    print(f"set {cut_sid} ended {took:.1f} s after the cut (liveness {LIVENESS_S} s)")
    shown = show(c, cut_sid)
    text = describe(c, cut_sid)
    assert set_state(shown) == "partial", f"{text}\n{c.logs()}"
    # Within the liveness timeout (plus the controller's 1 s sweep and this test's polling).
    assert took <= LIVENESS_S + 3, f"the set took {took:.1f} s to end after the cut; liveness is {LIVENESS_S} s"
    held = tasks_by(shown)[(CUT, "bulk")]
    assert task_state(held) == "failed", text
    reason = json.dumps(held.get("reasons", []))
    assert f"no word from the agent for {int(LIVENESS_S * 1000)} ms" in reason, text
    # `backup show` names the node, the component and why.
    assert f"{CUT}/bulk" in text and f"agent_lost: no word from the agent for {int(LIVENESS_S * 1000)} ms" in text, text
    for (n, comp), t in tasks_by(shown).items():
        if n == CUT and task_state(t) != "succeeded":  # what it had not finished, it lost with the link
            assert "no word from the agent" in json.dumps(t.get("reasons", [])), text
        elif comp == "data":  # the other nodes' files are unaffected (etcd may see its leader go with the link)
            assert task_state(t) == "succeeded", text
    assert c.wait_for(f"{CUT} shown disconnected", lambda: not (c.find_agent(name=CUT) or {}).get("connected"),
                      timeout=10)

    # The link back (and the held read let go): the next run completes, on every node.
    net.restore(CUT)
    e.gate.unlink()
    c.wait_for(f"{CUT} connected again", lambda: c.connected(CUT), timeout=60)
    # etcd and ZooKeeper elect a leader again when a member comes and goes; the
    # runs in between may fail there (their own reason). Once every member
    # serves, the next run completes.
    servers_healthy(e, c)
    since = {s["backup_set_id"] for s in sets_of(c, "netns")}
    nxt = c.wait_for("the next run", lambda: next(
        (s for s in sets_of(c, "netns")[::-1] if s["backup_set_id"] not in since), None), timeout=3 * EVERY + 30)
    nxt = wait_set_end(c, nxt["backup_set_id"], timeout=60)
    assert_complete_on_every_node(c, nxt["backup_set_id"])

    # ---- 3. the controller killed in the middle of a run, and started again
    crash_sid = gate_next_run(e, c)
    # The other tasks have reported; the cut node's file is half read.
    c.wait_for("every task but the held node's ended", lambda: all(
        task_state(t) in ("succeeded", "partial", "failed") for (n, _), t in tasks_by(show(c, crash_sid)).items()
        if n != CUT), timeout=60)
    c.controller.kill(signal.SIGKILL)
    # The held read goes on while no controller runs: the task ends and its
    # result is sent into a dead connection (or refused by the new controller
    # before the agent registered again). The agent keeps results until the
    # controller acknowledges them and sends them again after it registers.
    log = c.agent_dirs[CUT]["dir"] / "agent.log"
    done_before = log.read_text(errors="replace").count("succeeded (")
    e.gate.unlink()
    c.wait_for("the held task ending while the controller is down",
               lambda: log.read_text(errors="replace").count("succeeded (") > done_before, timeout=60)
    c.start_controller()
    for n in NODES:
        c.wait_for(f"{n} connected to the restarted controller", lambda: c.connected(n), timeout=LIVENESS_S + 30)
    wait_set_end(c, crash_sid, timeout=60)
    assert_complete_on_every_node(c, crash_sid)
    rc, out, err = c.ctl("repo", "check", "--repo", c.repo, "--password-file", c.repo_pass)
    assert rc == 0, f"repository check after the controller was killed:\n{out}\n{err}"
    con = catalog(c)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        con.close()
    # The schedule goes on: a run started after the restart completes.
    after = c.wait_for("a run started after the restart", lambda: next(iter(newer_than(c, crash_sid)), None),
                       timeout=3 * EVERY + 30)
    after = wait_set_end(c, after["backup_set_id"], timeout=60)
    assert_complete_on_every_node(c, after["backup_set_id"])

    # ---- 4. etcd and ZooKeeper restored on all three nodes from one set
    c.ok("policy", "pause", "netns")
    c.wait_for("every set ended", lambda: all(set_state(s) != "running" for s in sets_of(c, "netns")), timeout=60)
    src_sid = after["backup_set_id"]
    e.etcd[1].delete("/registry/k0", prefix=True)
    e.etcd[2].put_many({"/registry/after": "not in the snapshot"})
    e.zk[1].cli(["deleteall /app", "create /other x"])
    for m in e.etcd:
        assert m.get_all() != keys, m.name
    for z in e.zk:
        assert z.cli(["sync /", "get /app"]) == ["Node does not exist: /app"], z.dir.name
    # One restore of both clusters: every node stops its etcd member and its
    # ZooKeeper server, each taking its safety backups while the other
    # members stop (a member without a quorum still saves its own state).
    rc, out, err = c.ctl("restore", src_sid, "--component", "etcd", "--component", "zookeeper", "--wait", timeout=400)
    assert rc == 0, f"restore of etcd and zookeeper exited {rc}\n{out}\n{err}\n{c.logs()}"
    r = c.json("restore", "show", restore_id(out))
    assert set_state(r) == "complete", json.dumps(r, indent=1)
    for comp in ("etcd", "zookeeper"):
        steps = {}
        for t in r["tasks"]:
            if t.get("component") == comp and t.get("restore_step"):
                steps.setdefault(t["restore_step"], set()).add((t.get("agent_name"), task_state(t)))
        for step in ("stop", "data", "start", "verify"):
            assert steps.get(step) == {(n, "succeeded") for n in NODES}, json.dumps(r, indent=1)
    for m in e.etcd:
        assert m.get_all() == keys, f"etcd member {m.name} does not hold the keys backed up"
    modes = []
    for z in e.zk:
        modes.append(z.wait_serving(timeout=120)["Mode"])
    assert sorted(modes) == ["follower", "follower", "leader"], modes
    for z in e.zk:
        assert zk_read(z, tree) == list(tree.values()), f"ZooKeeper {z.dir.name} does not hold the znodes backed up"
        assert z.cli(["get /other"]) == ["Node does not exist: /other"], z.dir.name

    # ---- 5. retention expires the oldest sets, prune shrinks the repository, the newest restore
    complete = [s for s in sets_of(c, "netns") if set_state(s) == "complete"]  # newest first
    assert len(complete) >= 4, complete
    newest = [s["backup_set_id"] for s in complete[:2]]
    oldest = [s["backup_set_id"] for s in complete[2:]]
    size_before = pack_bytes(c)
    restart_with(c, base_cfg, controller_config(c, "keep_last = 2\n"))
    assert c.json("policy", "show", "netns")["paused"], "the policy was resumed by the restart"
    c.ok("forget")
    c.wait_for("the oldest complete sets forgotten", lambda: all(
        int(s.get("forgotten_at", 0)) for s in sets_of(c, "netns") if s["backup_set_id"] in oldest), timeout=90)
    kept = {s["backup_set_id"]: s for s in sets_of(c, "netns") if not int(s.get("forgotten_at", 0))}
    assert set(newest) <= set(kept), kept
    assert cut_sid in kept, "the only partial set was removed"
    size_after = pack_bytes(c)
    print(f"pack data {size_before} -> {size_after} bytes; {len(oldest)} set(s) forgotten, kept {sorted(kept)}")
    assert size_after < size_before - (3 << 20), (
        f"pack data {size_before} -> {size_after} bytes: prune did not give back the expired sets' 4 MiB")
    rc, out, err = c.ctl("restore", oldest[0], "--wait")
    assert rc != 0 and "expired by policy 'netns'" in err, err
    # The newest sets restore: every node's files, from the newest and the one before it.
    for n in NODES:
        (c.agent_dirs[n]["data"] / "id.txt").write_text("damaged\n")
    rc, out, err = c.ctl("restore", newest[0], "--component", "data", "--wait", "--skip-safety-backup", timeout=300)
    assert rc == 0, f"{out}\n{err}\n{c.logs()}"
    for n in NODES:
        assert (c.agent_dirs[n]["data"] / "id.txt").read_text() == f"{n}\n", n
    (c.agent_dirs["node-2"]["data"] / "id.txt").unlink()
    rc, out, err = c.ctl("restore", newest[1], "--component", "data", "--node", "node-2", "--wait",
                         "--skip-safety-backup", timeout=300)
    assert rc == 0, f"{out}\n{err}\n{c.logs()}"
    assert (c.agent_dirs["node-2"]["data"] / "id.txt").read_text() == "node-2\n"
    rc, out, err = c.ctl("repo", "check", "--repo", c.repo, "--password-file", c.repo_pass)
    assert rc == 0, f"repository check after prune:\n{out}\n{err}"
