"""The restore fault matrix (docs/protocol.md § Cluster restore,
docs/testing.md § The restore fault matrix): three real etcd members (and a
3-server ZooKeeper ensemble), one agent each, one backup set, then restores through the controller with a
fault injected at one step on one member (the agent killed with SIGKILL and
restarted later, or the step failing), repeated restores, and restores after
an agent restart.

After every case the invariants are checked with etcd's own tools: every
member answers, one leader, one cluster id, the same revision and `hashkv`
on every member, and every key either the backup's (the restore reads
complete) or the data the cluster had before the restore (it reads failed)
on all three members.

Fault injection: each agent runs with CAIRN_FAILPOINTS_FILE (agent/failpoint.h);
a test arms a failpoint by writing "restore.<step>.<before|after> <kill|fail>"
to the file of the member's agent. It fires once.

CI runs one fault per step, on a member chosen by the step's position (the
first case on m0, the next on m1, ...), all within one cluster of servers to
keep the suite's time; CAIRN_FAULT_MATRIX=full runs every step x member x
fault (docs/testing.md gives the command and the last results).
"""
import json
import os
import re
import shutil
import signal
import time
import urllib.request

import pytest

from cluster import backup_set_id, cluster, lower_enum, restore_id  # noqa: F401  (cluster is a fixture)
from servers_etcd import need_etcd, start_cluster
from servers_kafka import KRAFT_VERSION, KafkaCluster, consume_checksums, produce_keyed, require, wait_isr
from servers_zookeeper import available, ensemble

STEPS = ["preflight", "stop", "data", "start", "verify", "commit"]
NAMES = ["m0", "m1", "m2"]
NAMES_OF_AGENTS = ["node-0", "node-1", "node-2"]


def keys(n, tag):
    return {f"/registry/k{i:05d}": f"{tag}-{i}" for i in range(n)}


class Rig:
    """Three members of one cluster, one agent each with its failpoints file,
    a controller; one backup set. Subclasses know the component."""
    component = None
    halts = False  # the driver asks for the halt before a rollback (rollback_halt)

    def __init__(self, c, tmp_path):
        self.tmp = tmp_path
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.c = c
        self.members = self.start_members()
        self.fp = []
        for i, m in enumerate(self.members):
            self.fp.append(tmp_path / f"failpoints-{i}")
            self.fp[i].write_text("")
            self.c.add_agent(f"node-{i}", components=self.component_toml(m),
                             env={"CAIRN_FAILPOINTS_FILE": os.fspath(self.fp[i])})
            self.c.enrol(f"node-{i}")
        self.generation = 0
        self.backed_up = self.write_initial()
        rc, out, err = self.c.ctl("backup", "create", "--component", self.component, "--wait")
        assert rc == 0, f"backup exited {rc}\n{out}\n{err}\n{self.c.logs()}"
        self.set_id = backup_set_id(out)

    def agent(self, member):
        return f"node-{self.members.index(member)}"

    def agreed(self):
        views = [self.view(m) for m in self.members]
        assert all(v == views[0] for v in views), "the members disagree before the restore"
        return views[0]

    def arm(self, member, point, action):
        self.fp[self.members.index(member)].write_text(f"{point} {action}\n")

    def restore(self, expect_rc=None, wait=True):
        rc, out, err = self.c.ctl("restore", self.set_id, "--component", self.component,
                                  *(["--wait"] if wait else []), timeout=400)
        if expect_rc is not None:
            assert rc == expect_rc, f"restore exited {rc}, expected {expect_rc}\n{out}\n{err}\n{self.c.logs()}"
        rid = restore_id(out) if "restore" in out else None
        return rc, out, err, rid

    def restart_dead_agents(self):
        for i in range(len(self.members)):
            p = self.c.agents[f"node-{i}"]
            if not p.alive():
                p.start()
                self.c.wait_for(f"node-{i} connected again", lambda n=f"node-{i}": self.c.connected(n), timeout=30)

    def wait_restore_ended(self, rid, timeout=240):
        def ended():
            r = self.c.json("restore", "show", rid)
            st = lower_enum(r.get("state", ""), "set_state_")
            return r if st not in ("running", "") else None
        return self.c.wait_for(f"restore {rid} to end", ended, timeout=timeout, interval=0.5)

    def stop(self):
        self.c.stop_all()
        for m in self.members:
            m.stop()


