"""The control plane end to end: a real cairn-controller and two real cairn-agent
processes on 127.0.0.1, driven with cairnctl (fixtures in cluster.py)."""
import json
import os
import signal
import socket
import struct
import subprocess
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

import curvezmq

from cluster import Cluster, backup_set_id, cluster, lower_enum, agent_state, write_random_file, task_state, set_state, restore_id  # noqa: F401


def snapshots(c):
    out = c.ok("repo", "snapshots", "--json", "--repo", c.repo, "--password-file", c.repo_pass)
    return json.loads(out)


def two_nodes(c, files_a=None, files_b=None):
    c.add_agent("node-a", files_a or {"a.txt": b"alpha " * 1000, "sub/deep.bin": os.urandom(50000)})
    c.add_agent("node-b", files_b or {"b.txt": b"bravo " * 1000})
    c.enrol("node-a")
    c.enrol("node-b")


def test_enrolment_pending_then_approved(cluster):
    c = cluster
    c.add_agent("node-a", {"a.txt": b"alpha"})
    key = c.agent_dirs["node-a"]["key"]
    c.agents["node-a"].start()
    pend = c.wait_for("the new agent appearing as pending", lambda: c._pending(key), timeout=20)
    assert pend["name"].startswith("pending-"), pend
    assert not pend.get("connected"), f"a pending agent must not be connected: {pend}"
    # A pending agent gets no plan: there is nothing to select.
    rc, out, err = c.ctl("backup", "create")
    assert rc == 1 and "nothing_selected" in err, (rc, out, err)
    rc, out, err = c.ctl("backup", "create", "--node", pend["name"])
    assert rc != 0, (rc, out, err)
    time.sleep(1)
    assert "plan '" not in c.agents["node-a"].log.read_text(errors="replace"), c.logs()
    text = c.ok("agent", "list")
    assert "pending" in text and key in text, text

    c.ok("agent", "approve", pend["agent_id"])
    a = c.wait_for("node-a connected and approved", lambda: c.connected("node-a"), timeout=30)
    assert a["agent_id"] == pend["agent_id"]
    assert [x["name"] for x in a.get("components", [])] == ["data"], a
    text = c.ok("agent", "list")
    line = [ln for ln in text.splitlines() if " node-a " in f" {ln} "]
    assert line and "approved" in line[0] and "yes" in line[0], text


def test_backup_and_restore_two_agents(cluster):
    c = cluster
    two_nodes(c)
    data_a = c.agent_dirs["node-a"]["data"]
    before = {p: (data_a / p).read_bytes() for p in ("a.txt", "sub/deep.bin")}
    rc, out, err = c.ctl("backup", "create", "--wait")
    assert rc == 0, f"backup create --wait exited {rc}\n{out}\n{err}\n{c.logs()}"
    sid = backup_set_id(out)
    s = c.json("backup", "show", sid)
    assert set_state(s) == "complete", s
    assert sorted(t["agent_name"] for t in s["tasks"]) == ["node-a", "node-b"], s
    for t in s["tasks"]:
        assert task_state(t) == "succeeded" and t.get("snapshot_id"), t
    repo_ids = {x["id"] for x in snapshots(c)}
    assert {t["snapshot_id"] for t in s["tasks"]} <= repo_ids
    assert sid in c.ok("backup", "list")

    # Damage node-a: overwrite one file, delete another.
    (data_a / "a.txt").write_bytes(b"damaged")
    os.unlink(data_a / "sub" / "deep.bin")
    b_before = (c.agent_dirs["node-b"]["data"] / "b.txt").stat().st_mtime_ns

    rc, out, err = c.ctl("restore", sid, "--node", "node-a", "--wait")
    assert rc == 0, f"restore --wait exited {rc}\n{out}\n{err}\n{c.logs()}"
    for p, content in before.items():
        assert (data_a / p).read_bytes() == content, f"{p} not restored"
    assert (c.agent_dirs["node-b"]["data"] / "b.txt").stat().st_mtime_ns == b_before, "node-b was touched"

    r = c.json("restore", "show", restore_id(out))
    assert r["order"][0].startswith("safety backup") and r["order"][1] == "data on node-a", r["order"]
    shown = c.ok("restore", "show", restore_id(out))
    assert "order:\n  1. safety backup" in shown and "  2. data on node-a" in shown, shown
    kinds = [(lower_enum(t["kind"], "task_kind_"), t["agent_name"], task_state(t)) for t in r["tasks"]]
    assert ("backup", "node-a", "succeeded") in kinds, f"no safety backup in the restore: {r}"
    safety = [x for x in snapshots(c) if "safety" in x.get("tags", [])]
    assert safety, "no safety snapshot in the repository"
    assert any(str(data_a) in p for x in safety for p in x["paths"]), safety


