"""Disaster recovery (docs/operations.md § Disaster recovery): the lab of
three nodes, each with an etcd member, a ZooKeeper server and a files
component, one agent each, is backed up; then everything but the
repository is lost, and the documented procedure, followed in code, brings
it back from the repository alone: etcd, ZooKeeper and every node's files
exact. Also: one replaced host, and a restore refused before anything stops
when a member the backup names has no agent (a live cluster, an empty site).

What is "provisioning" here (the host's own configuration, which a
configuration-management tool lays down, not an operator's step): the
agent's configuration file, the servers' configuration and unit scripts,
ZooKeeper's myid, empty data directories. What the operator does is counted
in `steps` and timed (docs/benchmarks.md § Disaster recovery).
"""
import os
import shutil
import time

import pytest

from cluster import backup_set_id, cluster, lower_enum, restore_id  # noqa: F401  (cluster is a fixture)
from servers_etcd import need_etcd, start_cluster
from servers_zookeeper import available, ensemble

# The suite's sizes; docs/benchmarks.md § Disaster recovery runs the lost
# site with CAIRN_DR_ETCD_KEYS=20000 CAIRN_DR_ZNODES=1000.
ETCD_KEYS = int(os.environ.get("CAIRN_DR_ETCD_KEYS", "2000"))
ZNODES = ["/app"] + [f"/app/n{i:04d}" for i in range(int(os.environ.get("CAIRN_DR_ZNODES", "60")))]


def etcd_data(tag="backup"):
    return {f"/registry/k{i:05d}": f"{tag}-{i}" for i in range(ETCD_KEYS)}


def files_of(i):
    return {"conf/kubeadm.yaml": f"node-{i} kubeadm\n".encode() * 50,
            "pki/ca.crt": os.urandom(2048), f"node-{i}/only-here": os.urandom(300_000)}


class Lab:
    """Three nodes: etcd member m<i>, ZooKeeper server zk<i+1>, files under
    base/node-<i>/data, an agent node-<i> serving all three."""

    def __init__(self, c, tmp):
        need_etcd()
        if available() is not None:
            pytest.fail(available())
        self.c, self.tmp = c, tmp
        c.declare_repository()  # the controller writes each set's signed record to the repository
        self.etcd = start_cluster(tmp / "etcd", ["m0", "m1", "m2"])
        self.zk = ensemble(tmp / "zk")
        for z in self.zk:
            z.start()
        for z in self.zk:
            z.wait_serving(timeout=120)
        self.files = [files_of(i) for i in range(3)]
        for i in range(3):
            c.add_agent(f"node-{i}", files=self.files[i], components=self.etcd[i].component_toml() + self.zk[i].component())
            c.enrol(f"node-{i}")
        self.etcd[0].put_many(etcd_data())
        self.zk[0].cli([f"create {p} backup-{i}" for i, p in enumerate(ZNODES)])
        self.zk_view = self.zk_read(self.zk[0])
        rc, out, err = c.ctl("backup", "create", "--wait", timeout=300)
        assert rc == 0, f"backup exited {rc}\n{out}\n{err}\n{c.logs()}"
        self.set_id = backup_set_id(out)
        c.wait_signed(self.set_id)

    def zk_read(self, z):
        return z.cli(["sync /"] + [f"get {p}" for p in ZNODES])

    # ---- what a user checks -------------------------------------------------
    def check_exact(self, why):
        for m in self.etcd:
            m.wait_ready(timeout=90)
        deadline = time.time() + 60
        while True:
            st = [m.status() for m in self.etcd]
            leaders = {s["leader"] for s in st}
            cids = {s["header"]["cluster_id"] for s in st}
            revs = {s["header"]["revision"] for s in st}
            if len(leaders) == 1 and 0 not in leaders and len(cids) == 1 and len(revs) == 1:
                break
            assert time.time() < deadline, f"{why}: etcd is not one cluster: {leaders} {cids} {revs}"
            time.sleep(0.5)
        for m in self.etcd:
            assert m.get_all() == etcd_data(), f"{why}: etcd member {m.name} does not hold the backup's keys"
        for z in self.zk:
            z.wait_serving(timeout=120, modes=("leader", "follower"))
        for z in self.zk:
            assert self.zk_read(z) == self.zk_view, f"{why}: ZooKeeper {z.dir.name} does not hold the backup's znodes"
        for i in range(3):
            data = self.c.agent_dirs[f"node-{i}"]["data"]
            for rel, content in self.files[i].items():
                assert (data / rel).read_bytes() == content, f"{why}: node-{i}'s {rel} did not come back"

    # ---- disasters ----------------------------------------------------------
    def lose_host(self, i):
        """Node i's disk: its agent's state (its key), its etcd and ZooKeeper
        data, its files. Its servers are killed; its configuration (laid down
        by configuration management) comes back as it was, with ZooKeeper's
        myid, and empty data directories."""
        name = f"node-{i}"
        self.c.agents[name].kill()
        self.c.agents[name].expect_dead = True
        for pid, pidfile in ((self.etcd[i].pid(), self.etcd[i].pidfile), (self.zk[i].pid(), self.zk[i].dir / "server.pid")):
            if pid:
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
                deadline = time.time() + 30
                while os.path.exists(f"/proc/{pid}") and time.time() < deadline:
                    try:
                        if open(f"/proc/{pid}/stat").read().split(") ")[1].startswith("Z"):
                            break
                    except OSError:
                        break
                    time.sleep(0.1)
            pidfile.unlink(missing_ok=True)
        shutil.rmtree(self.etcd[i].data_dir, ignore_errors=True)
        for p in self.etcd[i].data_dir.parent.glob(".data.cairn-*"):
            p.unlink() if p.is_file() else shutil.rmtree(p)
        shutil.rmtree(self.zk[i].data, ignore_errors=True)
        self.zk[i].data.mkdir()
        (self.zk[i].data / "myid").write_text(f"{self.zk[i].myid}\n")  # the host's configuration
        d = self.c.agent_dirs[name]
        shutil.rmtree(d["dir"] / "state", ignore_errors=True)
        shutil.rmtree(d["data"], ignore_errors=True)
        d["data"].mkdir()

    def lose_site(self):
        """Everything but the repository (and the controller's key directory,
        kept off-site with the repository's password as docs/operations.md
        says)."""
        self.c.controller.stop()
        for i in range(3):
            self.lose_host(i)
        shutil.rmtree(self.c.base / "controller")

    def etcd_pids(self):
        return [m.pid() for m in self.etcd]

    def zk_pids(self):
        return [z.pid() for z in self.zk]

    def stop(self):
        self.c.stop_all()
        for m in self.etcd:
            m.stop()
        for z in self.zk:
            try:
                z.stop()
            except Exception:
                pass