class EtcdRig(Rig):
    """Three etcd members; the data: 3,000 keys."""
    component = "etcd"

    def start_members(self):
        need_etcd()
        return start_cluster(self.tmp / "etcd", NAMES)

    def component_toml(self, m):
        return m.component_toml()

    def write_initial(self):
        backed_up = keys(3000, "backup")
        self.members[0].put_many(backed_up)
        return backed_up

    def change(self):
        """Writes data the backup does not hold; returns what the cluster holds now."""
        self.generation += 1
        m = self.members[self.generation % 3]
        m.put_many({f"/registry/k{i:05d}": f"after-{self.generation}-{i}" for i in range(0, 3000, 7)})
        m.put_many({f"/registry/after/{self.generation}": "not in the backup"})
        return self.agreed()

    def view(self, m):
        return m.get_all()

    def invariants(self, expect, why):
        """Every member healthy, in one cluster (one leader, one cluster id),
        at the same revision and hashkv, holding `expect`."""
        for m in self.members:
            m.wait_ready(timeout=60)
        deadline = time.time() + 30
        while True:
            st = [m.status() for m in self.members]
            leaders = {s["leader"] for s in st}
            revs = {s["header"]["revision"] for s in st}
            cids = {s["header"]["cluster_id"] for s in st}
            if len(leaders) == 1 and 0 not in leaders and len(revs) == 1 and len(cids) == 1:
                break
            assert time.time() < deadline, (f"{why}: the members are not one healthy cluster: leaders {leaders}, "
                                            f"revisions {revs}, cluster ids {cids}\n" + "\n".join(m.tail() for m in self.members))
            time.sleep(0.5)
        hashes = set()
        for m in self.members:
            p = m.ctl("endpoint", "hashkv", "-w", "json")
            hashes.add(json.loads(p.stdout)[0]["HashKV"]["hash"])
        assert len(hashes) == 1, f"{why}: hashkv differs between members: {hashes}"
        for m in self.members:
            assert m.get_all() == expect, f"{why}: member {m.name} does not hold the expected keys"


class ZkRig(Rig):
    """Three ZooKeeper servers (an ensemble); the data: a tree of 40 znodes."""
    component = "zookeeper"
    halts = True
    PATHS = ["/app"] + [f"/app/n{i:02d}" for i in range(40)]

    def start_members(self):
        if available() is not None:
            pytest.fail(available())
        members = ensemble(self.tmp / "zk")
        for m in members:
            m.start()
        for m in members:
            m.wait_serving(timeout=120)
        return members

    def component_toml(self, m):
        return m.component()

    def write_initial(self):
        self.members[0].cli([f"create {p} backup-{i}" for i, p in enumerate(self.PATHS)])
        return self.agreed()

    def change(self):
        self.generation += 1
        m = self.members[self.generation % 3]
        m.cli([f"set {p} after-{self.generation}-{i}" for i, p in enumerate(self.PATHS) if i % 3 == 0] +
              [f"create /after-{self.generation} x"])
        return self.agreed()

    def view(self, m):
        return m.cli(["sync /"] + [f"get {p}" for p in self.PATHS] + ["ls /"])

    def invariants(self, expect, why):
        """Every server serving, one leader, the same zxid and node count on
        each, every znode as `expect`. (A leader elected after a restart
        reports its new epoch's zxid until the first write: one write through
        the ensemble, undone, gives every server the same last zxid.)"""
        for m in self.members:
            m.wait_serving(timeout=120, modes=("leader", "follower"))
        self.members[0].cli(["create /cairn-probe x", "delete /cairn-probe"])
        # 60 s to agree from here: a deadline taken before the waits above
        # could be spent by them, leaving no time for a follower still syncing.
        deadline = time.time() + 60
        while True:
            st = [m.srvr() for m in self.members]
            modes = sorted(s.get("Mode", "") for s in st)
            zxids = {s.get("Zxid") for s in st}
            counts = {s.get("Node count") for s in st}
            if modes == ["follower", "follower", "leader"] and len(zxids) == 1 and len(counts) == 1:
                break
            assert time.time() < deadline, (f"{why}: the servers are not one healthy ensemble: modes {modes}, zxids {zxids}, "
                                            f"node counts {counts}\n" + "\n".join(m.log_tail() for m in self.members))
            time.sleep(0.5)
        for m in self.members:
            assert self.view(m) == expect, f"{why}: server {m.dir.name} does not hold the expected znodes"