def test_backup_selects_component_and_node(cluster):
    c = cluster
    two_nodes(c)
    n_before = len(snapshots(c))
    rc, out, err = c.ctl("backup", "create", "--component", "data", "--node", "node-b", "--wait")
    assert rc == 0, f"{out}\n{err}\n{c.logs()}"
    s = c.json("backup", "show", backup_set_id(out))
    assert [(t["agent_name"], t["component"]) for t in s["tasks"]] == [("node-b", "data")], s
    assert set_state(s) == "complete", s
    snaps = snapshots(c)
    assert len(snaps) == n_before + 1, snaps
    assert str(c.agent_dirs["node-b"]["data"]) in snaps[-1]["paths"] or \
        any(str(c.agent_dirs["node-b"]["data"]) in x["paths"] for x in snaps)
    rc, out, err = c.ctl("backup", "create", "--component", "no-such-component")
    assert rc == 1 and "nothing_selected" in err, (rc, out, err)
    rc, out, err = c.ctl("backup", "create", "--node", "no-such-node")
    assert rc == 1 and "not_found" in err, (rc, out, err)


def test_revoked_agent_gets_no_tasks(cluster):
    c = cluster
    two_nodes(c)
    c.ok("agent", "revoke", "node-b")
    key_b = c.agent_dirs["node-b"]["key"]
    a = c.wait_for("node-b shown revoked and disconnected",
                   lambda: (lambda x: x if x and agent_state(x) == "revoked" and not x.get("connected") else None)(
                       c.find_agent(key=key_b)), timeout=10)
    # Revocation releases the name (docs/operations.md § A replaced host).
    assert a["name"].startswith("node-b.revoked-"), a
    assert c.find_agent(name="node-b") is None
    line = [ln for ln in c.ok("agent", "list").splitlines() if "node-b" in ln]
    assert line and "revoked" in line[0], line
    rc, out, err = c.ctl("backup", "create", "--wait")
    assert rc == 0, f"{out}\n{err}\n{c.logs()}"
    s = c.json("backup", "show", backup_set_id(out))
    assert [t["agent_name"] for t in s["tasks"]] == ["node-a"], f"revoked node-b got a task: {s}"
    rc, out, err = c.ctl("backup", "create", "--node", a["name"])
    assert rc == 1 and "nothing_selected" in err, (rc, out, err)
    time.sleep(1.5)  # a revoked agent stays cut off: it keeps being refused, never registers again
    assert c.agents["node-b"].alive()
    assert agent_state(c.find_agent(key=key_b)) == "revoked"
    log = c.agents["node-b"].log.read_text(errors="replace")
    assert "plan '" not in log, "node-b got a plan after revocation:\n" + log[-3000:]
    rc, _, _ = c.ctl("agent", "approve", a["agent_id"])
    assert rc != 0, "revocation must be final"


def _zmtp_greeting(mechanism=b"NULL", as_server=False):
    sig = b"\xff" + b"\x00" * 7 + b"\x01" + b"\x7f"
    return sig + bytes([3, 0]) + mechanism.ljust(20, b"\x00") + bytes([1 if as_server else 0]) + b"\x00" * 31


