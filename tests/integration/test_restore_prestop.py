"""Damage is found before anything is stopped (docs/protocol.md § The
cluster restore, preflight and invariant 1): every member reads its whole
snapshot back from the repository (every tree and data blob, each
authenticated and checked against its id) in the preflight step, so a
damaged pack refuses the restore while every member still runs on its own
data, with a reason naming the blob, its pack, the file of the snapshot it
belongs to, the repository and what to do.

The repository is damaged the way a disk or a copy damages it: bytes
overwritten in the middle of a pack file under data/. `cairnctl repo check
--read-data --json` says what the damage hit (a data blob of the etcd
snapshot file, a tree), so each case knows what it damaged; then a restore
through the controller must end failed at preflight, with every server's
process the same as before (same PID, never stopped), no task past
preflight, and every key (every record) still the data the cluster had
before the restore.
"""
import json
import os

import pytest

from cluster import lower_enum  # noqa: F401
from cluster import cluster  # noqa: F401  (a fixture)
from test_restore_faults import EtcdRig, KafkaRig, state_of


def packs(repo):
    """Every pack file of the repository."""
    return sorted(p for p in (repo / "data").rglob("*") if p.is_file() and len(p.name) == 64)


def overwrite(path, at, n=64):
    """Overwrites n bytes at offset `at` (each byte inverted); returns the old bytes."""
    with open(path, "r+b") as f:
        f.seek(at)
        old = f.read(n)
        f.seek(at)
        f.write(bytes(b ^ 0xFF for b in old))
    return old


def put_back(path, at, old):
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(old)


def problems(c):
    """The errors of `cairnctl repo check --read-data --json`."""
    rc, out, err = c.ctl("repo", "check", "--read-data", "--json", *c.repo_args(), timeout=300)
    found = []
    for line in out.splitlines():
        try:
            j = json.loads(line)
        except ValueError:
            continue
        if j.get("message_type") == "problem" and j.get("severity") == "error":
            found.append(j)
    return found


def snapshot_ids(c, tag):
    rc, out, err = c.ctl("repo", "snapshots", "--json", *c.repo_args())
    assert rc == 0, f"{out}\n{err}"
    ids = []
    for line in out.splitlines():
        try:
            j = json.loads(line)
        except ValueError:
            continue
        if isinstance(j, list):
            ids += [s["id"] for s in j if tag in s.get("tags", [])]
        elif tag in j.get("tags", []):
            ids.append(j["id"])
    return ids


def damage_until(c, want, candidates):
    """Overwrites bytes in the middle of one candidate pack after another
    until `cairnctl repo check --read-data` reports a problem for which
    want(problem) holds; packs whose damage does not are put back. Returns
    (pack path, that problem)."""
    for pack, at in candidates:
        old = overwrite(pack, at)
        hit = [p for p in problems(c) if want(p)]
        if hit:
            return pack, hit[0]
        put_back(pack, at, old)
    pytest.fail("no pack could be damaged the way this test needs")


def pids(rig):
    return [m.pid() for m in rig.members]


def assert_refused_at_preflight(rig, rid, pack, problem, before, pids_before, why):
    """The restore ended failed at preflight: no task past it, every server the
    same process as before holding the data it had, and the reason naming the
    damage (its pack, the file, the repository) and what to do."""
    r = rig.wait_restore_ended(rid)
    state = lower_enum(r.get("state", ""), "set_state_")
    assert state == "failed", f"{why}: restore ended {state}\n{json.dumps(r)[:3000]}"
    steps = {t.get("restore_step") for t in r.get("tasks", []) if t.get("restore_step")}
    assert steps == {"preflight"}, f"{why}: steps past preflight were made: {steps}\n{json.dumps(r)[:3000]}"
    assert pids(rig) == pids_before, f"{why}: a server was stopped or restarted: {pids_before} -> {pids(rig)}"
    rig.invariants(before, why)
    text = json.dumps(r)
    pack_object = f"data/{pack.name[:2]}/{pack.name}"
    assert pack_object in text, f"{why}: the reason does not name the pack {pack_object}\n{text[:3000]}"
    assert os.fspath(rig.c.repo) in text, f"{why}: the reason does not name the repository\n{text[:3000]}"
    assert "cairnctl repo check --read-data" in text and "another backup set" in text, f"{why}: no advice\n{text[:3000]}"
    assert "before anything was stopped or changed" in text, text[:3000]
    if problem.get("kind") == "blob_damaged":
        for path in problem.get("paths", [])[:1]:
            assert path in text, f"{why}: the reason does not name the damaged file {path}\n{text[:3000]}"
    # No safety backup was written either: the refusal came first.
    assert not snapshot_ids(rig.c, "safety"), f"{why}: a safety backup was taken before the refusal"
    return r


@pytest.fixture
def etcd(cluster, tmp_path):  # noqa: F811
    r = EtcdRig(cluster, tmp_path / "etcd-rig")
    try:
        yield r
    finally:
        r.stop()