class KafkaRig(Rig):
    """Three combined KRaft nodes (broker and controller on each), RF=3. The
    third node's stop command never ends (a controlled shutdown waiting for a
    quorum that is gone, issue 30 item 6): the agent kills it after 5 s
    (kill_after_seconds, kill_command), so every restore also goes through
    the escalation. The data: 300 keyed records a generation."""
    component = "kafka"
    halts = True
    TOPIC = "orders"

    def start_members(self):
        require(KRAFT_VERSION)
        self.kc = KafkaCluster.kraft(self.tmp / "kc", n=3).start()
        self.kc.create_topic(self.TOPIC, partitions=3, rf=3)
        return self.kc.brokers

    def component_toml(self, m):
        last = m is self.kc.brokers[-1]
        return m.component_toml(stop="hang" if last else "stop", kill_after=5 if last else 30)

    def write_initial(self):
        produce_keyed(self.kc.bootstrap, self.TOPIC, 3, 300, 64, seed=0)
        return self.agreed()

    def change(self):
        self.generation += 1
        produce_keyed(self.kc.bootstrap, self.TOPIC, 3, 300, 64, seed=self.generation)
        return self.agreed()

    def view(self, m):
        """The topic as read through this broker (all of it, every partition),
        once every replica is in the ISR: what each member holds up to the
        high watermark."""
        wait_isr(m.bootstrap, self.TOPIC, timeout=180)
        return consume_checksums(m.bootstrap, self.TOPIC)

    def invariants(self, expect, why):
        """Every node running and answering as itself, one cluster id in every
        log dir, every replica of every partition in the ISR, and the topic
        as `expect`."""
        deadline = time.time() + 180
        for m in self.members:
            while not (m.running() and m.ready()):
                assert time.time() < deadline, f"{why}: node {m.node_id} is not serving\n{m.log_tail()}"
                time.sleep(0.5)
        ids = {(m.log_dir / "meta.properties").read_text().split("cluster.id=")[1].split()[0] for m in self.members}
        assert ids == {self.kc.cluster_id}, f"{why}: the log dirs name clusters {ids}"
        for m in self.members:
            assert self.view(m) == expect, f"{why}: the topic read through node {m.node_id} is not the expected one"

    def stop(self):
        self.c.stop_all()
        self.kc.stop(kill=True)  # the data dies with the test: no controlled shutdowns to wait for


@pytest.fixture
def rig(cluster, tmp_path):
    r = EtcdRig(cluster, tmp_path / "etcd-rig")
    try:
        yield r
    finally:
        r.stop()


def state_of(rig, rid):
    return lower_enum(rig.c.json("restore", "show", rid).get("state", ""), "set_state_")


def stopped(pid):
    """The process is stopped (SIGSTOP: its state in /proc is T)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "T"


def fault_case(rig, step, member, action):
    """One restore with `action` at `step` on `member`; checks the invariants.
    Returns the restore's final state."""
    before = rig.change()
    point = f"restore.{step}.after" if action == "kill" and step in ("stop", "data", "commit") else f"restore.{step}.before"
    if action == "fail":
        point = f"restore.{step}.after" if step in ("data", "start", "verify") else f"restore.{step}.before"
    if action == "cancel":
        # The operator cancels the restore while the member's step has done
        # its work and its result is not sent yet (its agent frozen there);
        # the agent then goes on and sends a result the controller ignores.
        point = f"restore.{step}.after"
        rig.arm(member, point, "freeze")
    elif action == "controller":
        # The controller is killed (SIGKILL) while a member's step has done
        # its work and its result is not sent yet (the member's agent frozen
        # there), and started again; the agent then goes on and sends the
        # result to the new controller process.
        point = f"restore.{step}.after"
        rig.arm(member, point, "freeze")
    elif action != "cancel":
        rig.arm(member, point, action)
    # Not --wait: a killed agent's rollback waits for the agent this test restarts.
    rc, out, err, rid = rig.restore(wait=False)
    why = f"{rig.component}: {action} at {point} on {rig.agent(member)}"
    if rid is None:
        pytest.fail(f"{why}: no restore id in the output\n{out}\n{err}")
    if action == "freeze":
        # The agent goes silent mid-step (SIGSTOP: a cut link, a hung host):
        # the controller loses it and rolls every member back; it comes back
        # (SIGCONT), finishes the step it was in and then runs its rollback.
        name = rig.agent(member)
        rig.c.agents[name].expect_dead = True
        rig.c.wait_for(f"{name} lost by the controller while frozen",
                       lambda: not (rig.c.find_agent(name=name) or {}).get("connected"), timeout=120)
        os.kill(rig.c.agents[name].pid, signal.SIGCONT)
        rig.c.agents[name].expect_dead = False
    if action == "controller":
        # Another member's agent is slow to come back to the new controller
        # process (stopped a second longer): the frozen member's result
        # arrives first, and the next step must not be made without it.
        name = rig.agent(member)
        proc = rig.c.agents[name]
        slow = rig.c.agents[rig.agent(rig.members[(rig.members.index(member) + 1) % len(rig.members)])]
        rig.c.wait_for(f"{name} frozen at {point}", lambda: stopped(proc.pid), timeout=120, interval=0.05)
        os.kill(slow.pid, signal.SIGSTOP)
        rig.c.controller.kill()
        rig.c.start_controller()
        os.kill(proc.pid, signal.SIGCONT)
        time.sleep(1)
        os.kill(slow.pid, signal.SIGCONT)
    if action == "cancel":
        name = rig.agent(member)
        proc = rig.c.agents[name]
        rig.c.wait_for(f"{name} frozen at {point}", lambda: stopped(proc.pid), timeout=120, interval=0.05)
        crc, cout, cerr = rig.c.ctl("backup", "cancel", rid)
        os.kill(proc.pid, signal.SIGCONT)
        assert crc == 0, f"{why}: the cancel was refused: {cout}{cerr}"
    if action == "kill":
        # The agent is gone: its step fails when the controller loses it; its
        # rollback (or commit) waits for it. It comes back, as systemd would
        # restart it, and finishes what it owes.
        rig.c.wait_for(f"{rig.agent(member)} to die at {point}", lambda: not rig.c.agents[rig.agent(member)].alive(),
                       timeout=120)
        rig.c.agents[rig.agent(member)].expect_dead = True
        rig.c.wait_for(f"{rig.agent(member)} lost by the controller",
                       lambda: not (rig.c.find_agent(name=rig.agent(member)) or {}).get("connected"), timeout=30)
        rig.restart_dead_agents()
        rig.c.agents[rig.agent(member)].expect_dead = False
    r = rig.wait_restore_ended(rid)
    if action == "freeze":
        # The next case's restore needs every member connected: a restore
        # failed at preflight ends before the thawed agent registers again.
        rig.c.wait_for(f"{rig.agent(member)} connected again", lambda: rig.c.connected(rig.agent(member)), timeout=60)
    state = lower_enum(r.get("state", ""), "set_state_")
    if action == "cancel":
        # What the operator reads says why it ended.
        assert "cancelled by operator" in json.dumps(r), f"{why}: the restore does not say it was cancelled\n{json.dumps(r)[:3000]}"
    if action == "controller":
        # Nothing failed: the restore goes on where the killed controller
        # left it (its barriers are in the catalog) and completes.
        assert state == "complete", f"{why}: restore ended {state}\n{json.dumps(r)[:3000]}"
        rig.invariants(rig.backed_up, why)
        assert not [t for t in r.get("tasks", []) if t.get("restore_step") in ("rollback", "halt")], \
            f"{why}: a rollback or halt was made\n{json.dumps(r)[:3000]}"
    elif step == "commit":
        # Every member was verified on the backup's data before the commit.
        assert state == "complete", f"{why}: restore ended {state}\n{json.dumps(r)[:3000]}"
        rig.invariants(rig.backed_up, why)
    else:
        assert state == "failed", f"{why}: restore ended {state}\n{json.dumps(r)[:3000]}"
        rig.invariants(before, why)
        if rig.halts and step in ("start", "verify"):
            # Every member was stopped (halt) before any rolled back.
            halted = {t.get("agent_name") for t in r.get("tasks", []) if t.get("restore_step") == "halt"}
            assert halted == set(NAMES_OF_AGENTS), f"{why}: halted {halted}\n{json.dumps(r)[:3000]}"
        if step == "preflight":
            steps = {t.get("restore_step") for t in r.get("tasks", [])}
            assert "stop" not in steps, f"{why}: a member was stopped although a preflight failed: {steps}"
    return state