def _send_raw(port, data, read=True):
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        try:
            s.sendall(data)
            if read:
                s.settimeout(1)
                try:
                    s.recv(4096)
                except (socket.timeout, OSError):
                    pass
        except OSError:
            pass  # the peer may hang up on us: that is fine


def test_garbage_to_controller_sockets(cluster):
    c = cluster
    for port in (c.fleet_port, c.op_port):
        _send_raw(port, os.urandom(4096))
        _send_raw(port, b"\x00" * 100000, read=False)
        _send_raw(port, _zmtp_greeting()[:20])  # truncated greeting, then hang up
        _send_raw(port, _zmtp_greeting(b"NULL"))  # wrong mechanism for a CURVE server
        _send_raw(port, _zmtp_greeting(b"PLAIN") + b"\x04\x05\x05HELLO" + b"\x00" * 4)
        # CURVE greeting then a HELLO whose box does not open.
        hello = b"\x05HELLO" + bytes([1, 0]) + b"\x00" * 72 + os.urandom(32) + os.urandom(8) + os.urandom(80)
        _send_raw(port, _zmtp_greeting(b"CURVE") + b"\x04" + bytes([len(hello)]) + hello)
        # A huge declared length with nothing behind it.
        _send_raw(port, _zmtp_greeting(b"CURVE") + b"\x06" + struct.pack(">Q", 1 << 40) + b"\x05HELLO")
        assert c.controller.alive(), f"controller died after garbage on port {port}\n{c.logs()}"
    # Full CURVE handshakes over raw sockets with a long-term key the controller does not know:
    # refused by ZAP (ERROR 400); on the fleet socket the key is recorded as a pending agent.
    server = curvezmq.z85_decode((c.keys / "controller-curve.pub").read_text().strip())
    for port in (c.op_port, c.fleet_port):
        name, data = curvezmq.handshake(port, server)
        assert name in (b"ERROR", None), f"unknown key admitted on port {port}: {name} {data}"
        assert c.controller.alive(), f"controller died after an unknown CURVE key on port {port}\n{c.logs()}"
    pending = [a for a in c.agents_of() if agent_state(a) == "pending"]
    assert len(pending) == 1 and not pending[0]["connected"], pending
    # The same raw client with the real operator key is admitted: the refusal above was the key's.
    op = X25519PrivateKey.from_private_bytes(
        curvezmq.z85_decode((c.keys / "operator-curve.key").read_text().strip()))
    assert curvezmq.handshake(c.op_port, server, op)[0] == b"READY"
    # An operator with a key the controller does not know: refused at the handshake (exit 12).
    other = c.base / "other-keys"
    subprocess.run([os.fspath(c_ctl()), "keys", "init", "--dir", os.fspath(other)], check=True,
                   stdout=subprocess.DEVNULL)
    (other / "controller-curve.pub").unlink()
    (other / "controller-curve.pub").write_text((c.keys / "controller-curve.pub").read_text())
    rc, out, err = c.ctl("status", "--key-dir", other, "--timeout", "3")
    assert rc == 12, f"unknown operator key: expected exit 12, got {rc}\n{out}\n{err}"
    assert c.controller.alive(), c.logs()
    out = c.ok("status")
    assert "controller" in out, out
    j = c.json("status")
    assert "controller_version" in j, j


def c_ctl():
    from cluster import CTL
    return CTL


