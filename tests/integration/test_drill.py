"""Restore drills (docs/drills.md) through the controller, against real
servers: a files drill and an etcd drill (a 3-member cluster's backup started
as a one-member cluster in a sandbox with its own network namespace) prove
the set restorable, with the live service on the same host untouched; a
flipped byte in a pack, a disk budget too small and the drill agent killed
mid-drill each fail the drill with the reason a user needs."""
import json
import os
import pathlib
import shutil
import signal
import socket
import tempfile
import time
import urllib.request

from cluster import backup_set_id, catalog, cluster, lower_enum, restore_id  # noqa: F401  (cluster is a fixture)
from servers_etcd import start_cluster
from test_etcd import keys
from servers_postgresql import postgres_server  # noqa: F401  (a fixture)
from test_kafka import zookeeper_mode_broker


def drill_toml(root, **extra):
    settings = {"root": str(root), "memory_max": "1G", "start_timeout_seconds": 90, **extra}
    return "\n".join(["[drill]"] + [f"{k} = {json.dumps(v)}" for k, v in settings.items()]) + "\n"


def drill_id(out):
    for line in out.splitlines():
        w = line.split()
        if len(w) >= 2 and w[0] == "drill" and w[1].startswith("dr-"):
            return w[1]
    raise AssertionError(f"no 'drill ID' line in: {out[-2000:]}")


def backup(c, *args):
    rc, out, err = c.ctl("backup", "create", "--wait", *args, timeout=300)
    assert rc == 0, f"backup exited {rc}\n{out}\n{err}\n{c.logs()}"
    return backup_set_id(out)


def drill(c, *args, expect=0):
    rc, out, err = c.ctl("drill", "run", "--wait", *args, timeout=400)
    assert rc == expect, f"drill exited {rc}, expected {expect}\n{out}\n{err}\n{c.logs()}"
    did = drill_id(out)
    return did, c.json("drill", "show", did), out


def drill_report(shown):
    (task,) = shown["tasks"]
    assert task.get("component_metadata"), f"the drill's task carries no report: {task}"
    return json.loads(task["component_metadata"])["drill"], task


def tree_state(root):
    """Every file under root: bytes, mode, mtime."""
    out = {}
    for p in sorted(pathlib.Path(root).rglob("*")):
        st = p.lstat()
        out[str(p)] = (p.read_bytes() if p.is_file() and not p.is_symlink() else None, st.st_mode, st.st_mtime_ns)
    return out


def metric(c, name, **labels):
    text = urllib.request.urlopen(c.http_url() + "metrics", timeout=10).read().decode()
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(name + "{") and want in line:
            return float(line.split()[-1])
    return None


def first_proven_drill(c, skip=()):
    """The first complete drill `drill list` shows (those in skip aside); None while there is none."""
    for d in c.json("drill", "list").get("restores", []):
        if lower_enum(d["state"], "set_state_") == "complete" and d["restore_id"] not in skip:
            return d
    return None