# CI's row of the matrix: each step once, on the member its position names
# (step i on m<i mod 3>), killed at even positions and failing at odd ones.
CI_ROW = [(step, i % 3, "kill" if i % 2 == 0 else "fail") for i, step in enumerate(STEPS)]


@pytest.mark.liveness(10)
def test_restores_repeat_and_one_is_refused_while_an_agent_is_offline(rig):
    """A complete restore; with one agent offline the next is refused up front,
    naming it, and nothing is stopped; with the agent back (restarted, so it
    declares etcd's new cluster id) the same set restores again, complete."""
    rig.change()
    # The working directory a restore killed mid-extraction left beside m2's
    # data dir (it can hold a whole snapshot): the next data step removes it.
    dd = rig.members[2].data_dir
    leftover = dd.parent / f"{dd.name}.cairn-restore-0dead0ff"
    (leftover / "extracted").mkdir(parents=True)
    (leftover / "extracted" / "etcd.db").write_bytes(b"\0" * 65536)
    rc, out, err, rid = rig.restore(expect_rc=0)
    rig.invariants(rig.backed_up, "first restore")
    assert not leftover.exists(), "the leftover working directory is still there"
    # Removed, and said: by the agent's set-aside rule after the preflight
    # (docs/set-aside.md), or by the data step when the rule had not run yet.
    removed = [json.loads(t.get("component_metadata") or "{}").get("removed_leftovers")
               for t in rig.c.json("restore", "show", rid)["tasks"] if t.get("restore_step") == "data"]
    said = f"removed '{os.fspath(leftover)}'" in rig.c.agents["node-2"].log.read_text(errors="replace")
    assert [os.fspath(leftover)] in removed or said, removed
    assert not [p for p in dd.parent.iterdir() if ".cairn-restore-" in p.name], list(dd.parent.iterdir())
    before = rig.change()
    victim = rig.members[1]
    rig.c.agents[rig.agent(victim)].expect_dead = True
    rig.c.agents[rig.agent(victim)].kill()
    rig.c.wait_for("node-1 disconnected", lambda: not (rig.c.find_agent(name="node-1") or {}).get("connected"), timeout=30)
    rc, out, err, _ = rig.restore()
    assert rc != 0 and "node-1" in (out + err) and "not connected" in (out + err), f"{rc}\n{out}\n{err}"
    rig.invariants(before, "restore refused with an agent offline")
    rig.restart_dead_agents()
    rig.c.agents[rig.agent(victim)].expect_dead = False
    rig.restore(expect_rc=0)
    rig.invariants(rig.backed_up, "restore after an agent restart")


