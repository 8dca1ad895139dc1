"""The etcd driver through the controller, against real etcd members: a
backup set of 10,000 keys, the keys deleted and changed, a restore, and every
key and value back at the revision the snapshot recorded; the same over TLS
with client certificates and authentication; etcd killed mid-snapshot fails
the task and stores nothing."""
import json
import os
import subprocess
import time
import urllib.request

import pytest

from cluster import backup_set_id, cluster, lower_enum, restore_id  # noqa: F401  (cluster is a fixture)
from servers_etcd import EtcdMember, Tls


def keys(n, tag="v"):
    return {f"/registry/k{i:05d}": f"{tag}-{i}-" + "x" * (i % 50) for i in range(n)}


def start_agent_with(c, member, name="node-a", auth_file=None):
    c.add_agent(name, components=member.component_toml(auth_file=auth_file))
    c.enrol(name)


def backup(c, name="node-a"):
    rc, out, err = c.ctl("backup", "create", "--component", "etcd", "--node", name, "--wait")
    assert rc == 0, f"backup exited {rc}\n{out}\n{err}\n{c.logs()}"
    return backup_set_id(out), c.json("backup", "show", backup_set_id(out))


def restore(c, sid, name="node-a", expect=0):
    rc, out, err = c.ctl("restore", sid, "--component", "etcd", "--node", name, "--wait", timeout=300)
    assert rc == expect, f"restore exited {rc}, expected {expect}\n{out}\n{err}\n{c.logs()}"
    return c.json("restore", "show", restore_id(out))


