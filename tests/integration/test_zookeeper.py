"""The zookeeper driver against real ZooKeeper servers (Debian's package), through
a real controller and agents: a tree of znodes backed up, deleted, restored and
read back, on one server and on a 3-server ensemble; a snapshot still being
written is never the one stored; a component that names another directory
than the server's dataDir is refused.
Servers: servers_zookeeper.py (own directories, free ports, stopped by PID)."""
import json
import os
import subprocess
import time

import pytest

from cluster import backup_set_id, cluster, lower_enum, task_state, set_state, restore_id  # noqa: F401
from servers_zookeeper import ZooKeeper, available, ensemble

pytestmark = pytest.mark.skipif(available() is not None, reason=available() or "")


def tree():
    """A tree of znodes with data: paths in creation order, values without spaces."""
    t = {"/app": "root", "/app/config": "retries=3;timeout=30"}
    for i in range(30):
        t[f"/app/n{i:02d}"] = f"value-{i}"
        if i % 5 == 0:
            t[f"/app/n{i:02d}/child"] = f"deep-{i}"
    return t


def create(zk, t):
    zk.cli([f"create {p} {v}" for p, v in t.items()])


def read(zk, t):
    """The value of each znode of t, in order; 'Node does not exist: ...' where one is missing."""
    return zk.cli([f"get {p}" for p in t])


def backup(c, *args, expect=0):
    rc, out, err = c.ctl("backup", "create", "--component", "zookeeper", *args, "--wait")
    assert rc == expect, f"backup create exited {rc}, expected {expect}\n{out}\n{err}\n{c.logs()}"
    return backup_set_id(out)


def restore(c, sid, expect=0):
    rc, out, err = c.ctl("restore", sid, "--component", "zookeeper", "--wait", timeout=400)
    assert rc == expect, f"restore exited {rc}, expected {expect}\n{out}\n{err}\n{c.logs()}"
    return c.json("restore", "show", restore_id(out))


def stored_files(c, snapshot_id, dest):
    """Every regular file of a repository snapshot, by base name, read back with `repo restore`."""
    c.ok("repo", "restore", snapshot_id, "--target", dest, "--repo", c.repo, "--password-file", c.repo_pass)
    out = {}
    for root, _, files in os.walk(dest):
        for f in files:
            out[os.path.relpath(os.path.join(root, f), dest)] = open(os.path.join(root, f), "rb").read()
    return out


def recorded(c, snapshot_id):
    """The driver's metadata stored with a repository snapshot."""
    snaps = json.loads(c.ok("repo", "snapshots", "--json", "--repo", c.repo, "--password-file", c.repo_pass))
    s = next(x for x in snaps if x.get("id") == snapshot_id)
    return s.get("component") or {}


def zk_snapshot_id(c, sid):
    s = c.json("backup", "show", sid)
    tasks = [t for t in s["tasks"] if t.get("component") == "zookeeper"]
    assert len(tasks) == 1 and task_state(tasks[0]) == "succeeded", json.dumps(s, indent=1)
    return tasks[0]["snapshot_id"], s


@pytest.fixture
def zk(tmp_path):
    z = ZooKeeper(tmp_path, "zk")
    z.write_config()
    z.start()
    try:
        z.wait_serving()
        yield z
    finally:
        z.stop()


def test_zookeeper_standalone_backup_delete_restore(cluster, zk, tmp_path):
    c = cluster
    t = tree()
    create(zk, t)
    assert read(zk, t) == list(t.values())
    before = zk.srvr()
    c.add_agent("node-a", components=zk.component())
    c.enrol("node-a")
    sid = backup(c)
    snap, shown = zk_snapshot_id(c, sid)
    md = recorded(c, snap)
    # Reported to the controller too: `backup show` (JSON and text).
    task = next(x for x in shown["tasks"] if x.get("component") == "zookeeper")
    assert json.loads(task["component_metadata"]) == md, task
    assert "zxid=" + before["Zxid"] in c.ok("backup", "show", sid)
    assert md.get("zxid") == before["Zxid"], md  # nothing was written since: the files end where the server stood
    assert md.get("node_count") == int(before["Node count"]) and md.get("node_count_exact") is True, md
    assert md.get("version", "").startswith("3.8"), md
    assert md.get("mode") == "standalone" and md.get("server_id") == "standalone", md
    files = stored_files(c, snap, tmp_path / "stored")
    assert any("/.cairn-zookeeper-data/version-2/snapshot." in "/" + p for p in files), sorted(files)
    assert any("/.cairn-zookeeper-data/conf/zoo.cfg" in "/" + p for p in files), sorted(files)
    # The staging directory is gone once the snapshot is stored.
    assert not [p for p in os.listdir(zk.data) if p.startswith(".cairn-staging")]

    # Damage: the whole tree deleted, and more written after it.
    zk.cli(["deleteall /app", "create /other x"])
    assert read(zk, t)[0] == "Node does not exist: /app"

    r = restore(c, sid)
    assert set_state(r) == "complete", json.dumps(r, indent=1)
    zk.wait_serving()
    assert read(zk, t) == list(t.values())
    assert zk.cli(["get /other"]) == ["Node does not exist: /other"]
    after = zk.srvr()
    assert int(after["Zxid"], 16) >= int(before["Zxid"], 16)
    assert after["Node count"] == before["Node count"]
    # The data the restore replaced is kept beside the new one.
    old = [p for p in os.listdir(zk.data) if p.startswith("version-2.cairn-old-")]
    assert len(old) == 1, os.listdir(zk.data)
    # The directory the snapshot was restored into is gone.
    assert not [p for p in os.listdir(zk.data) if p.startswith(".cairn-restore-") and (zk.data / p).is_dir()]