# And one case of the operator cancelling the restore mid-step: at start,
# with m2's start done and not reported (its agent frozen there).
CI_CASES = [r for r in CI_ROW if r[0] != "commit"] + [("start", 2, "cancel")]


@pytest.mark.liveness(10)
@pytest.mark.parametrize("step,member,action", CI_CASES, ids=[f"{s}-m{m}-{a}" for s, m, a in CI_CASES])
def test_fault_at_step(rig, step, member, action):
    fault_case(rig, step, rig.members[member], action)
    if step == "preflight":
        # Failed before any data step: a failed restore on the member whose
        # preflight failed, as the catalog shows it, so CairnRestoreFailed
        # fires; the others did what they were asked and count nothing (at 0).
        faulted = rig.agent(rig.members[member])

        def failures():
            text = urllib.request.urlopen(rig.c.http_url() + "metrics", timeout=10).read().decode()
            got = {n: f'cairn_restore_failure_total{{component="etcd",agent="{n}"}} {1 if n == faulted else 0}\n' in text
                   and f'cairn_restore_success_total{{component="etcd",agent="{n}"}} 0\n' in text for n in NAMES_OF_AGENTS}
            return got if all(got.values()) else None
        rig.c.wait_for(f"a failed restore counted on {faulted} alone", failures, timeout=20)
        # The status page's reasons name the node the preflight failed on.
        page = urllib.request.urlopen(rig.c.http_url(), timeout=10).read().decode()
        assert "etcd on node-0: " in page, page[-3000:]


@pytest.mark.liveness(10)
def test_commit_fault_then_a_failed_restore_leaves_that_record_alone(rig):
    """A commit that fails on a member: the restore is complete (every member
    was verified) and that member keeps its record. The next restore fails on
    another member at stop: that member's rollback must not act on the
    earlier restore's record (it would move the live data dir away and put
    back a data dir of another cluster id), and every member ends on the data
    it ran before."""
    step, member, action = CI_ROW[-1]
    assert step == "commit"
    stale = rig.members[member]
    fault_case(rig, step, stale, action)
    records = [p for p in stale.data_dir.parent.iterdir() if p.name.endswith(".cairn-restore.json")]
    assert records, "the member whose commit failed kept no record of its restore"
    before = rig.change()
    rig.arm(rig.members[(member + 1) % 3], "restore.stop.after", "fail")
    rc, out, err, rid = rig.restore(wait=False)
    r = rig.wait_restore_ended(rid)
    assert lower_enum(r.get("state", ""), "set_state_") == "failed", json.dumps(r)[:3000]
    rig.invariants(before, "rollback beside another restore's record")
    rig.change()
    rig.restore(expect_rc=0)
    rig.invariants(rig.backed_up, "a restore after all of that")


@pytest.mark.liveness(10)
def test_an_agent_frozen_mid_data_step_is_lost_and_every_member_rolls_back(rig):
    """The agent disconnected, not dead: m1's agent stops answering as its data
    step starts; the controller loses it and rolls the others back; it comes
    back, finishes the data step it was in, and its rollback puts its data
    dir back."""
    fault_case(rig, "data", rig.members[1], "freeze")


@pytest.mark.liveness(10)
def test_an_agent_killed_during_its_rollback_rolls_back_when_it_returns(rig):
    """m0's data step fails; m1's agent is killed as its rollback starts (its
    etcd stopped, the restored data dir in place). The controller makes m1's
    rollback again; restarted, the agent runs it and every member is back on
    the data it had."""
    before = rig.change()
    rig.arm(rig.members[0], "restore.data.after", "fail")
    rig.arm(rig.members[1], "restore.rollback.before", "kill")
    rc, out, err, rid = rig.restore(wait=False)
    name = rig.agent(rig.members[1])
    rig.c.wait_for(f"{name} killed at its rollback", lambda: not rig.c.agents[name].alive(), timeout=120)
    rig.c.agents[name].expect_dead = True
    rig.c.wait_for(f"{name} lost", lambda: not (rig.c.find_agent(name=name) or {}).get("connected"), timeout=30)
    rig.restart_dead_agents()
    rig.c.agents[name].expect_dead = False
    r = rig.wait_restore_ended(rid)
    assert lower_enum(r.get("state", ""), "set_state_") == "failed", json.dumps(r)[:3000]
    tries = [t for t in r["tasks"] if t.get("restore_step") == "rollback" and t.get("agent_name") == name]
    assert len(tries) == 2, json.dumps(tries)[:2000]
    rig.invariants(before, "a rollback run again after its agent was killed")