def find_metadata(obj):
    """The etcd metadata recorded with the snapshot, wherever `backup show --json` puts it."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in ("component_metadata", "metadata"):
                if isinstance(v, str):
                    try:
                        v = json.loads(v)
                    except ValueError:
                        continue
                if isinstance(v, dict) and "etcd_version" in v:
                    return v
            found = find_metadata(v)
            if found:
                return found
    elif isinstance(obj, list):
        for v in obj:
            found = find_metadata(v)
            if found:
                return found
    return None


def repo_metadata(c, shown):
    """The metadata stored in the snapshot itself (Snapshot 'component'), read with `repo snapshots`."""
    ids = {t.get("snapshot_id") for t in shown.get("tasks", []) if t.get("snapshot_id")}
    snaps = json.loads(c.ok("repo", "snapshots", "--repo", c.repo, "--password-file", c.repo_pass, "--json"))
    for s in snaps:
        if s.get("id") in ids and isinstance(s.get("component"), dict):
            return s["component"]
    return None


def round_trip(c, member, n_keys, auth_file=None):
    original = keys(n_keys)
    member.put_many(original)
    rev = member.revision()
    start_agent_with(c, member, auth_file=auth_file)

    sid, shown = backup(c)
    meta = find_metadata(shown) or repo_metadata(c, shown)
    assert meta, f"no etcd metadata in 'backup show --json' nor in the snapshot: {json.dumps(shown)[:3000]}"
    assert meta["revision"] == rev and meta["revision_end"] == rev, meta
    assert meta["key_count"] == n_keys, meta
    assert meta["etcd_version"] == "3.4.23" and len(meta["sha256"]) == 64, meta
    assert [m["name"] for m in meta["members"]] == [member.name], meta
    assert meta["member_id"] and meta["cluster_id"], meta
    # The bytes the stream read are counted, as a file's are (issue 32: etcd's were 0).
    def counted():
        text = urllib.request.urlopen(c.http_url() + "metrics", timeout=10).read().decode()
        return [float(l.split()[-1]) for l in text.splitlines()
                if l.startswith("cairn_backup_bytes{") and 'component="etcd"' in l] or None
    got = c.wait_for("etcd's backup bytes in /metrics", counted, timeout=20)
    db = os.path.getsize(member.data_dir / "member" / "snap" / "db")
    assert got[0] >= db // 2, (got, db)

    # Damage: a thousand keys gone, a hundred changed, one new.
    member.delete("/registry/k00", prefix=True)  # k00000..k00999
    member.put_many({f"/registry/k{i:05d}": "changed" for i in range(5000, 5100)})
    member.put_many({"/registry/new": "not in the snapshot"})
    assert member.get_all() != original

    r = restore(c, sid)
    assert lower_enum(r.get("state", ""), "set_state_") == "complete", r
    assert member.get_all() == original, "the restored keys differ from the ones backed up"
    assert member.revision() == rev, "the restored member is not at the revision the snapshot recorded"
    # The old data dir is kept aside.
    aside = [p for p in member.data_dir.parent.iterdir() if p.name.startswith("data.cairn-old-")]
    assert len(aside) == 1 and (aside[0] / "member").is_dir(), list(member.data_dir.parent.iterdir())


def test_etcd_single_member_round_trip(cluster, tmp_path):
    member = EtcdMember(tmp_path, "etcd-a").start()
    try:
        round_trip(cluster, member, 10_000)
    finally:
        member.stop()


def test_a_restore_whose_snapshot_outgrew_the_live_database_is_refused_before_etcd_stops(cluster, tmp_path):
    """The data dir on a small filesystem (a tmpfs of the test's own); the
    backup holds 24 MiB of values, and the live database was then emptied,
    compacted and defragmented. The data step needs the snapshot twice (the
    file and the data dir etcdctl makes from it): the preflight weighs the
    snapshot, not the small live database, and refuses before any member is
    stopped. With the space freed, the same restore brings the keys back."""
    disk = tmp_path / "small-disk"
    disk.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512m", "cairn-test", str(disk)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.decode().strip()}")
    c = cluster
    member = EtcdMember(disk, "etcd-a").start()
    try:
        big = {f"/registry/big{i:04d}": f"{i}-" + "v" * 8000 for i in range(3000)}
        member.put_many(big, batch=200)
        start_agent_with(c, member)
        sid, shown = backup(c)
        snaps = json.loads(c.ok("repo", "snapshots", "--repo", c.repo, "--password-file", c.repo_pass, "--json"))
        ids = {t.get("snapshot_id") for t in shown["tasks"]}
        need = int(next(s for s in snaps if s["id"] in ids)["summary"]["bytes_total"])
        assert need > 20 << 20, need
        member.delete("/registry/", prefix=True)
        member.ctl("compact", str(member.revision()))
        member.ctl("defrag")
        member.put_many({"/registry/after-backup": "kept"})
        st = os.statvfs(disk)
        free = st.f_bavail * st.f_frsize
        filler = disk / "filler"
        with open(filler, "wb") as f:  # room for one copy of the snapshot, not two
            f.write(b"\0" * max(0, free - need - need // 2))
        pid = member.pid()

        rc, out, err = c.ctl("restore", sid, "--component", "etcd", "--node", "node-a", "--wait", timeout=300)
        assert rc != 0, out
        shown = c.json("restore", "show", restore_id(out))
        text = json.dumps(shown)
        assert lower_enum(shown.get("state", ""), "set_state_") == "failed", text
        assert "not enough space in" in text and "must stay free" in text and "no_space" in text.lower(), text
        assert member.pid() == pid, "etcd was stopped although the restore could not fit"
        assert member.get_all() == {"/registry/after-backup": "kept"}
        left = [p.name for p in member.data_dir.parent.iterdir() if ".cairn-restore" in p.name or ".cairn-old-" in p.name]
        assert not left, left

        filler.unlink()
        r = restore(c, sid)
        assert lower_enum(r.get("state", ""), "set_state_") == "complete", r
        assert member.get_all() == big
    finally:
        member.stop()
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_etcd_tls_and_auth_round_trip(cluster, tmp_path):
    tls = Tls(tmp_path / "pki")
    member = EtcdMember(tmp_path, "etcd-a", tls=tls).start()
    try:
        member.enable_auth("s3cret: with a colon")
        auth = tmp_path / "etcd.auth"
        auth.write_text("root:s3cret: with a colon\n")
        os.chmod(auth, 0o600)
        round_trip(cluster, member, 10_000, auth_file=auth)
    finally:
        member.stop()


def test_etcd_killed_mid_snapshot_stores_nothing(cluster, tmp_path):
    c = cluster
    member = EtcdMember(tmp_path, "etcd-a").start()
    try:
        # About 200 MB, so the stream lasts long enough to be cut.
        value = "y" * (1 << 20)
        for i in range(200):
            member.ctl("put", f"/big/{i:04d}", input=value.encode())
        start_agent_with(c, member)
        p = c.ctl_popen("backup", "create", "--component", "etcd", "--node", "node-a", "--wait")
        deadline = time.monotonic() + 60
        while "sending database snapshot to client" not in member.log.read_text(errors="replace"):
            assert time.monotonic() < deadline, f"the snapshot never started\n{member.tail()}\n{c.logs()}"
            time.sleep(0.02)
        member.kill()
        out, err = p.communicate(timeout=120)
        out, err = out.decode(errors="replace"), err.decode(errors="replace")
        assert "sent database snapshot to client" not in member.log.read_text(errors="replace"), \
            "the snapshot finished before etcd was killed; the test proves nothing"
        assert p.returncode == 1, f"backup exited {p.returncode}, expected 1 (failed)\n{out}\n{err}\n{c.logs()}"
        shown = c.json("backup", "show", backup_set_id(out))
        assert "failed" in json.dumps(shown).lower(), shown
        snaps = json.loads(c.ok("repo", "snapshots", "--repo", c.repo, "--password-file", c.repo_pass, "--json"))
        assert not any("etcd" in json.dumps(s) for s in snaps), f"a snapshot was stored: {snaps}"
    finally:
        member.stop()


# ---- a 3-member cluster restored step by step, each step run by hand -------
# The controller's orchestration (every member's step done before the next
# starts) is played by the test through cairn-etcd-steps.
from cluster import BUILD, CTL  # noqa: E402
from servers_etcd import start_cluster  # noqa: E402

STEPS = BUILD / "tests" / "cairn-etcd-steps"


class Steps:
    def __init__(self, tmp_path, members, etcdctl=None):
        self.repo, self.pw = tmp_path / "repo", tmp_path / "repo.pass"
        self.pw.write_text("correct horse battery staple\n")
        os.chmod(self.pw, 0o600)
        p = subprocess.run([CTL, "repo", "init", "--repo", self.repo, "--password-file", self.pw],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        assert p.returncode == 0, p.stdout.decode(errors="replace")
        self.settings = {}
        for m in members:
            f = tmp_path / f"{m.name}.toml"
            f.write_text(m.settings_toml(etcdctl=(etcdctl or {}).get(m.name)))
            self.settings[m.name] = f

    def argv(self, member, *args):
        return [os.fspath(STEPS), "--settings", os.fspath(self.settings[member.name]), "--repo", os.fspath(self.repo),
                "--password-file", os.fspath(self.pw), *map(os.fspath, args)]

    def run(self, member, *args, expect=0):
        p = subprocess.run(self.argv(member, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
        out, err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
        assert p.returncode == expect, (f"cairn-etcd-steps {' '.join(map(str, args))} on {member.name} exited "
                                        f"{p.returncode}, expected {expect}\n{out}\n{err}\n{member.tail()}")
        return out

    def step_all(self, members, *args, expect=0):
        """One step on every member at once, as the controller sends it; waits for all."""
        procs = [(m, subprocess.Popen(self.argv(m, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE))
                 for m in members]
        results = {}
        try:
            for m, p in procs:
                out, err = p.communicate(timeout=300)
                results[m.name] = (p.returncode, out.decode(errors="replace"), err.decode(errors="replace"))
        finally:
            for _, p in procs:  # by PID, when a step hangs
                if p.poll() is None:
                    p.kill()
                    p.wait()
        if expect is not None:
            for name, (rc, out, err) in results.items():
                assert rc == expect, f"{' '.join(map(str, args))} on {name} exited {rc}\n{out}\n{err}"
        return results


def leaders(members):
    return {m.status()["leader"] for m in members}


def test_etcd_three_members_restored_step_by_step(tmp_path):
    if not STEPS.exists():
        raise AssertionError(f"{STEPS} not built")
    members = start_cluster(tmp_path, ["m1", "m2", "m3"])
    try:
        original = keys(10_000)
        members[0].put_many(original)
        rev = members[0].revision()
        ids_before = {m.status()["header"]["member_id"] for m in members}
        s = Steps(tmp_path, members)
        meta_file = tmp_path / "meta.json"
        sid = s.run(members[1], "backup", "--metadata-out", meta_file).strip()
        meta = json.loads(meta_file.read_text())
        assert meta["revision"] == rev and meta["key_count"] == 10_000 and len(meta["members"]) == 3, meta

        members[2].delete("/registry/k0", prefix=True)
        members[2].put_many({"/registry/after": "not in the snapshot"})
        assert members[0].get_all() != original

        s.step_all(members, "restore", "--snapshot", sid, "--step", "stop")
        # No initial_cluster, as the controller sends none: the members the snapshot recorded.
        s.step_all(members, "restore", "--snapshot", sid, "--step", "data", "--option", "cluster_token=cairn-restored-1")
        s.step_all(members, "restore", "--snapshot", sid, "--step", "start")
        for m in members:
            out = s.run(m, "verify", "--recorded", meta_file)
            assert json.loads(out)["outcome"] == "succeeded", out
        for m in members:
            assert m.get_all() == original, f"member {m.name} does not hold the keys backed up"
            assert m.revision() == rev, m.name
        assert len(leaders(members)) == 1 and 0 not in leaders(members)
        # A new logical cluster: new member ids.
        assert not ({m.status()["header"]["member_id"] for m in members} & ids_before)
    finally:
        for m in members:
            m.stop()


def test_etcd_member_whose_data_step_fails_rolls_the_cluster_back(tmp_path):
    if not STEPS.exists():
        raise AssertionError(f"{STEPS} not built")
    members = start_cluster(tmp_path, ["m1", "m2", "m3"])
    try:
        members[0].put_many(keys(2_000))
        s = Steps(tmp_path, members, etcdctl={"m3": "/bin/false"})  # m3's restore fails
        sid = s.run(members[0], "backup", "--metadata-out", tmp_path / "meta.json").strip()
        members[0].put_many({"/registry/after": "written after the backup"})
        before = members[0].get_all()
        ids_before = sorted(m.status()["header"]["member_id"] for m in members)

        initial = ",".join(f"{m.name}={m.peer_url}" for m in members)
        s.step_all(members, "restore", "--snapshot", sid, "--step", "stop")
        r = s.step_all(members, "restore", "--snapshot", sid, "--step", "data", "--option",
                       "cluster_token=cairn-restored-2", "--option", f"initial_cluster={initial}", expect=None)
        assert r["m1"][0] == 0 and r["m2"][0] == 0, r
        assert r["m3"][0] == 1 and "/bin/false" in r["m3"][1], r
        # No member starts on the new data: every one gets its old data dir back.
        s.step_all(members, "restore", "--snapshot", sid, "--step", "rollback")
        for m in members:
            assert m.get_all() == before, f"member {m.name} is not back on its old data"
        assert sorted(m.status()["header"]["member_id"] for m in members) == ids_before
        assert len(leaders(members)) == 1 and 0 not in leaders(members)
        failed = [p for p in members[0].data_dir.parent.iterdir() if p.name.startswith("data.cairn-failed-")]
        assert len(failed) == 1, "m1's restored data dir is not kept aside as failed"
    finally:
        for m in members:
            m.stop()


def test_etcd_three_members_restored_through_the_controller(cluster, tmp_path):
    """Three agents, one per member: one backup task for the cluster, the
    restore in the controller's steps, every member back with every key."""
    c = cluster
    members = start_cluster(tmp_path, ["m1", "m2", "m3"])
    try:
        original = keys(10_000)
        members[0].put_many(original)
        rev = members[0].revision()
        for i, m in enumerate(members):
            c.add_agent(f"node-{i}", components=m.component_toml())
            c.enrol(f"node-{i}")
        rc, out, err = c.ctl("backup", "create", "--component", "etcd", "--wait")
        assert rc == 0, f"backup exited {rc}\n{out}\n{err}\n{c.logs()}"
        sid = backup_set_id(out)
        shown = c.json("backup", "show", sid)
        assert len([t for t in shown["tasks"] if t.get("component") == "etcd"]) == 1, shown

        members[1].delete("/registry/k0", prefix=True)
        members[1].put_many({"/registry/after": "not in the snapshot"})

        rc, out, err = c.ctl("restore", sid, "--component", "etcd", "--wait", timeout=400)
        assert rc == 0, f"restore exited {rc}\n{out}\n{err}\n{c.logs()}"
        for m in members:
            assert m.get_all() == original, f"member {m.name} does not hold the keys backed up"
            assert m.revision() == rev, m.name
        assert len(leaders(members)) == 1 and 0 not in leaders(members)
    finally:
        for m in members:
            m.stop()