def test_zookeeper_snapshot_being_written_is_not_chosen(cluster, zk, tmp_path):
    c = cluster
    t = tree()
    create(zk, t)
    v2 = zk.data / "version-2"

    def zxid(name):
        return int(name.split(".")[1], 16)

    def finished(name):  # ZooKeeper's trailer: the length 1 and "/" (SnapStream.isValidSnapshot)
        return (v2 / name).read_bytes()[-5:] == b"\x00\x00\x00\x01/"

    # The server writes snapshots on a thread of its own: let the last one finish.
    deadline = time.monotonic() + 10
    while not all(finished(p) for p in os.listdir(v2) if p.startswith("snapshot.")):
        assert time.monotonic() < deadline, os.listdir(v2)
        time.sleep(0.1)
    snaps = sorted((p for p in os.listdir(v2) if p.startswith("snapshot.")), key=zxid)
    newest = snaps[-1]
    # A snapshot still being written: the newest one cut short, under a higher zxid.
    body = (v2 / newest).read_bytes()
    partial = f"snapshot.{zxid(newest) + 0x1000:x}"
    (v2 / partial).write_bytes(body[: len(body) // 2])

    c.add_agent("node-a", components=zk.component())
    c.enrol("node-a")
    sid = backup(c)
    snap, shown = zk_snapshot_id(c, sid)
    md = recorded(c, snap)
    assert md.get("snapshot_file") == newest, md
    assert any(partial in x for x in md.get("skipped_snapshots", [])), md
    files = stored_files(c, snap, tmp_path / "stored")
    names = {os.path.basename(p) for p in files}
    assert partial not in names, sorted(names)
    assert newest in names, sorted(names)
    stored = next(v for p, v in files.items() if os.path.basename(p) == newest)
    assert stored == (v2 / newest).read_bytes()

    # Restored, the server loads the valid snapshot and its logs: the whole tree.
    os.unlink(v2 / partial)
    zk.cli(["deleteall /app"])
    r = restore(c, sid)
    assert set_state(r) == "complete", json.dumps(r, indent=1)
    zk.wait_serving()
    assert read(zk, t) == list(t.values())


def test_a_restore_that_would_fill_the_data_dirs_disk_is_refused_with_the_server_serving(cluster, tmp_path):
    """The data dir on a small filesystem (a tmpfs of the test's own): a
    restore whose staged copy would leave the running server less than its
    reserve is refused before the server is stopped, naming both figures; the
    server serves on, with what was written after the backup. Once space is
    freed, the same restore runs."""
    c = cluster
    disk = tmp_path / "small-disk"
    disk.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160m", "cairn-test", str(disk)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.decode().strip()}")
    z = ZooKeeper(disk, "zk")
    try:
        z.write_config()
        z.start()
        z.wait_serving()
        t = tree()
        create(z, t)
        c.add_agent("node-a", components=z.component())
        c.enrol("node-a")
        sid = backup(c)
        snap, _ = zk_snapshot_id(c, sid)
        need = json.loads(c.ok("repo", "snapshots", "--json", "--repo", c.repo, "--password-file", c.repo_pass))
        need = int(next(x for x in need if x.get("id") == snap)["summary"]["bytes_total"])
        z.cli(["create /after-backup kept"])
        # Leave less free than the snapshot holds (its transaction log is a preallocated 64 MiB).
        st = os.statvfs(disk)
        filler = disk / "filler"
        with open(filler, "wb") as f:
            f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - need + (4 << 20)))
        pid = z.pid()

        rc, out, err = c.ctl("restore", sid, "--component", "zookeeper", "--wait", timeout=400)
        assert rc != 0, out
        shown = c.json("restore", "show", restore_id(out))
        assert set_state(shown) == "failed", json.dumps(shown, indent=1)
        text = json.dumps(shown)
        assert "not enough space in" in text and str(z.data) in text and "must stay free" in text, text
        assert "no_space" in text.lower(), text
        # Nothing stopped, nothing changed, nothing left staged.
        assert z.pid() == pid and z.srvr()["Mode"] == "standalone"
        assert z.cli(["get /after-backup"]) == ["kept"]
        assert not [p for p in os.listdir(z.data) if ".cairn-" in p], os.listdir(z.data)

        filler.unlink()
        r = restore(c, sid)
        assert set_state(r) == "complete", json.dumps(r, indent=1)
        z.wait_serving()
        assert read(z, t) == list(t.values())
        assert z.cli(["get /after-backup"]) == ["Node does not exist: /after-backup"]
    finally:
        z.stop()
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_zookeeper_separate_log_dir_round_trip(cluster, tmp_path):
    """dataLogDir apart from dataDir: the logs are stored from there and put
    back there; both old version-2 directories are kept."""
    c = cluster
    z = ZooKeeper(tmp_path, "zk", separate_logs=True)
    z.write_config()
    z.start()
    try:
        z.wait_serving()
        t = tree()
        create(z, t)
        assert [p for p in os.listdir(z.logs / "version-2") if p.startswith("log.")]
        c.add_agent("node-a", components=z.component())
        c.enrol("node-a")
        sid = backup(c)
        snap, _ = zk_snapshot_id(c, sid)
        files = stored_files(c, snap, tmp_path / "stored")
        assert any("/.cairn-zookeeper-log/version-2/log." in "/" + p for p in files), sorted(files)
        assert not [p for p in os.listdir(z.logs) if p.startswith(".cairn-staging")]

        z.cli(["deleteall /app"])
        r = restore(c, sid)
        assert set_state(r) == "complete", json.dumps(r, indent=1)
        z.wait_serving()
        assert read(z, t) == list(t.values())
        assert [p for p in os.listdir(z.logs) if p.startswith("version-2.cairn-old-")], os.listdir(z.logs)
        assert [p for p in os.listdir(z.data) if p.startswith("version-2.cairn-old-")], os.listdir(z.data)
        assert not [p for p in os.listdir(z.data / "version-2") if p.startswith("log.")]
    finally:
        z.stop()