@pytest.mark.liveness(10)
def test_a_rollback_cancelled_while_its_agent_was_away_runs_when_it_returns(rig):
    """m2's agent is killed once its data step put the backup's data in place
    (its etcd stopped). The others roll back; the operator cancels m2's
    pending rollback, and the restore ends failed with m2 still stopped. When
    m2's agent comes back after all, the controller sends the rollback the
    restore owed it: m2 is back on its own data, in the cluster with the
    others (docs/protocol.md § A rollback owed to a member that was away)."""
    before = rig.change()
    victim = rig.members[2]
    name = rig.agent(victim)
    rig.arm(victim, "restore.data.after", "kill")
    rc, out, err, rid = rig.restore(wait=False)
    rig.c.wait_for(f"{name} killed after its data step", lambda: not rig.c.agents[name].alive(), timeout=120)
    rig.c.agents[name].expect_dead = True

    def others_rolled_back():
        r = rig.c.json("restore", "show", rid)
        done = {t.get("agent_name") for t in r.get("tasks", [])
                if t.get("restore_step") == "rollback" and lower_enum(t.get("state", ""), "task_state_") == "succeeded"}
        return r if done >= {"node-0", "node-1"} else None
    r = rig.c.wait_for("node-0 and node-1 rolled back", others_rolled_back, timeout=120, interval=0.5)
    assert state_of(rig, rid) == "running", json.dumps(r)[:3000]
    rc, out, err = rig.c.ctl("backup", "cancel", rid)
    assert rc == 0, f"{rc}\n{out}\n{err}"
    assert state_of(rig, rid) == "failed"
    rc, out, err = rig.c.ctl("restore", "show", rid)
    assert re.search(r"node-2: rollback owed: cancelled while its agent was away", out), out
    for m in rig.members[:2]:
        assert m.get_all() == before, f"{m.name} is not on its own data after its rollback"

    rig.restart_dead_agents()
    rig.c.agents[name].expect_dead = False

    def late_rollback_ended():
        tries = [t for t in rig.c.json("restore", "show", rid)["tasks"]
                 if t.get("restore_step") == "rollback" and t.get("agent_name") == name]
        states = [lower_enum(t.get("state", ""), "task_state_") for t in tries]
        return states if len(tries) >= 2 and states[-1] not in ("pending", "sent", "accepted", "running") else None
    states = rig.c.wait_for(f"the rollback owed to {name}", late_rollback_ended, timeout=120, interval=0.5)
    assert states[-1] == "succeeded", f"{states}\n{rig.c.logs()}"
    rig.invariants(before, "a rollback owed to a member whose agent came back after the restore was cancelled")
    assert state_of(rig, rid) == "failed"
    rc, out, err = rig.c.ctl("restore", "show", rid)
    assert "node-2: runs on its own data again (rolled back when its agent came back" in out, out
    # The cluster is free again: a backup of it runs.
    rc, out, err = rig.c.ctl("backup", "create", "--component", "etcd", "--wait")
    assert rc == 0, f"{rc}\n{out}\n{err}"


@pytest.mark.liveness(10)
def test_zookeeper_one_fault_per_step(cluster, tmp_path):
    """CI's row for ZooKeeper: the same six cases on one ensemble, one after
    another (each checks the invariants, so a case that left the ensemble
    wrong fails there): zxid, node count and every znode on every server, one
    leader."""
    rig = ZkRig(cluster, tmp_path / "zk-rig")
    try:
        for step, member, action in CI_ROW:
            fault_case(rig, step, rig.members[member], action)
        # And a plain restore after all of them completes.
        rig.change()
        rig.restore(expect_rc=0)
        rig.invariants(rig.backed_up, "zookeeper: a restore after the faults")
    finally:
        rig.stop()