def test_agent_killed_mid_task(cluster):
    c = cluster
    c.add_agent("node-a", {"small.txt": b"x"})
    c.add_agent("node-b", {"b.txt": b"bravo"})
    write_random_file(c.agent_dirs["node-a"]["data"] / "big.bin", 1 << 30)
    c.enrol("node-a")
    c.enrol("node-b")
    p = c.ctl_popen("backup", "create", "--wait")
    try:
        first = p.stdout.readline().decode(errors="replace")
        sid = backup_set_id(first)

        def progressing():
            s = c.json("backup", "show", sid)
            for t in s["tasks"]:
                pr = t.get("progress", {})
                if t["agent_name"] == "node-a" and task_state(t) == "running" and \
                        0 < int(pr.get("bytes_done", 0)) < int(pr.get("bytes_total", 0) or 1 << 62):
                    return t
                if t["agent_name"] == "node-a" and task_state(t) not in ("pending", "sent", "accepted", "running"):
                    pytest.fail(f"node-a's task ended before it could be killed (the file is too small "
                                f"for this machine): {t}")
            return None

        t = c.wait_for("progress of node-a's task", progressing, timeout=20, interval=0.05)
        assert task_state(t) == "running", t
        c.agents["node-a"].kill(signal.SIGKILL)
        c.agents["node-a"].expect_dead = True
        killed = time.monotonic()
        try:
            out, err = p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"backup create --wait did not end within 30 s of the agent's death\n{c.logs()}")
        took = time.monotonic() - killed
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    out = first + out.decode(errors="replace")
    assert p.returncode != 0, f"--wait exited 0 although node-a died\n{out}"
    assert took < 15, f"the task took {took:.1f} s to fail (liveness is about 1 s)"
    s = c.json("backup", "show", sid)
    assert set_state(s) != "complete", s
    ta = [t for t in s["tasks"] if t["agent_name"] == "node-a"][0]
    tb = [t for t in s["tasks"] if t["agent_name"] == "node-b"][0]
    assert task_state(ta) == "failed", ta
    assert ta["reasons"], ta
    assert "agent_lost" in json.dumps(ta).lower(), ta
    assert task_state(tb) == "succeeded", tb
    text = c.ok("backup", "show", sid)
    assert "agent_lost" in text.lower(), text
    assert "agent_lost" in out.lower(), out


def test_controller_restart_mid_run(cluster):
    c = cluster
    c.add_agent("node-a", {"small.txt": b"x"})
    c.add_agent("node-b", {"b.txt": b"bravo"})
    c.enrol("node-a")
    c.enrol("node-b")
    rc, out, err = c.ctl("backup", "create", "--wait")
    assert rc == 0, f"{out}\n{err}\n{c.logs()}"
    earlier = backup_set_id(out)
    write_random_file(c.agent_dirs["node-a"]["data"] / "big.bin", 300 << 20)
    rc, out, err = c.ctl("backup", "create")
    assert rc == 0, f"{out}\n{err}"
    sid = backup_set_id(out)

    def progressing():
        s = c.json("backup", "show", sid)
        return any(t["agent_name"] == "node-a" and int(t.get("progress", {}).get("bytes_done", 0)) > 0
                   for t in s["tasks"])

    c.wait_for("progress of node-a's task", progressing, timeout=20, interval=0.05)
    c.controller.kill(signal.SIGKILL)
    time.sleep(0.5)
    c.start_controller()
    assert earlier in c.ok("backup", "list"), "earlier set lost after the controller restart"
    assert set_state(c.json("backup", "show", earlier)) == "complete"

    def finished():
        s = c.json("backup", "show", sid)
        return s if set_state(s) not in ("running", "pending", "") else None

    s = c.wait_for(f"set {sid} ending after the controller restart", finished, timeout=60, interval=0.5)
    for t in s["tasks"]:
        st = task_state(t)
        assert st in ("succeeded", "failed"), t
        if st == "failed":
            assert t["reasons"], f"failed without a reason: {t}"
        else:
            assert t.get("snapshot_id"), t
    for name in ("node-a", "node-b"):
        c.wait_for(f"{name} reconnected", lambda: c.connected(name), timeout=40)
    rc, out, err = c.ctl("backup", "create", "--wait")
    assert rc == 0, f"a backup after the restart failed: {out}\n{err}\n{c.logs()}"


