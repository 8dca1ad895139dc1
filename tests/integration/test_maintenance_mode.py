"""Maintenance mode during a restore (issue 12), against Debian's real haproxy:
the servers in front of a component go to `maint` over the stats socket for
the restore and back to the state they had (ready, drain) afterwards, also
when the restore fails; an agent that stopped mid-restore puts them back at
its next start; a server haproxy does not know refuses the restore before
anything is overwritten."""
import json
import os
import threading
import time

import pytest

from cluster import backup_set_id, cluster, write_random_file  # noqa: F401
from servers_haproxy import Haproxy, free_port

MAINT, DRAIN = 0x01, 0x08


@pytest.fixture
def haproxy(tmp_path):
    etc = tmp_path / "haproxy-etc"
    etc.mkdir()
    (tmp_path / "haproxy").mkdir()
    h = Haproxy(tmp_path / "haproxy", [etc / "haproxy.cfg"])
    (etc / "haproxy.cfg").write_text(f"""global
    stats socket {h.socket} mode 600 level admin
defaults
    mode tcp
    timeout connect 1s
    timeout client 5s
    timeout server 5s
frontend zk
    bind 127.0.0.1:{free_port()}
    default_backend zk
backend zk
    server node-a 127.0.0.1:{free_port()}
    server node-b 127.0.0.1:{free_port()}
    server other 127.0.0.1:{free_port()}
""")
    h.start()
    try:
        yield h
    finally:
        h.stop()


def admin(h, server):
    return h.servers()[("zk", server)][0]


def agent_with_maintenance(c, h, servers=("node-a", "node-b"), files=None):
    listed = ", ".join(f'"{s}"' for s in servers)
    c.add_agent("node-a", files or {"a.txt": b"version 1\n"})
    cfg = c.agent_dirs["node-a"]["config"]
    cfg.write_text(cfg.read_text() + f'maintenance = {{ stats_socket = "{h.socket}", backend = "zk", servers = [{listed}] }}\n')
    c.enrol("node-a")


def test_servers_in_maint_for_the_restore_and_back_as_they_were(cluster, haproxy):
    c, h = cluster, haproxy
    h.ok("set server zk/node-b state drain")  # an operator drained it before: it must stay drained
    agent_with_maintenance(c, h)
    data = c.agent_dirs["node-a"]["data"]
    write_random_file(data / "big.bin", 64 << 20)  # a restore that takes a moment, to be seen in maint
    sid = backup_set_id(c.ok("backup", "create", "--wait"))
    (data / "a.txt").write_bytes(b"damaged\n")
    (data / "big.bin").write_bytes(b"x")

    seen = set()
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            try:
                seen.add((admin(h, "node-a") & MAINT, admin(h, "node-b") & MAINT, admin(h, "other") & MAINT))
            except (OSError, KeyError, AssertionError):
                pass
            time.sleep(0.01)
    t = threading.Thread(target=watch)
    t.start()
    try:
        rc, out, err = c.ctl("restore", sid, "--wait", "--skip-safety-backup")
    finally:
        stop.set()
        t.join()
    assert rc == 0, f"{out}\n{err}\n{c.logs()}"
    assert (data / "a.txt").read_bytes() == b"version 1\n"
    assert (MAINT, MAINT, 0) in seen, f"the servers were never seen in maint during the restore: {seen}"
    assert admin(h, "node-a") & (MAINT | DRAIN) == 0
    assert admin(h, "node-b") & DRAIN and not admin(h, "node-b") & MAINT
    assert admin(h, "other") == 0
    log = c.agents["node-a"].log.read_text()
    assert "servers set to maint for the restore" in log and "put back as they were" in log
    assert json.loads((c.agent_dirs["node-a"]["dir"] / "state" / "maintenance.json").read_text()) == {}


def test_a_failed_restore_puts_the_servers_back(cluster, haproxy):
    c, h = cluster, haproxy
    agent_with_maintenance(c, h)
    sid = backup_set_id(c.ok("backup", "create", "--wait"))
    # Every pack damaged: the restore fails after the servers went to maint.
    for p in (c.repo / "data").rglob("*"):
        if p.is_file():
            b = bytearray(p.read_bytes())
            for i in range(0, len(b), 97):
                b[i] ^= 0xFF
            p.write_bytes(bytes(b))
    rc, out, err = c.ctl("restore", sid, "--wait", "--skip-safety-backup")
    assert rc != 0, out
    assert "servers set to maint for the restore" in c.agents["node-a"].log.read_text()
    assert admin(h, "node-a") == 0 and admin(h, "node-b") == 0


def test_an_unknown_server_refuses_the_restore_before_anything_changes(cluster, haproxy):
    c, h = cluster, haproxy
    agent_with_maintenance(c, h, servers=("node-a", "nosuch"))
    data = c.agent_dirs["node-a"]["data"]
    sid = backup_set_id(c.ok("backup", "create", "--wait"))
    (data / "a.txt").write_bytes(b"written after the backup\n")
    rc, out, err = c.ctl("restore", sid, "--wait", "--skip-safety-backup")
    assert rc != 0
    shown = c.ok("restore", "show", [w for w in out.split() if w.startswith("rs-")][0])
    assert "no server 'nosuch' in backend 'zk'" in shown, shown
    assert (data / "a.txt").read_bytes() == b"written after the backup\n"
    assert admin(h, "node-a") == 0


def test_maintenance_left_by_a_stopped_agent_is_undone_at_its_next_start(cluster, haproxy):
    c, h = cluster, haproxy
    agent_with_maintenance(c, h)
    c.agents["node-a"].kill()
    # As an agent killed mid-restore leaves it: servers in maint, the journal saying how they were.
    h.ok("set server zk/node-a state maint")
    h.ok("set server zk/node-b state maint")
    journal = c.agent_dirs["node-a"]["dir"] / "state" / "maintenance.json"
    journal.write_text(json.dumps({"data": {"stats_socket": str(h.socket), "backend": "zk",
                                            "previous": {"node-a": "ready", "node-b": "drain"}}}))
    os.chmod(journal, 0o600)
    c.agents["node-a"].start()
    c.wait_for("the servers put back", lambda: admin(h, "node-a") == 0 and admin(h, "node-b") == DRAIN, timeout=20)
    # The agent puts the servers back first and then rewrites its journal; under a sanitizer the
    # second step can trail the first by a moment, so wait for it rather than read it once.
    c.wait_for("the journal emptied", lambda: json.loads(journal.read_text()) == {}, timeout=20)
    c.wait_for("the agent's log saying so",
               lambda: "left in maint by an interrupted restore were put back" in c.agents["node-a"].log.read_text(),
               timeout=20)