@pytest.fixture
def lab(cluster, tmp_path):
    lab = Lab(cluster, tmp_path / "lab")
    yield lab
    lab.stop()


def pending_count(c):
    return sum(1 for a in c.agents_of() if lower_enum(a.get("state", ""), "agent_state_") == "pending"
               and int(a.get("last_seen", 0) or 0) > 0)


@pytest.mark.liveness(10)
def test_a_lost_site_comes_back_from_the_repository_alone(lab):
    """The whole site lost but the repository: the procedure of
    docs/operations.md § Disaster recovery, step by step, ends with etcd
    (one cluster, every key), ZooKeeper (every znode) and each node's files
    exact, in five operator commands."""
    c = lab.c
    lab.lose_site()
    steps = []
    t0 = time.monotonic()
    # 1. The catalog from the repository (the signed set records, verified
    #    with the controller's key kept off-site).
    steps.append("cairnctl catalog rebuild --config controller.toml")
    out = c.ok("catalog", "rebuild", "--config", c.controller_cfg)
    assert "attested by a signed set record, 0 unattested" in out, out
    # 2. The controller.
    steps.append("systemctl start cairn-controller")
    c.start_controller()
    # 3. The agents, on hosts configuration management laid down again.
    steps.append("systemctl start cairn-agent (on each node)")
    for i in range(3):
        c.agents[f"node-{i}"].expect_dead = False
        c.agents[f"node-{i}"].start()
    c.wait_for("three new agents knocking", lambda: pending_count(c) >= 3, timeout=60)
    # 4. Approve them: the rebuilt identities whose keys were lost are left
    #    pending and their names pass to the new agents.
    steps.append("cairnctl agent approve --all-pending --yes")
    rc, out, err = c.ctl("agent", "approve", "--all-pending", "--yes")
    assert rc == 0, f"{out}\n{err}\n{c.logs()}"
    assert "approved 3 agent(s)" in out, out
    assert "left pending" in err and "has never connected since" in err, err
    for i in range(3):
        c.wait_for(f"node-{i} connected", lambda n=f"node-{i}": c.connected(n), timeout=60)
    # Each new agent took its cluster identity from the set: etcd on an empty
    # host cannot name its cluster, the backup named its agent.
    def members_bound():
        comps = [comp for a in c.agents_of() if a.get("name", "").startswith("node-") and "revoked" not in a.get("name", "")
                 for comp in a.get("components", []) if comp.get("name") in ("etcd", "zookeeper")]
        return len(comps) == 6 and all(x.get("membership") == "approved" for x in comps)
    c.wait_for("every etcd and ZooKeeper member bound to its cluster", members_bound, timeout=30)
    # 5. The restore of everything the set holds.
    steps.append(f"cairnctl restore {lab.set_id} --wait")
    rc, out, err = c.ctl("restore", lab.set_id, "--wait", timeout=600)
    assert rc == 0, f"restore exited {rc}\n{out}\n{err}\n{c.logs()}"
    lab.check_exact("after the site's recovery")
    wall = time.monotonic() - t0
    shown = c.json("restore", "show", restore_id(out))
    assert lower_enum(shown.get("state", ""), "set_state_") == "complete", shown
    print(f"\nsite recovery: {len(steps)} operator commands, {wall:.1f} s from nothing to healthy: " + "; ".join(steps))
    assert len(steps) < 6