@pytest.mark.liveness(25)  # three JVMs starting at once starve the daemons for a second or more
def test_kafka_one_fault_per_step(cluster, tmp_path):
    """CI's row for three KRaft nodes: the six cases on one cluster, one after
    another (the verify case freezes the agent), then a plain restore. A
    failure at start or verify halts every node before any rolls back; the
    halts are checked in the restore's tasks. Every stop of the third node hangs and is
    escalated to SIGKILL after 5 s; the restore reports it in that stop's
    metadata and ends complete (waiting out the stop's 120 s timeout would
    fail the stop and roll every node back)."""
    rig = KafkaRig(cluster, tmp_path / "kafka-rig")
    try:
        # At verify the agent is frozen, not killed: it comes back only after
        # the controller lost it and finishes its verify first, so its broker
        # runs the restored logs while the others would roll back (the halt
        # step exists for this: docs/protocol.md § Halt before a rollback).
        for step, member, action in CI_ROW:
            fault_case(rig, step, rig.members[member], "freeze" if step == "verify" else action)
        rig.change()
        rc, out, err, rid = rig.restore(expect_rc=0)
        rig.invariants(rig.backed_up, "kafka: a restore after the faults")
        r = rig.c.json("restore", "show", rid)
        stops = {t["agent_name"]: t for t in r["tasks"] if t.get("restore_step") == "stop"}
        last = rig.agent(rig.members[-1])
        esc = json.loads(stops[last].get("component_metadata") or "{}").get("escalated", "")
        assert "had not finished after 5 s" in esc and "kill" in esc, json.dumps(stops[last])[:2000]
        for name, t in stops.items():
            if name != last:
                assert "escalated" not in (t.get("component_metadata") or ""), json.dumps(t)[:2000]
    finally:
        rig.stop()


@pytest.mark.liveness(25)
def test_the_controller_killed_mid_restore_and_started_again(rig):
    """The controller killed with SIGKILL at four steps of four restores
    (preflight on m2, data on m0, start on m1, verify on m2; each while that
    member's result is on its way, and the next member's agent a second
    slower than the others to come back) and started again: every restore
    goes on from the catalog and completes, no rollback, every member on the
    backup's data."""
    for step, i in [("preflight", 2), ("data", 0), ("start", 1), ("verify", 2)]:
        fault_case(rig, step, rig.members[i], "controller")


if os.environ.get("CAIRN_FAULT_MATRIX") == "full":
    # Collected only when asked for (not registered with ctest): every step x
    # member x fault (docs/testing.md gives the time it takes).
    @pytest.mark.liveness(10)
    @pytest.mark.parametrize("action", ["kill", "fail", "freeze",
                                        pytest.param("controller", marks=pytest.mark.liveness(25)), "cancel"])
    @pytest.mark.parametrize("step", STEPS)
    @pytest.mark.parametrize("kind", ["etcd", "zookeeper", "kafka"])
    def test_full_matrix(cluster, tmp_path, kind, step, action):
        rig = {"etcd": EtcdRig, "zookeeper": ZkRig, "kafka": KafkaRig}[kind](cluster, tmp_path / "rig")
        try:
            for member in rig.members:
                fault_case(rig, step, member, action)
        finally:
            rig.stop()


@pytest.mark.liveness(10)
def test_an_agent_declaring_the_cluster_later_is_not_a_member_until_approved(rig):
    """An approved agent (first by name) reconfigured to declare the etcd
    cluster (its component reads m0's own cluster id) is a pending member: the
    cluster's backup does not run on it and a restore sends it no step, until
    an operator approves it (issue 30, item 7)."""
    c = rig.c
    c.add_agent("a-intruder")  # files only, approved with that configuration
    c.enrol("a-intruder")
    cfg = c.agent_dirs["a-intruder"]["config"]
    other = rig.tmp / "intruder-etcd-data"
    other.mkdir()
    toml = rig.members[0].component_toml().replace(f'data_dir = "{rig.members[0].data_dir}"', f'data_dir = "{other}"')
    cfg.write_text(cfg.read_text() + toml)
    c.agents["a-intruder"].stop()
    c.agents["a-intruder"].start()

    def pending_member():
        a = c.find_agent(name="a-intruder")
        comps = [x for x in (a or {}).get("components", []) if x.get("name") == "etcd"]
        return comps[0] if comps and a.get("connected") else None
    comp = c.wait_for("a-intruder registered with its etcd component", pending_member, timeout=30)
    assert comp.get("membership") == "pending", comp
    # `agent list --json` says what the catalog has, for node-scoped components too (issue 32).
    for a in c.agents_of():
        for x in a.get("components", []):
            assert x.get("scope") == ("cluster" if x["name"] == "etcd" else "node"), (a["name"], x)
            assert bool(x.get("cluster_id")) == (x["name"] == "etcd"), (a["name"], x)
    rc, out, err = c.ctl("backup", "create", "--component", "etcd", "--wait")
    assert rc == 0, f"{out}\n{err}"
    shown = c.json("backup", "show", backup_set_id(out))
    assert [t.get("agent_name") for t in shown["tasks"]] != ["a-intruder"], shown
    rig.change()
    rc, out, err, rid = rig.restore(expect_rc=0)
    r = c.json("restore", "show", rid)
    assert "a-intruder" not in {t.get("agent_name") for t in r["tasks"]}, r
    rig.invariants(rig.backed_up, "restore beside a pending member")
    # Approved by an operator, it is a member (and would be restored with the others).
    c.ok("agent", "approve", "a-intruder")
    assert c.wait_for("the membership approved",
                      lambda: (pending_member() or {}).get("membership") == "approved", timeout=30)


