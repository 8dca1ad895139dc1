"""The fleet simulator (bench/fleet) against a real cairn-controller: 50
simulated agents, each with its own CURVE key, enrol, are approved in one
command, run one backup set, verify every plan with common/plan and report
results. Keeps bench/fleet/run.py honest; it measures nothing."""
import json
import os
import subprocess
import threading

import pytest

from cluster import BUILD, agent_state, backup_set_id, cluster, set_state, task_state  # noqa: F401

SIM = BUILD / "bench" / "fleet" / "cairn-fleet-sim"
AGENTS = 50


class Sim:
    """cairn-fleet-sim with its latest counters line."""

    def __init__(self, c, log):
        self.log = open(log, "ab")
        self.p = subprocess.Popen(
            [os.fspath(SIM), "--endpoint", f"tcp://127.0.0.1:{c.fleet_port}",
             "--controller-key", os.fspath(c.keys / "controller-curve.pub"),
             "--signing-keys", os.fspath(c.keys / "controller-signing.pub"),
             "--agents", str(AGENTS), "--progress-rate", "20", "--task-ms", "500"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log)
        self.latest = {}
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for line in self.p.stdout:
            try:
                self.latest = json.loads(line)
            except ValueError:
                pass

    def count(self, key):
        v = self.latest.get(key, 0)
        return v[0] if isinstance(v, list) else v

    def stop(self):
        if self.p.poll() is None:
            self.p.stdin.write(b"quit\n")
            self.p.stdin.flush()
            try:
                self.p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(timeout=10)
        self.log.close()


@pytest.fixture
def sim(cluster):
    if not SIM.exists():
        pytest.fail(f"binary not found: {SIM}; build it or set CAIRN_BUILD_DIR")
    s = Sim(cluster, cluster.base / "fleet-sim.log")
    try:
        yield s
    finally:
        s.stop()


def test_fifty_simulated_agents_enrol_and_back_up(cluster, sim):
    c = cluster

    def pending():
        assert sim.p.poll() is None, f"the simulator exited with {sim.p.returncode}"
        return [a for a in c.agents_of() if agent_state(a) == "pending"]
    c.wait_for(f"{AGENTS} simulated agents listed as pending", lambda: len(pending()) == AGENTS, timeout=30)

    keys = {a["curve_public_key"] for a in c.agents_of()}
    assert len(keys) == AGENTS, "every simulated agent has a key of its own"
    rc, out, err = c.ctl("agent", "approve", "--all-pending", "--yes")
    assert rc == 0 and f"approved {AGENTS} agent(s)" in out, (rc, out, err)
    assert sum(k in err for k in keys) == AGENTS, f"the confirmation names every key it approves:\n{err}"

    def connected():
        lst = c.agents_of()
        return sum(1 for a in lst if agent_state(a) == "approved" and a.get("connected")) == AGENTS
    c.wait_for(f"{AGENTS} simulated agents connected and approved", connected, timeout=30)
    names = sorted(a["name"] for a in c.agents_of())
    assert names == [f"sim-{i:05d}" for i in range(AGENTS)], names

    rc, out, err = c.ctl("backup", "create", "--wait", timeout=120)
    assert rc == 0, f"backup create --wait exited {rc}\n{out}\n{err}\n{c.logs()}"
    s = c.json("backup", "show", backup_set_id(out))
    assert set_state(s) == "complete", s
    assert len(s["tasks"]) == AGENTS
    for t in s["tasks"]:
        assert task_state(t) == "succeeded" and t.get("snapshot_id"), t
        # The last progress each agent sent is what `show` says.
        assert t["progress"]["current_item"] == "done" and int(t["progress"]["bytes_done"]) == 1 << 30, t

    c.wait_for("every result acknowledged", lambda: sim.count("result_acks") >= AGENTS, timeout=20)
    assert sim.count("plans") == AGENTS, sim.latest  # every plan verified by common/plan and accepted
    assert sim.count("plans_rejected") == 0, sim.latest
    assert sim.count("registered") == AGENTS, sim.latest