def test_agent_back_within_seconds_after_a_long_controller_outage(cluster):
    """A controller down for longer than the agents' backoff would grow: the
    agent keeps its socket while no TCP connection can be made (libzmq retries
    about every second) and registers within seconds of the controller
    listening again, where a new socket after each silence would have waited
    out a backoff of 16-24 s by then. A controller that is reached but silent
    (stopped, its listening socket still accepting) still gets the backoff."""
    c = cluster
    c.add_agent("node-a", {"a.txt": b"alpha " * 100})
    c.enrol("node-a")
    log = c.agents["node-a"].log
    mark = len(log.read_bytes())
    c.controller.kill(signal.SIGKILL)
    # Liveness is 1 s here: a backoff of 1, 2, 4, 8 s (+ up to 50 %) between
    # 1 s silences has grown to 16 s by 25 s into the outage.
    time.sleep(25)
    c.start_controller()
    listening = time.monotonic()
    c.wait_for("node-a registered again", lambda: c.connected("node-a"), timeout=60, interval=0.1)
    took = time.monotonic() - listening
    during = log.read_bytes()[mark:].decode(errors="replace")
    assert "retrying the connection every second" in during, f"the agent did not notice the outage\n{c.logs()}"
    assert "reconnecting in" not in during, f"the agent backed off from an unreachable controller\n{c.logs()}"
    assert "accepts connections again; registering" in during, c.logs()
    assert took < 8, f"the agent took {took:.1f} s to register after the controller listened again\n{c.logs()}"
    rc, out, err = c.ctl("backup", "create", "--wait")
    assert rc == 0, f"a backup after the outage failed: {out}\n{err}\n{c.logs()}"

    # Reached and silent: the kernel still completes TCP connections to a
    # stopped process, which never answers; a new socket after a backoff.
    mark = len(log.read_bytes())
    os.kill(c.controller.pid, signal.SIGSTOP)
    try:
        c.wait_for("node-a backing off from a silent controller",
                   lambda: "reconnecting in" in log.read_bytes()[mark:].decode(errors="replace"), timeout=20)
    finally:
        os.kill(c.controller.pid, signal.SIGCONT)
    c.wait_for("node-a registered again", lambda: c.connected("node-a"), timeout=60, interval=0.2)
    rc, out, err = c.ctl("backup", "create", "--wait")
    assert rc == 0, f"a backup after the controller was stopped and continued failed: {out}\n{err}\n{c.logs()}"


def test_agent_restart_does_not_rerun_old_plan(cluster):
    c = cluster
    two_nodes(c)
    rc, out, err = c.ctl("backup", "create", "--node", "node-a", "--wait")
    assert rc == 0, f"{out}\n{err}\n{c.logs()}"
    s = c.json("backup", "show", backup_set_id(out))
    task_id = s["tasks"][0]["task_id"]
    plans = {tag for x in snapshots(c) for tag in x["tags"] if tag.startswith("plan:")}
    assert len(plans) == 1, plans
    snaps_before = snapshots(c)
    journal = c.agent_dirs["node-a"]["dir"] / "state" / "replay-journal.json"
    assert journal.exists(), "no replay journal"
    jtext = journal.read_text()
    plan_id = next(iter(plans)).split(":", 1)[1]
    assert plan_id in jtext, jtext

    c.agents["node-a"].stop()
    c.wait_for("node-a shown disconnected", lambda: not (c.find_agent(name="node-a") or {}).get("connected"),
               timeout=20)
    c.agents["node-a"].start()
    c.wait_for("node-a reconnected", lambda: c.connected("node-a"), timeout=40)
    time.sleep(2)
    assert snapshots(c) == snaps_before, "a restarted agent wrote a new snapshot"
    log = c.agents["node-a"].log.read_text(errors="replace")
    assert log.count(f"task '{task_id}': backup of component") == 1, log[-3000:]
    assert plan_id in journal.read_text(), "the replay journal forgot the accepted plan across a restart"
    # and it still takes new plans, with a higher sequence
    rc, out, err = c.ctl("backup", "create", "--node", "node-a", "--wait")
    assert rc == 0, f"{out}\n{err}\n{c.logs()}"