@pytest.mark.liveness(10)
def test_a_replaced_host_takes_its_name_and_restores(lab):
    """One host's disk and agent state lost; a new agent on it (a new key)
    is approved, its name is released by revoking the lost identity, and the
    cluster restore runs on every member again, the new one included."""
    c = lab.c
    old = c.find_agent(name="node-1")
    lab.lose_host(1)
    c.agents["node-1"].expect_dead = False
    c.agents["node-1"].start()
    newcomer = c.wait_for("the new key knocking", lambda: next(
        (a for a in c.agents_of() if lower_enum(a.get("state", ""), "agent_state_") == "pending"), None), timeout=30)
    c.ok("agent", "approve", newcomer["agent_id"])
    # Its name belongs to the lost identity (approved, seen): refused, saying how to release it.
    c.wait_for("the name refusal in the controller's log", lambda: "belongs to another agent's key" in
               c.controller.log.read_text(errors="replace") and "releases the name" in
               c.controller.log.read_text(errors="replace"), timeout=30)
    c.ok("agent", "revoke", old["agent_id"])
    c.wait_for("node-1 connected under its new key", lambda: (lambda a: a and a["agent_id"] == newcomer["agent_id"])(
        c.connected("node-1")), timeout=30)
    revoked = c.find_agent(key=old["curve_public_key"])
    assert revoked["name"].startswith("node-1.revoked-"), revoked
    rc, out, err = c.ctl("restore", lab.set_id, "--wait", timeout=600)
    assert rc == 0, f"restore exited {rc}\n{out}\n{err}\n{c.logs()}"
    lab.check_exact("after the replaced host's restore")


@pytest.mark.liveness(10)
def test_a_member_without_an_agent_is_refused_before_anything_stops(lab):
    """A member the backup names whose agent is revoked (its servers still
    running): the restore is refused naming it, and no server was stopped.
    Then on an empty site where one agent has not come back: refused, naming
    it, nothing started or stopped."""
    c = lab.c
    etcd_before, zk_before = lab.etcd_pids(), lab.zk_pids()
    c.ok("agent", "revoke", c.find_agent(name="node-2")["agent_id"])
    rc, out, err = c.ctl("restore", lab.set_id, "--component", "etcd", "--component", "zookeeper", "--wait")
    assert rc != 0, out
    assert "'node-2' (its agent is revoked and no agent took the name)" in err, err
    assert "nothing was stopped or changed" in err, err
    assert lab.etcd_pids() == etcd_before and lab.zk_pids() == zk_before, "a server was restarted"
    for m in lab.etcd:
        assert m.get_all() == etcd_data(), f"etcd member {m.name} changed"
    # The empty site: rebuilt, two of three agents back.
    lab.lose_site()
    c.ok("catalog", "rebuild", "--config", c.controller_cfg)
    c.start_controller()
    for i in (0, 1):
        c.agents[f"node-{i}"].expect_dead = False
        c.agents[f"node-{i}"].start()
    c.wait_for("two agents knocking", lambda: pending_count(c) >= 2, timeout=60)
    c.ok("agent", "approve", "--all-pending", "--yes")
    for i in (0, 1):
        c.wait_for(f"node-{i} connected", lambda n=f"node-{i}": c.connected(n), timeout=60)
    rc, out, err = c.ctl("restore", lab.set_id, "--component", "etcd", "--wait")
    assert rc != 0, out
    assert "'node-2' (" in err and "nothing was stopped or changed" in err, err
    assert all(p is None for p in lab.etcd_pids()), "an etcd member was started on the empty site"
    assert not any(m.data_dir.exists() for m in lab.etcd), "a data dir was made on the empty site"