def test_zookeeper_data_dir_not_the_servers_is_refused_naming_both(cluster, zk, tmp_path):
    """A component declaring another directory than the server's dataDir is
    refused before anything is read, naming both; nothing is staged."""
    c = cluster
    other = tmp_path / "elsewhere"
    (other / "version-2").mkdir(parents=True)
    comp = zk.component().replace(f'data_dir = "{zk.data}"', f'data_dir = "{other}"')
    c.add_agent("node-a", components=comp)
    c.enrol("node-a")
    rc, out, err = c.ctl("backup", "create", "--component", "zookeeper", "--wait")
    assert rc != 0, out
    s = c.json("backup", "show", backup_set_id(out))
    task = next(t for t in s["tasks"] if t.get("component") == "zookeeper")
    assert task_state(task) == "failed", task
    text = json.dumps(task)
    assert str(zk.data) in text and str(other) in text and "dataDir" in text, text
    assert os.listdir(other) == ["version-2"]
    assert not [p for p in os.listdir(zk.data) if p.startswith(".cairn-staging")]


def test_zookeeper_ensemble_restored_on_every_member(cluster, tmp_path):
    """Three servers, three agents: one backup set, znodes deleted, restored
    through the controller's step-by-step cluster restore: the tree is back on
    every server, each kept its myid, one leader."""
    c = cluster
    members = ensemble(tmp_path)
    for m in members:
        m.start()
    try:
        for m in members:
            m.wait_serving(timeout=120)
        t = tree()
        create(members[0], t)
        for i, m in enumerate(members):
            c.add_agent(f"node-{i + 1}", components=m.component())
            c.enrol(f"node-{i + 1}")
        sid = backup(c)
        # One dataset: backed up from one member.
        shown = c.json("backup", "show", sid)
        assert len([x for x in shown["tasks"] if x.get("component") == "zookeeper"]) == 1, json.dumps(shown, indent=1)
        members[1].cli(["deleteall /app"])
        for m in members:
            assert m.cli(["sync /", "get /app"]) == ["Node does not exist: /app"]

        r = restore(c, sid)
        assert set_state(r) == "complete", json.dumps(r, indent=1)
        # In steps, every member at each: stop, data, start, verify.
        steps = {}
        for task in r["tasks"]:
            if task.get("component") == "zookeeper" and task.get("restore_step"):
                steps.setdefault(task["restore_step"], []).append(task_state(task))
        for step in ("stop", "data", "start", "verify"):
            assert steps.get(step) == ["succeeded"] * 3, json.dumps(r, indent=1)
        modes = []
        for m in members:
            modes.append(m.wait_serving(timeout=120)["Mode"])
            assert (m.data / "myid").read_text().strip() == str(m.myid)
        assert sorted(modes) == ["follower", "follower", "leader"], modes
        for m in members:
            assert read(m, t) == list(t.values()), m.dir.name
    finally:
        for m in members:
            m.stop()