@pytest.mark.liveness(10)
def test_etcd_damaged_data_pack_refuses_the_restore_with_nothing_stopped(etcd):
    """The pack holding the etcd snapshot file's data, overwritten in its
    middle: every member's preflight reads the snapshot back and refuses;
    no etcd was stopped, every key is still the pre-restore data."""
    before = etcd.change()
    pids_before = pids(etcd)
    assert all(pids_before), pids_before
    # The largest pack holds the snapshot file's data (trees are packed apart).
    biggest = max(packs(etcd.c.repo), key=lambda p: p.stat().st_size)
    pack, problem = damage_until(etcd.c, lambda p: p.get("kind") in ("blob_damaged", "pack_damaged") and p.get("paths"),
                                 [(biggest, biggest.stat().st_size // 2)])
    rc, out, err, rid = etcd.restore()
    assert rc != 0, f"a restore of a damaged snapshot exited 0\n{out}\n{err}"
    r = assert_refused_at_preflight(etcd, rid, pack, problem, before, pids_before, "damaged data pack")
    # Every member read the snapshot and refused for the damage, by itself.
    pre = [t for t in r["tasks"] if t.get("restore_step") == "preflight"]
    assert len(pre) == 3, json.dumps(r)[:3000]
    for t in pre:
        d = " ".join(x.get("detail", "") for x in t.get("reasons", []))
        assert "cannot be read back whole" in d and "fails authentication" in d, json.dumps(t)[:2000]


@pytest.mark.liveness(10)
def test_etcd_damaged_tree_refuses_the_restore_with_nothing_stopped(etcd):
    """A tree of the snapshot damaged (a directory listing on the way to the
    snapshot file): refused at preflight the same way, naming the listing."""
    before = etcd.change()
    pids_before = pids(etcd)
    ordered = sorted(packs(etcd.c.repo), key=lambda p: p.stat().st_size)
    # Trees are packed apart from data: the small packs. A few places in each
    # (the header, at the pack's end, is not what this case wants).
    candidates = [(p, p.stat().st_size * k // 8) for p in ordered for k in (1, 2, 3)]
    pack, problem = damage_until(etcd.c, lambda p: p.get("kind") == "tree_damaged", candidates)
    rc, out, err, rid = etcd.restore()
    assert rc != 0, f"a restore of a damaged snapshot exited 0\n{out}\n{err}"
    r = assert_refused_at_preflight(etcd, rid, pack, problem, before, pids_before, "damaged tree")
    # The etcd snapshot is one stream: its trees are the directories above
    # the file, the root among them.
    assert "the listing of '/" in json.dumps(r) and "cannot be read" in json.dumps(r), json.dumps(r)[:3000]


@pytest.mark.liveness(10)
def test_kafka_one_brokers_damaged_snapshot_stops_no_broker(cluster, tmp_path):  # noqa: F811
    """Three KRaft brokers, each restored from its own snapshot; a pack only
    the third broker's snapshot needs is damaged. Before, brokers 1 and 2 were
    stopped and swapped in before broker 3's data step met the damage; now
    every broker's preflight reads its snapshot first: the third refuses,
    no broker is stopped, the topic is still what it was."""
    rig = KafkaRig(cluster, tmp_path / "kafka-rig")
    try:
        before = rig.change()
        pids_before = [m.pid() for m in rig.members]
        stops_before = [m.stops() for m in rig.members]
        assert all(pids_before), pids_before
        third = snapshot_ids(rig.c, "agent:node-2")
        assert third, "no snapshot of node-2"
        # Packs whose damage hits the third broker's snapshot alone (each
        # agent writes its own packs; the replicas they share are stored once).
        ordered = sorted(packs(rig.c.repo), key=lambda p: -p.stat().st_size)
        candidates = [(p, p.stat().st_size // 3) for p in ordered]

        def third_only(p):
            return p.get("snapshots") and set(p["snapshots"]) <= set(third)
        pack, problem = damage_until(rig.c, third_only, candidates)
        rc, out, err, rid = rig.restore()
        assert rc != 0, f"a restore of a damaged snapshot exited 0\n{out}\n{err}"
        r = rig.wait_restore_ended(rid)
        state = lower_enum(r.get("state", ""), "set_state_")
        assert state == "failed", f"restore ended {state}\n{json.dumps(r)[:3000]}"
        steps = {t.get("restore_step") for t in r.get("tasks", []) if t.get("restore_step")}
        assert steps == {"preflight"}, f"steps past preflight were made: {steps}\n{json.dumps(r)[:3000]}"
        assert [m.pid() for m in rig.members] == pids_before, "a broker was stopped or restarted"
        assert [m.stops() for m in rig.members] == stops_before, "the agent ran a broker's stop command"
        pre = {t["agent_name"]: t for t in r["tasks"] if t.get("restore_step") == "preflight"}
        refused = {n for n, t in pre.items() if "cannot be read back whole" in json.dumps(t.get("reasons", []))}
        assert refused == {"node-2"}, f"refused by {refused}\n{json.dumps(r)[:3000]}"
        text = json.dumps(pre["node-2"])
        assert f"data/{pack.name[:2]}/{pack.name}" in text, text[:3000]
        rig.invariants(before, "kafka: one broker's snapshot damaged")
        assert state_of(rig, rid) == "failed"
    finally:
        rig.stop()