def damage_biggest_pack(c):
    """One bit flipped in the middle of the repository's biggest pack; its path."""
    packs = [p for p in (pathlib.Path(c.repo) / "data").rglob("*") if p.is_file()]
    pack = max(packs, key=os.path.getsize)
    with open(pack, "r+b") as f:
        f.seek(os.path.getsize(pack) // 2)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0x40]))
    return pack


def files_rig(c, tmp_path, **drill_extra):
    files = {f"dir{i}/f{j}.bin": os.urandom(1000 * (i + 1) + j) for i in range(5) for j in range(20)}
    files["empty"] = b""
    c.add_agent("node-a", files=files, components=drill_toml(tmp_path / "drills", **drill_extra))
    data = c.agent_dirs["node-a"]["data"]
    os.symlink("dir1/f3.bin", data / "link")
    os.chmod(data / "dir2" / "f5.bin", 0o600)
    c.enrol("node-a")
    return data


def test_a_files_drill_proves_the_set_and_touches_nothing_live(cluster, tmp_path):
    c = cluster
    data = files_rig(c, tmp_path)
    sid = backup(c, "--component", "data")
    before = tree_state(data)

    did, shown, _ = drill(c, sid)
    assert lower_enum(shown["state"], "set_state_") == "complete", shown
    report, task = drill_report(shown)
    assert lower_enum(task["kind"], "task_kind_") == "drill", task
    checks = {x["name"]: x for x in report["checks"]}
    assert all(x["ok"] for x in report["checks"]), report
    assert checks["files in the tree"]["found"] == 101, checks
    assert checks["entries that differ from the snapshot"]["found"] == 0, checks
    assert set(report["phases"]) >= {"restore", "check"}, report
    # The sandbox is gone and the live data is as it was.
    assert list((tmp_path / "drills").iterdir()) == [], list((tmp_path / "drills").iterdir())
    assert tree_state(data) == before

    # What the operator sees: the set is proven, the drill is listed, /metrics says when.
    rc, out, err = c.ctl("backup", "show", sid)
    assert rc == 0 and "data of node-a: proven restorable at" in out, out
    rc, out, err = c.ctl("drill", "list")
    assert rc == 0 and did in out and "proven" in out, out
    rc, out, err = c.ctl("drill", "show", did)
    assert rc == 0 and "ok   entries that differ from the snapshot: expected 0, found 0" in out, out
    proven_at = c.wait_for("the proven time in /metrics", lambda: metric(
        c, "cairn_component_proven_restorable_timestamp_seconds", component="data"), timeout=30)
    assert proven_at > time.time() - 600
    assert metric(c, "cairn_drill_duration_seconds", component="data", phase="restore") is not None
    # The status page and `cairnctl status` lead with the component: its
    # newest backup, its proven restore and the time that took.
    rc, out, err = c.ctl("status")
    row = [l for l in out.splitlines() if l.startswith("data ")]
    assert rc == 0 and row and "node-a" in row[0] and row[0].count("s ago") == 2 and "FAILED" not in row[0], out
    page = urllib.request.urlopen(c.http_url(), timeout=10).read().decode()
    assert page.index("Components") < page.index("Agents") and "Proven restorable" in page, page[:2000]
    # A drill is no restore: restore list leaves it out.
    rc, out, err = c.ctl("restore", "list")
    assert rc == 0 and did not in out, out


def test_a_flipped_byte_in_a_pack_fails_the_drill_naming_the_damaged_object(cluster, tmp_path):
    c = cluster
    files_rig(c, tmp_path)
    sid = backup(c, "--component", "data")
    pack = damage_biggest_pack(c)

    did, shown, _ = drill(c, sid, expect=1)
    assert lower_enum(shown["state"], "set_state_") == "failed", shown
    report, task = drill_report(shown)
    text = " ".join(r["detail"] for r in task.get("reasons", []))
    assert pack.name[:8] in text and "does not restore" in text, text
    rc, out, err = c.ctl("backup", "show", sid)
    assert rc == 0 and "DRILL FAILED" in out and "proven restorable" not in out, out
    rc, out, err = c.ctl("status")
    assert "LAST DRILL FAILED" in out and pack.name[:8] in out, out
    # Loud in the audit trail too: the drill's end names what failed.
    con = catalog(c)
    try:
        rows = con.execute("SELECT outcome, details FROM audit_outbox WHERE action = 'drill.finish' AND target = ?",
                           (f"drill:{did}",)).fetchall()
    finally:
        con.close()
    assert len(rows) == 1 and rows[0][0] == "failed" and pack.name[:8] in rows[0][1], rows
    assert list((tmp_path / "drills").iterdir()) == []


def test_a_drill_over_its_disk_budget_is_refused_before_restoring(cluster, tmp_path):
    c = cluster
    files_rig(c, tmp_path, disk_budget="16K")
    sid = backup(c, "--component", "data")
    did, shown, _ = drill(c, sid, expect=1)
    report, task = drill_report(shown)
    text = " ".join(r["detail"] for r in task.get("reasons", []))
    assert "disk_budget" in text and "nothing was restored" in text, text
    assert report["phases"] == {}, report  # not even the restore began
    assert not (tmp_path / "drills").exists() or list((tmp_path / "drills").iterdir()) == []


def etcd_rig(c, tmp_path, n_keys=3000, names=("m1", "m2", "m3"), **drill_extra):
    members = start_cluster(tmp_path, list(names))
    members[0].put_many(keys(n_keys))
    for i, m in enumerate(members):
        extra = drill_toml(tmp_path / "drills", **drill_extra) if i == 0 else ""
        c.add_agent(f"node-{i}", components=m.component_toml() + extra)
        c.enrol(f"node-{i}")
    return members


def live_state(members):
    return {m.name: (m.pid(), m.revision(), m.status()["header"]["member_id"]) for m in members}


def sandbox_processes(root):
    """PIDs of processes whose command line names the drill root."""
    out = []
    for d in pathlib.Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if str(root).encode() in (d / "cmdline").read_bytes():
                    out.append(int(d.name))
            except OSError:
                pass
    return out


def test_an_etcd_drill_starts_the_backup_in_a_sandbox_and_leaves_the_live_cluster_alone(cluster, tmp_path):
    c = cluster
    members = etcd_rig(c, tmp_path)
    try:
        rev = members[0].revision()
        original = members[0].get_all()
        sid = backup(c, "--component", "etcd")
        before = live_state(members)

        did, shown, _ = drill(c, sid, "--component", "etcd", "--on", "node-0")
        assert lower_enum(shown["state"], "set_state_") == "complete", shown
        report, task = drill_report(shown)
        checks = {x["name"]: x for x in report["checks"]}
        assert checks[f"keys at revision {rev}"]["found"] == 3000 and checks[f"keys at revision {rev}"]["ok"], checks
        assert checks[f"hashkv at revision {rev}"]["ok"], checks
        assert checks["etcd endpoint health"]["found"] == "healthy", checks
        assert set(report["phases"]) == {"restore", "start", "check"}, report

        # The live cluster: the same processes, members, revision and keys.
        assert live_state(members) == before
        assert members[0].revision() == rev and members[2].get_all() == original
        assert sandbox_processes(tmp_path / "drills") == []
        assert list((tmp_path / "drills").iterdir()) == []
        rc, out, err = c.ctl("backup", "show", sid)
        assert rc == 0 and "etcd (cluster " in out and "proven restorable at" in out, out
    finally:
        for m in members:
            m.stop()


def test_an_etcd_backup_with_authentication_on_is_drilled_with_the_drill_agents_credentials(cluster, tmp_path):
    """The backed-up cluster has users and `auth enable`; the restored server
    answers reads only to one of them. A drill agent without credentials says
    so (not that the backup is bad); one given a 0600 [drill] etcd_auth_file
    proves the set, keys and hash checked."""
    c = cluster
    (member,) = start_cluster(tmp_path, ["m1"])
    try:
        member.put_many(keys(300))
        rev = member.revision()
        member.enable_auth("s3cret-pw")
        auth = tmp_path / "etcd-auth"
        auth.write_text("root:s3cret-pw\n")
        auth.chmod(0o600)
        c.add_agent("node-0", components=member.component_toml(auth_file=auth) + drill_toml(tmp_path / "drills"))
        c.enrol("node-0")
        c.add_agent("node-1", components=drill_toml(tmp_path / "drills-1", etcd_auth_file=str(auth)))
        c.enrol("node-1")
        sid = backup(c, "--component", "etcd")

        did, shown, _ = drill(c, sid, "--component", "etcd", "--on", "node-0", expect=1)
        report, task = drill_report(shown)
        text = " ".join(r["detail"] for r in task.get("reasons", []))
        assert "authentication on" in text and "[drill] etcd_auth_file" in text, text
        assert "s3cret" not in json.dumps(shown)
        checks = {x["name"]: x for x in report["checks"]}
        assert checks["etcd endpoint health"]["ok"], checks  # the server started on the restored data

        did, shown, _ = drill(c, sid, "--component", "etcd", "--on", "node-1")
        assert lower_enum(shown["state"], "set_state_") == "complete", shown
        report, task = drill_report(shown)
        checks = {x["name"]: x for x in report["checks"]}
        assert checks[f"keys at revision {rev}"]["found"] == 300 and checks[f"hashkv at revision {rev}"]["ok"], checks
        assert "s3cret" not in json.dumps(shown) and "s3cret" not in c.logs()
    finally:
        member.stop()


def test_a_drill_server_the_memory_limit_kills_is_named_as_such_and_its_whole_log_kept(cluster, tmp_path, request):
    # The drill's etcd is a script that writes 400 log lines and then grows
    # past the sandbox's memory limit (a real cgroup OOM kill): the reason
    # must say how it ended and what to change, and the whole log must
    # outlive the sandbox (the reason can hold only its end).
    c = cluster
    # Where the drill's user (nobody) can run it: pytest's own directory is
    # root's alone, and a drill's server sees none of it.
    bindir = pathlib.Path(tempfile.mkdtemp(prefix="cairn-drill-bin-"))
    bindir.chmod(0o755)
    request.addfinalizer(lambda: shutil.rmtree(bindir, ignore_errors=True))
    server = bindir / "etcd-that-grows"
    server.write_text("#!/bin/sh\n"
                      "for i in $(seq 1 400); do echo \"drill server log line $i\"; done\n"
                      "exec python3 -c 'b = b\"x\" * (1 << 31)'\n")
    server.chmod(0o755)
    (member,) = etcd_rig(c, tmp_path, n_keys=200, names=("m1",), etcd=str(server), memory_max="256M")
    try:
        sid = backup(c, "--component", "etcd")
        did, shown, _ = drill(c, sid, "--component", "etcd", expect=1)
        assert lower_enum(shown["state"], "set_state_") == "failed", shown
        report, task = drill_report(shown)
        text = " ".join(r["detail"] for r in task.get("reasons", []))
        assert "was killed by signal 9 (SIGKILL)" in text and "memory limit killed it (256 MiB)" in text, text
        assert "raise [drill] memory_max" in text and "drill server log line 400" in text, text
        assert "drill server log line 1\n" not in text, text  # the reason holds the end only
        kept = [p for p in (tmp_path / "drills").iterdir() if p.name.startswith("failed-etcd-")]
        assert len(kept) == 1 and str(kept[0]) in text, (kept, text)
        log = kept[0].read_text()
        assert "drill server log line 1\n" in log and "drill server log line 400\n" in log, log[:300]
        # The sandbox itself went with the drill; the live member is untouched.
        assert [p.name for p in (tmp_path / "drills").iterdir()] == [kept[0].name]
        assert sandbox_processes(tmp_path / "drills") == []
        assert member.get_all() == keys(200)
    finally:
        member.stop()


def test_the_drill_agent_killed_mid_drill_leaves_no_sandbox_once_it_restarts(cluster, tmp_path):
    c = cluster
    members = etcd_rig(c, tmp_path, n_keys=2000)
    try:
        sid = backup(c, "--component", "etcd")
        rc, out, err = c.ctl("drill", "run", sid, "--on", "node-0")
        assert rc == 0, out + err
        did = drill_id(out)
        root = tmp_path / "drills"
        # The sandbox's etcd is up: the agent is killed under it.
        c.wait_for("the sandbox's etcd running", lambda: [p for p in sandbox_processes(root)
                                                          if b"--listen-client-urls" in pathlib.Path(f"/proc/{p}/cmdline").read_bytes()],
                   timeout=120, interval=0.05)
        agent = c.agents["node-0"]
        agent.expect_dead = True
        agent.kill(signal.SIGKILL)
        # Its children die with it (PR_SET_PDEATHSIG): nothing of the drill runs on.
        c.wait_for("the sandbox's processes gone", lambda: sandbox_processes(root) == [], timeout=20)
        assert any(p.name.startswith("drill-") for p in root.iterdir()), "the sandbox should still be on disk"
        agent.expect_dead = False
        agent.start()
        # (The controller may still count the killed agent's session as connected.)
        c.wait_for("the sandbox removed by the restarted agent", lambda: list(root.iterdir()) == [], timeout=60)
        c.wait_for("node-0 connected again", lambda: c.connected("node-0"), timeout=60)
        shown = c.wait_for("the drill ended", lambda: (lambda s: s if lower_enum(s["state"], "set_state_") != "running" else None)(
            c.json("drill", "show", did)), timeout=120)
        assert lower_enum(shown["state"], "set_state_") == "failed", shown
        rc, out, err = c.ctl("backup", "show", sid)
        assert "DRILL FAILED" in out, out
    finally:
        for m in members:
            m.stop()


def test_a_policy_drills_its_newest_set_and_retention_keeps_the_newest_proven_one(cluster, tmp_path):
    c = cluster
    files_rig(c, tmp_path)
    c.ok("policy", "add", "often", "--schedule", "@every 2s", "--component", "data", "--keep-last", "1",
         "--drill", "@every 3s")

    c.wait_for("a drill the policy started, proven", lambda: first_proven_drill(c), timeout=90)
    # No more drills: newer sets are never proven, so the newest proven one
    # must stay. Drills ordered before still end (meanwhile the set each
    # reads counts as proven: retention runs every 2 s here).
    c.ok("policy", "edit", "often", "--drill", "")
    c.wait_for("no drill running", lambda: all(
        lower_enum(d["state"], "set_state_") != "running" for d in c.json("drill", "list").get("restores", [])),
        timeout=120)
    proven = [d for d in c.json("drill", "list").get("restores", []) if lower_enum(d["state"], "set_state_") == "complete"]
    created = {d["backup_set_id"]: int(c.json("backup", "show", d["backup_set_id"])["created_at"]) for d in proven}
    proven_set = max(created, key=created.get)
    first = {"created_at": created[proven_set]}
    assert c.json("backup", "show", proven_set).get("policy") == "often"
    for set_id in created:  # no proven set was expired while its drill ran
        shown = c.json("backup", "show", set_id)
        expired = int(shown.get("expired_at", 0))
        assert not expired or expired >= int(max(d["finished_at"] for d in proven if d["backup_set_id"] == set_id)), shown

    def newer_expired():
        sets = c.json("backup", "list").get("sets", [])
        newer = [s for s in sets if s.get("policy") == "often" and int(s["created_at"]) > int(first["created_at"])
                 and lower_enum(s["state"], "set_state_") == "complete"]
        return newer if len([s for s in newer if int(s.get("expired_at", 0))]) >= 2 else None
    c.wait_for("newer sets of the policy expired by keep-last 1", newer_expired, timeout=90)
    shown = c.json("backup", "show", proven_set)
    assert int(shown.get("expired_at", 0)) == 0, f"the newest proven set was expired: {shown}"
    rc, out, err = c.ctl("policy", "show", "often")
    assert rc == 0 and "the newest proven set of each component is kept" in out, out
    c.ok("policy", "pause", "often")


def test_a_drill_the_fleet_cannot_run_is_refused_with_the_reason(cluster, tmp_path):
    c = cluster
    # node-b runs no drills; node-a does, for files but not for a component whose driver has no drill yet.
    c.add_agent("node-a", files={"a": b"alpha"}, components=drill_toml(tmp_path / "drills"))
    c.add_agent("node-b", files={"b": b"beta"})
    c.enrol("node-a")
    c.enrol("node-b")
    sid = backup(c, "--component", "data")
    rc, out, err = c.ctl("drill", "run", sid, "--on", "node-b")
    assert rc != 0 and "cannot run this drill now" in err and "[drill]" in err, out + err
    rc, out, err = c.ctl("drill", "run", "--latest", "--component", "nothing-like-it")
    assert rc != 0 and "no complete or partial backup set" in err, out + err
    rc, out, err = c.ctl("drill", "run", sid, "--latest")
    assert rc != 0 and "not both" in err, out + err
    # Without --on the drill goes to the agent that can run it.
    did, shown, _ = drill(c, sid)
    assert {t["agent_name"] for t in shown["tasks"]} == {"node-a"}, shown
    assert len(shown["tasks"]) == 2, shown  # node-a's and node-b's snapshots, each proven


def test_a_zookeeper_drill_replays_the_ensembles_backup_in_a_standalone_sandbox(cluster, tmp_path):
    from servers_zookeeper import ensemble
    from test_zookeeper import create, tree
    c = cluster
    members = ensemble(tmp_path)
    for m in members:
        m.start()
    try:
        for m in members:
            m.wait_serving(timeout=120)
        create(members[0], tree())
        for i, m in enumerate(members):
            c.add_agent(f"node-{i + 1}", components=m.component() + (drill_toml(tmp_path / "drills") if i == 0 else ""))
            c.enrol(f"node-{i + 1}")
        sid = backup(c, "--component", "zookeeper")
        before = {m.myid: (m.pid(), m.srvr().get("Mode")) for m in members}

        did, shown, _ = drill(c, sid, "--component", "zookeeper", "--on", "node-1")
        report, task = drill_report(shown)
        checks = {x["name"]: x for x in report["checks"]}
        assert checks["ZooKeeper serving (standalone)"]["ok"] and checks["zxid reached"]["ok"], checks
        assert checks["znodes"]["found"] >= len(tree()), checks
        assert set(report["phases"]) == {"restore", "start", "check"}, report
        # The ensemble: the same processes in the same roles, the tree as it was.
        assert {m.myid: (m.pid(), m.srvr().get("Mode")) for m in members} == before
        assert sandbox_processes(tmp_path / "drills") == [] and list((tmp_path / "drills").iterdir()) == []
    finally:
        for m in members:
            m.stop()


def test_a_prometheus_drill_opens_the_backed_up_tsdb_and_answers_for_every_block(cluster, tmp_path):
    from servers_prometheus import Prometheus
    c = cluster
    prom = Prometheus(tmp_path / "prometheus")
    prom.backfill()  # persisted blocks three hours back
    prom.start()
    try:
        c.add_agent("node-a", components=prom.component_toml() + drill_toml(tmp_path / "drills"))
        c.enrol("node-a")
        sid = backup(c, "--component", "prometheus")
        recorded = json.loads([t for t in c.json("backup", "show", sid)["tasks"]][0]["component_metadata"])
        assert recorded["blocks"] >= 1, recorded
        pid = prom.pid()

        did, shown, _ = drill(c, sid, "--component", "prometheus")
        report, task = drill_report(shown)
        checks = {x["name"]: x for x in report["checks"]}
        assert checks["blocks loaded"]["found"] == recorded["blocks"] and checks["blocks loaded"]["ok"], checks
        assert checks["oldest sample (ms)"]["found"] == recorded["min_time"], checks
        assert checks["series answering a query in the newest recorded hour"]["found"] >= 20, checks
        # The live server: the same process, still answering on its own port.
        assert prom.pid() == pid
        prom.wait_ready(timeout=10)
        assert sandbox_processes(tmp_path / "drills") == [] and list((tmp_path / "drills").iterdir()) == []
    finally:
        prom.stop()


def test_a_haproxy_drill_starts_the_restored_configuration_confined_and_leaves_the_live_one_alone(cluster, tmp_path):
    """The restored configuration (same paths, same addresses and ports as the
    live one, same stats socket path) is checked and started with the sandbox
    as its whole filesystem, in the drill's own network namespace: the saved
    runtime state comes back there and is checked, while the live haproxy
    keeps its PID, its socket, its listeners and its files. A configuration
    `haproxy -c` refuses, and one that loads Lua, each fail the drill with
    their reason; the Lua is never run."""
    from servers_haproxy import Haproxy, free_port, make_certificate
    from test_haproxy import component_toml, tree, write_config
    c = cluster
    etc = tmp_path / "haproxy" / "etc"
    (etc / "certs").mkdir(parents=True)
    h = Haproxy(tmp_path / "haproxy", [etc / "haproxy.cfg", etc / "conf.d"])
    make_certificate(etc / "certs" / "site.pem", "site.example")
    http_port = free_port()
    write_config(etc, http_port, free_port(), h.socket)
    staging = tmp_path / "staging"
    staging.mkdir()
    h.start()
    try:
        c.add_agent("node-a", components=component_toml(h, etc, staging) + drill_toml(tmp_path / "drills"))
        c.enrol("node-a")
        h.ok("set server app/s1 state maint")
        h.ok("set server app/s2 weight 7")
        h.ok("set table app key 10.1.2.3 data.gpc0 42")
        h.ok(f"add map {etc}/hosts.map shop.example.com app")
        sid = backup(c, "--component", "lb")
        # The live one moves on after the backup: the drill must show the backup's state, not this.
        h.ok("set server app/s1 state ready")
        h.ok("set server app/s2 weight 3")
        pid, sock_inode, files = h.pid(), os.stat(h.socket).st_ino, tree(etc)
        servers = h.servers()

        did, shown, _ = drill(c, sid, "--component", "lb")
        report, task = drill_report(shown)
        checks = {x["name"]: x for x in report["checks"]}
        assert checks["haproxy -c"]["found"] == "valid", checks
        assert checks["HAProxy serving"]["ok"], checks
        assert checks["frontends open"]["found"] == 1 and checks["frontends open"]["ok"], checks
        assert checks["servers' forced state and weight as recorded"]["found"] == 3, checks
        assert checks["map entries as recorded"]["found"] == 3 and checks["map entries as recorded"]["ok"], checks
        assert checks["stick-table entries as recorded"]["found"] == 1, checks
        assert checks["certificates loaded"]["found"] == 1 and checks["certificates loaded"]["ok"], checks
        assert all(x["ok"] for x in report["checks"]), report
        assert set(report["phases"]) == {"restore", "start", "check"}, report
        # The live haproxy: the same process, the same socket (the sandboxed
        # one bound the same path inside its own root), its state, its files,
        # its port still its own.
        assert h.pid() == pid and os.stat(h.socket).st_ino == sock_inode
        assert h.servers() == servers and tree(etc) == files
        with socket.create_connection(("127.0.0.1", http_port), timeout=5):
            pass
        assert sandbox_processes(tmp_path / "drills") == [] and list((tmp_path / "drills").iterdir()) == []
        rc, out, err = c.ctl("backup", "show", sid)
        assert rc == 0 and "proven restorable at" in out, out

        # A configuration haproxy refuses (bytes intact, wrong for the component).
        cfg = etc / "haproxy.cfg"
        good = cfg.read_text()
        cfg.write_text(good.replace("default_backend app", "default_backend app\n    no-such-keyword here"))
        bad_sid = backup(c, "--component", "lb")
        did, shown, out = drill(c, bad_sid, "--component", "lb", expect=1)
        report, task = drill_report(shown)
        checks = {x["name"]: x for x in report["checks"]}
        assert not checks["haproxy -c"]["ok"] and "HAProxy serving" not in checks, checks
        # The reason is HAProxy's line naming the problem, not its summary.
        found = checks["haproxy -c"]["found"]
        assert "no-such-keyword" in found and "haproxy.cfg:" in found and "found in configuration" not in found, found
        assert report["verdict"] == "failed", report
        rc, out, err = c.ctl("backup", "show", bad_sid)
        assert "DRILL FAILED" in out and "haproxy -c" in out, out

        # Lua in the configuration: refused before haproxy reads it.
        marker = tmp_path / "lua-ran"
        (etc / "probe.lua").write_text(f'local f = io.open("{marker}", "w")\nif f then f:write("ran") f:close() end\n')
        cfg.write_text(good.replace("global\n", f"global\n    lua-load {etc}/probe.lua\n", 1))
        lua_sid = backup(c, "--component", "lb")
        did, shown, out = drill(c, lua_sid, "--component", "lb", expect=1)
        report, task = drill_report(shown)
        checks = {x["name"]: x for x in report["checks"]}
        key = "runs no code of its own (Lua, external checks, programs, SSL engines)"
        assert not checks[key]["ok"] and "lua-load" in checks[key]["found"], checks
        assert "haproxy -c" not in checks and not marker.exists(), checks
        assert report["verdict"] == "not_run", report  # no drill can prove it: not a bad backup
        # The same through a keyword HAProxy builds from a variable the
        # configuration sets: refused too (the check reads what HAProxy will).
        cfg.write_text(good.replace("global\n", f'global\n    setenv LL lua-load\n    "${{LL}}" {etc}/probe.lua\n', 1))
        var_sid = backup(c, "--component", "lb")
        did, shown, out = drill(c, var_sid, "--component", "lb", expect=1)
        report, task = drill_report(shown)
        checks = {x["name"]: x for x in report["checks"]}
        assert not checks[key]["ok"] and "LL" in checks[key]["found"], checks
        assert "haproxy -c" not in checks and not marker.exists(), checks
        assert h.pid() == pid and os.stat(h.socket).st_ino == sock_inode
        assert list((tmp_path / "drills").iterdir()) == []
    finally:
        h.stop()


def _wal_names(c):
    snaps = json.loads(c.ok("repo", "snapshots", "--json", "--repo", c.repo, "--password-file", c.repo_pass))
    return {t[4:] for s in snaps if "wal" in (s.get("tags") or []) for t in s["tags"] if t.startswith("wal:")}


def test_a_postgresql_drill_recovers_the_base_backup_confined_and_amcheck_finds_a_corrupt_table(
        cluster, postgres_server, tmp_path):  # noqa: F811
    """A base backup of a live PostgreSQL 15 (pgbench data, a second
    database) is recovered in the sandbox from the repository's WAL to its
    consistent point, promoted there as the postgres user, and checked
    (system identifier, LSN, databases, pg_amcheck); the live server keeps its
    postmaster, rows and archive (the drill's server archives nothing, so no
    timeline 2 appears). Then a table's page is damaged on disk before a
    backup: that backup restores byte for byte, and the drill fails naming
    the table, since a backup of a corrupt database does not restore a
    working one."""
    c, pg = cluster, postgres_server
    pg.pgbench("-i", "-s", "1", "-q")
    pg.sql("CREATE TABLE marks (id int PRIMARY KEY, note text)")
    pg.sql("INSERT INTO marks SELECT g, repeat('x', 200) FROM generate_series(1, 2000) g")
    pg.sql("CREATE DATABASE second")
    pg.sql("CREATE TABLE kept (x int)", db="second")
    pg.sql("INSERT INTO kept SELECT generate_series(1, 100)", db="second")
    c.add_agent("node-a", components=pg.component_toml() + drill_toml(tmp_path / "drills"))
    c.enrol("node-a")
    sid = backup(c, "--component", "pg")
    postmaster = (pg.data / "postmaster.pid").read_text().split()[0]
    wal_before = _wal_names(c)

    did, shown, _ = drill(c, sid, "--component", "pg")
    assert lower_enum(shown["state"], "set_state_") == "complete", shown
    report, task = drill_report(shown)
    checks = {x["name"]: x for x in report["checks"]}
    assert all(x["ok"] for x in report["checks"]), report["checks"]
    meta = json.loads(c.json("backup", "show", sid)["tasks"][0]["component_metadata"])
    assert checks["database system identifier"]["found"] == meta["system_identifier"], checks
    assert checks["every database the backup recorded"]["found"] == ["postgres", "second", "template1"], checks
    amcheck = [x for x in report["checks"] if x["name"].startswith("pg_amcheck --all")]
    assert amcheck and amcheck[0]["found"] == "no corruption" and "checksums on" in amcheck[0]["name"], report["checks"]
    assert checks["PostgreSQL recovered to the backup's consistent point and promoted"]["ok"], checks
    assert set(report["phases"]) == {"restore", "start", "check"}, report
    rc, out, err = c.ctl("backup", "show", sid)
    assert rc == 0 and "proven restorable at" in out, out

    # The live server: the same postmaster, its rows, not a standby; the
    # drill's promoted server archived nothing (no new timeline).
    assert (pg.data / "postmaster.pid").read_text().split()[0] == postmaster
    assert pg.value("SELECT count(*) FROM marks") == "2000" and pg.value("SELECT pg_is_in_recovery()") == "f"
    time.sleep(2)
    after = _wal_names(c)
    assert not [n for n in after - wal_before if not n.startswith("00000001")], sorted(after - wal_before)
    assert sandbox_processes(tmp_path / "drills") == []
    assert list((tmp_path / "drills").iterdir()) == []

    # A damaged page in 'marks' (checksums on): written with the server
    # stopped, after a checkpoint, where nothing rewrites it.
    rel = pg.value("SELECT pg_relation_filepath('marks')")
    pg.sql("CHECKPOINT")
    pg.stop()
    with open(pg.data / rel, "r+b") as f:
        f.seek(8192 * 3 + 4000)
        f.write(os.urandom(64))
    pg.start()
    sid2 = backup(c, "--component", "pg")
    did2, shown2, _ = drill(c, sid2, "--component", "pg", expect=1)
    assert lower_enum(shown2["state"], "set_state_") == "failed", shown2
    report2, task2 = drill_report(shown2)
    bad = [x for x in report2["checks"] if not x["ok"]]
    assert [x["name"] for x in bad] and all(x["name"].startswith("pg_amcheck --all") for x in bad), report2["checks"]
    text = " ".join(r["detail"] for r in task2.get("reasons", []))
    assert "pg_amcheck" in text and "public.marks" in text and "invalid page in block 3" in text, text
    rc, out, err = c.ctl("backup", "show", sid2)
    assert rc == 0 and "DRILL FAILED" in out, out
    assert list((tmp_path / "drills").iterdir()) == []


def test_a_logical_postgresql_backup_is_drilled_into_a_fresh_server_with_its_roles_and_grants(
        cluster, postgres_server, tmp_path):  # noqa: F811
    """A logical backup (pg_dumpall --globals-only, pg_dump -Fc of each
    database) is replayed into a server initdb made in the sandbox: every
    database restored from its dump (as a restore runs pg_restore), every
    recorded database there, pg_amcheck clean, and no secret in the log."""
    c, pg = cluster, postgres_server
    pg.make_shop_databases()
    c.add_agent("node-a", components=pg.component_toml() + drill_toml(tmp_path / "drills"))
    c.enrol("node-a")
    sid = backup(c, "--component", "pg", "--mode", "logical")
    did, shown, _ = drill(c, sid, "--component", "pg")
    assert lower_enum(shown["state"], "set_state_") == "complete", shown
    report, task = drill_report(shown)
    assert all(x["ok"] for x in report["checks"]), report["checks"]
    checks = {x["name"]: x for x in report["checks"]}
    for db in ("shop", "Odd Name", "postgres"):
        assert checks[f"database '{db}' restored from its dump"]["found"] == "restored", checks
    assert checks["every database the backup recorded"]["found"] == ["Odd Name", "postgres", "shop"], checks
    assert checks["roles and tablespaces (globals.sql) replayed"]["ok"], checks
    assert list((tmp_path / "drills").iterdir()) == []
    assert "r-secret" not in (c.agent_dirs["node-a"]["dir"] / "agent.log").read_text(errors="replace")


def test_a_postgresql_safety_backup_of_a_stopped_server_is_drilled(cluster, postgres_server, tmp_path):  # noqa: F811
    """A restore of a stopped server first copies its files as they are (a
    cold safety backup): that copy is drilled too, the server started on it
    in the sandbox, then pg_amcheck; the restored live server runs on."""
    c, pg = cluster, postgres_server
    pg.pgbench("-i", "-s", "1", "-q")
    c.add_agent("node-a", components=pg.component_toml() + drill_toml(tmp_path / "drills"))
    c.enrol("node-a")
    sid = backup(c, "--component", "pg")
    pg.sql("CREATE TABLE after_backup (x int)")
    pg.sql("INSERT INTO after_backup VALUES (42)")
    pg.stop()
    rc, out, err = c.ctl("restore", sid, "--component", "pg", "--to-immediate", "--wait", timeout=900)
    assert rc == 0, f"restore exited {rc}\n{out}\n{err}\n{c.logs()}{pg.log_tail()}"
    safety = c.json("restore", "show", restore_id(out))["safety_backup_set_id"]
    snap_id = c.json("backup", "show", safety)["tasks"][0]["snapshot_id"]
    snaps = json.loads(c.ok("repo", "snapshots", "--json", "--repo", c.repo, "--password-file", c.repo_pass))
    assert [s["component"]["mode"] for s in snaps if s["id"] == snap_id] == ["cold"], snap_id

    did, shown, _ = drill(c, safety, "--component", "pg")
    assert lower_enum(shown["state"], "set_state_") == "complete", shown
    report, task = drill_report(shown)
    names = [x["name"] for x in report["checks"]]
    assert all(x["ok"] for x in report["checks"]), report["checks"]
    assert "PostgreSQL recovered the stopped server's files and serves" in names, names
    assert any(n.startswith("pg_amcheck --all") for n in names), names
    assert pg.value("SELECT pg_is_in_recovery()") == "f"
    assert pg.value("SELECT to_regclass('after_backup') IS NULL") == "t"  # the live server: on the backup's data
    assert list((tmp_path / "drills").iterdir()) == []


def test_a_kafka_drill_starts_every_brokers_snapshot_as_one_sandbox_cluster(cluster, tmp_path):
    """Three combined KRaft nodes, RF=3, each backed up by its agent: the
    drill restores all three brokers' snapshots side by side on the drill
    agent and starts them as one cluster in the sandbox's network namespace
    (their node ids and roles, the drill's own listeners and voters). Every
    broker registers, every partition has a leader, the cluster id and each
    partition's high watermark are the recorded ones, and every record is
    read back with its CRC checked. Each broker's task reads proven; the live
    brokers keep their processes and records. One broker's snapshot drilled
    alone fails: one of three voters forms no quorum."""
    from servers_kafka import KRAFT_VERSION, KafkaCluster, consume_checksums, lib_dir, produce_keyed, require, wait_isr
    require(KRAFT_VERSION)
    c = cluster
    kc = KafkaCluster.kraft(tmp_path / "kc", n=3, segment_bytes=1 << 20).start()
    try:
        kc.create_topic("orders", partitions=3, rf=3)
        want = produce_keyed(kc.bootstrap, "orders", 3, 6000, 300)
        wait_isr(kc.bootstrap, "orders")
        for b in kc.brokers:
            extra = drill_toml(tmp_path / "drills", memory_max="3G", cpus=2, java_heap_mb=256, start_timeout_seconds=240,
                               kafka_libs_dir=lib_dir(KRAFT_VERSION)) if b.node_id == 1 else ""
            c.add_agent(f"broker-{b.node_id}", components=b.component_toml() + extra)
            c.enrol(f"broker-{b.node_id}")
        sid = backup(c, "--component", "kafka")
        before = kc.pids()

        did, shown, _ = drill(c, sid, "--component", "kafka", "--on", "broker-1")
        assert lower_enum(shown["state"], "set_state_") == "complete", shown
        assert len(shown["tasks"]) == 3, shown
        reports = [json.loads(t["component_metadata"])["drill"] for t in shown["tasks"]]
        ran = [r for r in reports if "shared_with_task" not in r]
        assert len(ran) == 1 and all(r["brokers"] == 3 for r in reports), reports  # one cluster, reported thrice
        print(json.dumps(ran[0], indent=1))
        checks = {x["name"]: x for x in ran[0]["checks"]}
        assert all(x["ok"] for x in checks.values()), checks
        assert checks["every broker registered and every partition led"]["found"] == "serving", checks
        assert checks["cluster id"]["found"] == kc.cluster_id, checks
        read = checks["every record read to the high watermark, CRCs checked"]["found"]
        assert int(read.split()[0]) >= 6000, read
        assert set(ran[0]["phases"]) == {"restore", "start", "check"}, ran[0]

        # The live cluster: the same processes, every record as produced.
        assert kc.pids() == before
        assert consume_checksums(kc.bootstrap, "orders") == want
        assert sandbox_processes(tmp_path / "drills") == []
        assert list((tmp_path / "drills").iterdir()) == []
        rc, out, err = c.ctl("backup", "show", sid)
        assert rc == 0 and out.count("proven restorable at") >= 3, out

        # One broker of three alone cannot form the quorum: that drill fails saying so.
        did, shown, _ = drill(c, sid, "--component", "kafka", "--node", "broker-2", "--on", "broker-1", expect=1)
        (task,) = shown["tasks"]
        text = " ".join(r["detail"] for r in task.get("reasons", []))
        assert "quorum voters among the set's brokers" in text and "a majority of 3" in text, text
        assert sandbox_processes(tmp_path / "drills") == [] and list((tmp_path / "drills").iterdir()) == []
    finally:
        kc.stop()


def test_a_kafka_drill_in_zookeeper_mode_starts_the_sets_zookeeper_beside_the_broker(cluster, tmp_path):
    """A broker in ZooKeeper mode keeps its topics' metadata in ZooKeeper.
    Backed up without its ensemble, its drill is refused naming what is
    missing, and a policy's scheduled drill of such sets leaves the broker out
    (audited as drill.skipped, naming it) and still proves the files. Backed
    up with its ensemble in one set, the drill of the broker alone starts the
    set's ZooKeeper snapshot in the sandbox, waits until the backed-up
    broker's registration has expired there, starts the broker on Kafka 3.9's
    jars (declared beside Kafka 4's) and reads every record back; the live
    ZooKeeper and broker keep their processes and records."""
    from servers_kafka import KRAFT_VERSION, ZK_VERSION, consume_checksums, lib_dir, produce_keyed, require
    require(KRAFT_VERSION)
    c = cluster
    with zookeeper_mode_broker(tmp_path) as (zk, k):
        c.add_agent("broker", files={"a": b"alpha"},
                    components=zk.component() + k.component_toml() + drill_toml(
                        tmp_path / "drills", memory_max="2G", java_heap_mb=256, start_timeout_seconds=120,
                        kafka_libs_dir=lib_dir(KRAFT_VERSION), kafka_zookeeper_libs_dir=lib_dir(ZK_VERSION)))
        c.enrol("broker")
        k.create_topic("orders", partitions=2, rf=1)
        want = produce_keyed(k.bootstrap, "orders", 2, 3000, 200)
        live_id = dict(line.split("=", 1) for line in (k.log_dir / "meta.properties").read_text().splitlines()
                       if "=" in line and not line.startswith("#"))["cluster.id"]

        alone = backup(c, "--component", "kafka")
        rc, out, err = c.ctl("drill", "run", alone, "--component", "kafka")
        assert rc != 0 and "ZooKeeper mode" in err and "holds no 'zookeeper' snapshot" in err, out + err
        assert "dr-" not in c.ok("drill", "list"), "a drill was created"

        both = backup(c, "--component", "zookeeper", "--component", "kafka")
        before = (zk.pid(), k.pid())
        did, shown, _ = drill(c, both, "--component", "kafka", "--on", "broker")
        report, task = drill_report(shown)
        assert task["component"] == "kafka", task
        print(json.dumps(report, indent=1))
        checks = {x["name"]: x for x in report["checks"]}
        assert all(x["ok"] for x in checks.values()), checks
        assert checks["the set's ZooKeeper replayed to its recorded zxid"]["ok"], checks
        # The broker ran when it was backed up: its registration was in the restored ZooKeeper, and expired there.
        expired = checks["the backed-up brokers' registrations expired in the restored ZooKeeper"]["found"]
        assert expired.startswith("none left (") and "/kafka/brokers/ids/1" in expired, expired
        assert checks["cluster id"]["found"] == live_id, checks
        read = checks["every record read to the high watermark, CRCs checked"]["found"]
        assert int(read.split()[0]) >= 3000, read
        assert (zk.pid(), k.pid()) == before
        assert consume_checksums(k.bootstrap, "orders") == want
        assert sandbox_processes(tmp_path / "drills") == [] and list((tmp_path / "drills").iterdir()) == []

        c.ok("policy", "add", "both", "--schedule", "@every 3s", "--component", "kafka", "--component", "data",
             "--drill", "@every 4s")
        d = c.wait_for("the policy's drill of the files, proven", lambda: first_proven_drill(c, skip=(did,)), timeout=90)
        shown = c.json("drill", "show", d["restore_id"])
        assert {t["component"] for t in shown["tasks"]} == {"data"}, shown
        c.ok("policy", "pause", "both")
        con = catalog(c)
        try:
            rows = con.execute("SELECT details FROM audit_outbox WHERE action = 'drill.skipped'").fetchall()
        finally:
            con.close()
        assert rows and "ZooKeeper mode" in rows[0][0] and "'kafka'" in rows[0][0], rows