def approve_again(c, writer):
    """The agents of a controller that lost its catalog, approved again, the set's writer last."""
    for name in [n for n in (f"node-{i}" for i in range(3)) if n != writer] + [writer]:
        key = c.agent_dirs[name]["key"]
        pend = c.wait_for(f"{name} pending", lambda k=key: c._pending(k), timeout=30)
        c.ok("agent", "approve", pend["agent_id"])
        c.wait_for(f"{name} connected", lambda n=name: c.connected(n), timeout=30)


@pytest.mark.liveness(10)
def test_a_rebuilt_catalog_restores_the_cluster(rig):
    """After a complete restore (etcd has a new internal cluster id) the
    controller's disk is lost; the catalog rebuilt from the repository names
    the set's cluster (tag cluster:<id>); the agents approved again, the set's
    writer last, are one cluster again and the set restores on all three
    (issue 30, items 2 and 3)."""
    c = rig.c
    c.declare_repository()  # the controller writes the set's signed record there
    for i in range(3):
        c.wait_for(f"node-{i} connected again", lambda n=f"node-{i}": c.connected(n), timeout=30)
    rig.change()
    rig.restore(expect_rc=0)
    writer = c.json("backup", "show", rig.set_id)["tasks"][0]["agent_name"]
    # Every agent restarted: they declare etcd's new cluster id.
    for i in range(3):
        c.agents[f"node-{i}"].stop()
        c.agents[f"node-{i}"].start()
    c.wait_signed(rig.set_id)
    c.controller.stop()
    catalog_dir = c.base / "controller"
    shutil.rmtree(catalog_dir)
    out = c.ok("catalog", "rebuild", "--data-dir", catalog_dir, "--repo", c.repo, "--password-file", c.repo_pass,
               "--repository-name", "main", "--trusted-key", c.signing_pub())
    assert "1 agent(s)" in out, out  # only the writer is known from the repository
    assert "1 set(s) attested by a signed set record, 0 unattested" in out, out
    c.start_controller()
    approve_again(c, writer)
    clusters = set()
    for a in c.agents_of():
        for comp in a.get("components", []):
            if comp.get("name") == "etcd":
                clusters.add(comp.get("cluster_id"))
                assert comp.get("membership") == "approved", a
    assert len(clusters) == 1, f"the members are not one cluster after the rebuild: {clusters}"
    rig.change()
    rc, out, err, rid = rig.restore(expect_rc=0)
    assert len([t for t in c.json("restore", "show", rid)["tasks"] if t.get("restore_step") == "data"]) == 3
    rig.invariants(rig.backed_up, "restore of a rebuilt set")


@pytest.mark.liveness(10)
def test_an_imported_set_restores_the_cluster(rig, tmp_path):
    """After a complete restore (etcd has a new internal cluster id) the set is
    exported; the controller's disk and the repository are lost. A new
    controller imports the export (the cluster is named by the snapshots'
    tags, as a rebuild reads them); the agents, restarted and approved again,
    are one cluster and the set restores on all three (issue 30: a restore
    after an import)."""
    c = rig.c
    rig.change()
    rig.restore(expect_rc=0)
    c.declare_repository()
    exports = tmp_path / "exports"
    exports.mkdir()
    out = c.ok("export", rig.set_id, "-o", exports, "--config", c.controller_cfg)
    m = re.search(r"to (\S+\.tar\.gz)", out)
    assert m, out
    writer = c.json("backup", "show", rig.set_id)["tasks"][0]["agent_name"]
    c.controller.stop()
    shutil.rmtree(c.base / "controller")
    shutil.rmtree(c.repo)
    c.ok("repo", "init", "--repo", c.repo, "--password-file", c.repo_pass)
    for i in range(3):
        c.agents[f"node-{i}"].stop()
        c.agents[f"node-{i}"].start()
    c.start_controller()
    out = c.ok("import", m.group(1), "--config", c.controller_cfg)
    assert f"imported backup set {rig.set_id} (complete, 1 snapshot(s)" in out, out
    approve_again(c, writer)
    clusters = {comp.get("cluster_id") for a in c.agents_of() for comp in a.get("components", [])
                if comp.get("name") == "etcd" and comp.get("membership") == "approved"}
    assert len(clusters) == 1, f"the members are not one approved cluster after the import: {c.agents_of()}"
    rig.change()
    rc, out, err, rid = rig.restore(expect_rc=0)
    assert len([t for t in c.json("restore", "show", rid)["tasks"] if t.get("restore_step") == "data"]) == 3
    rig.invariants(rig.backed_up, "restore of an imported set")
