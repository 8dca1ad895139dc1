"""Restores through the controller do what they say (issue 9, section 3): every
component's safety backup holds what its restore overwrites, mirror and merge
do what they are named for, an undeclared target is refused before any plan
goes out, and safety sets never read as failed backups. Real cairn-controller
and cairn-agent on 127.0.0.1, driven with cairnctl (fixtures in cluster.py)."""
import json
import os

from cluster import (backup_set_id, catalog, cluster, killed_mid_restore, lower_enum, task_state, set_state, kind,  # noqa: F401
                     restore_id)


def snapshots(c):
    return json.loads(c.ok("repo", "snapshots", "--json", "--repo", c.repo, "--password-file", c.repo_pass))


def safety_snapshots(c):
    return [x for x in snapshots(c) if "safety" in x.get("tags", [])]


def repo_files(c, snapshot_id, dest):
    """Every regular file of a snapshot, by its path in the snapshot, read back with `repo restore`."""
    c.ok("repo", "restore", snapshot_id, "--target", dest, "--repo", c.repo, "--password-file", c.repo_pass)
    out = {}
    for root, _, files in os.walk(dest):
        for f in files:
            p = os.path.join(root, f)
            out[p[len(str(dest)):]] = open(p, "rb").read()
    return out


def add_component(c, node, name, files, extra=""):
    """A second `files` component over base/<node>/<name>, declared before the agent starts."""
    d = c.agent_dirs[node]["dir"] / name
    for rel, content in files.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(content)
    cfg = c.agent_dirs[node]["config"]
    cfg.write_text(cfg.read_text() + f'[[component]]\nname = "{name}"\ndriver = "files"\npaths = ["{d}"]\n{extra}')
    return d


def declare_alternate(c, node, alt):
    """Declares restore target 'alternate' = alt on the node's 'data' component (the last one in the file)."""
    cfg = c.agent_dirs[node]["config"]
    cfg.write_text(cfg.read_text() + f'restore_to = "{alt}"\n')


def backup(c):
    rc, out, err = c.ctl("backup", "create", "--wait")
    assert rc == 0, f"backup create --wait exited {rc}\n{out}\n{err}\n{c.logs()}"
    return backup_set_id(out)


def restore(c, *args, expect=0):
    rc, out, err = c.ctl("restore", *args, "--wait")
    assert rc == expect, f"restore --wait exited {rc}, expected {expect}\n{out}\n{err}\n{c.logs()}"
    return c.json("restore", "show", restore_id(out))


def test_two_components_in_one_plan_keep_both_safety_backups(cluster, tmp_path):
    c = cluster
    c.add_agent("node-a", {"a.txt": b"alpha " * 1000})
    data = c.agent_dirs["node-a"]["data"]
    conf = add_component(c, "node-a", "conf", {"c.conf": b"setting = 1\n" * 100})
    c.enrol("node-a")
    sid = backup(c)

    (data / "a.txt").write_bytes(b"edited data")
    (conf / "c.conf").write_bytes(b"edited conf")
    before = len(safety_snapshots(c))
    r = restore(c, sid)

    assert set_state(r) == "complete", r
    restores = [t for t in r["tasks"] if kind(t) == "restore"]
    safety = [t for t in r["tasks"] if kind(t) == "backup"]
    assert sorted(t["component"] for t in restores) == ["conf", "data"], r
    assert all(task_state(t) == "succeeded" for t in restores), r
    # Each component's safety backup ended on its own restore's report: both succeeded, with a snapshot.
    assert sorted(t["component"] for t in safety) == ["conf", "data"], r
    for t in safety:
        assert task_state(t) == "succeeded" and t.get("snapshot_id"), f"safety task lost: {t}\n{r}"
    assert len(safety_snapshots(c)) == before + 2
    # The bytes are back...
    assert (data / "a.txt").read_bytes() == b"alpha " * 1000
    assert (conf / "c.conf").read_bytes() == b"setting = 1\n" * 100
    # ...and each safety snapshot holds the state before the restore.
    by_component = {t["component"]: t["snapshot_id"] for t in safety}
    got = repo_files(c, by_component["data"], tmp_path / "sd")
    assert got[str(data / "a.txt")] == b"edited data", got.keys()
    got = repo_files(c, by_component["conf"], tmp_path / "sc")
    assert got[str(conf / "c.conf")] == b"edited conf", got.keys()
    s = c.json("backup", "show", r["safety_backup_set_id"])
    assert set_state(s) == "complete", s


def test_skip_safety_backup_takes_none_and_without_it_one_is_taken(cluster):
    c = cluster
    c.add_agent("node-a", {"a.txt": b"alpha " * 1000})
    data = c.agent_dirs["node-a"]["data"]
    c.enrol("node-a")
    sid = backup(c)

    (data / "a.txt").write_bytes(b"edited")
    before = len(safety_snapshots(c))
    r = restore(c, sid, "--skip-safety-backup")
    assert set_state(r) == "complete", r
    assert (data / "a.txt").read_bytes() == b"alpha " * 1000
    assert not r.get("safety_backup_set_id"), r
    assert [kind(t) for t in r["tasks"]] == ["restore"], r
    assert len(safety_snapshots(c)) == before, "a safety snapshot was taken although it was skipped"

    (data / "a.txt").write_bytes(b"edited again")
    r = restore(c, sid)
    assert set_state(r) == "complete", r
    assert r.get("safety_backup_set_id"), r
    assert len(safety_snapshots(c)) == before + 1, "no safety snapshot without --skip-safety-backup"


def test_restore_to_alternate_target_saves_the_target_it_overwrites(cluster, tmp_path):
    c = cluster
    c.add_agent("node-a", {"a.txt": b"live source " * 100})
    data = c.agent_dirs["node-a"]["data"]
    alt = c.agent_dirs["node-a"]["dir"] / "alt"
    declare_alternate(c, "node-a", alt)
    c.enrol("node-a")
    a = c.find_agent(name="node-a")
    assert a["components"][0].get("restore_targets") == ["alternate"], a
    sid = backup(c)

    # Something already lives where the alternate restore will write.
    placed = alt / str(data).lstrip("/") / "a.txt"
    placed.parent.mkdir(parents=True)
    placed.write_bytes(b"was in the alternate target")
    (data / "a.txt").write_bytes(b"live, edited, must stay")

    r = restore(c, sid, "--target", "alternate")
    assert set_state(r) == "complete", r
    assert placed.read_bytes() == b"live source " * 100
    assert (data / "a.txt").read_bytes() == b"live, edited, must stay", "the live source was written"
    t = [t for t in r["tasks"] if kind(t) == "backup"]
    assert len(t) == 1 and task_state(t[0]) == "succeeded" and t[0].get("snapshot_id"), r
    got = repo_files(c, t[0]["snapshot_id"], tmp_path / "s")
    assert got == {str(placed): b"was in the alternate target"}, got


def test_restore_to_an_empty_alternate_target_completes(cluster):
    # Nothing lives where the restore writes: the safety backup saves nothing
    # and ends succeeded without a snapshot; the restore must not hang.
    c = cluster
    c.add_agent("node-a", {"a.txt": b"live source " * 100})
    data = c.agent_dirs["node-a"]["data"]
    alt = c.agent_dirs["node-a"]["dir"] / "alt-empty"
    declare_alternate(c, "node-a", alt)
    c.enrol("node-a")
    sid = backup(c)
    r = restore(c, sid, "--target", "alternate")
    assert set_state(r) == "complete", r
    assert (alt / str(data).lstrip("/") / "a.txt").read_bytes() == b"live source " * 100
    t = [t for t in r["tasks"] if kind(t) == "backup"]
    assert len(t) == 1 and task_state(t[0]) == "succeeded" and not t[0].get("snapshot_id"), r
    assert any("nothing existed" in x.get("detail", "") for x in t[0].get("reasons", [])), t[0]


def test_mirror_removes_added_entries_merge_keeps_them(cluster, tmp_path):
    c = cluster
    c.add_agent("node-a", {"a.txt": b"alpha " * 1000, "keep/b.txt": b"bravo"})
    data = c.agent_dirs["node-a"]["data"]
    c.enrol("node-a")
    sid = backup(c)

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_bytes(b"not part of the component")
    (data / "a.txt").write_bytes(b"edited")
    (data / "added.txt").write_bytes(b"added since")
    (data / "newdir" / "deep").mkdir(parents=True)
    (data / "newdir" / "deep" / "f").write_bytes(b"x")
    os.symlink(outside, data / "link-out")  # a planted link: removed as a link, never followed
    os.symlink(outside, data / "keep" / "link-in")

    r = restore(c, sid)  # mirror is the default
    assert set_state(r) == "complete", r
    assert (data / "a.txt").read_bytes() == b"alpha " * 1000
    assert (data / "keep" / "b.txt").read_bytes() == b"bravo"
    left = sorted(str(p.relative_to(data)) for p in data.rglob("*"))
    assert left == ["a.txt", "keep", "keep/b.txt"], left
    assert (outside / "precious").read_bytes() == b"not part of the component"
    assert os.path.isdir(data), "the restored root itself was removed"
    # What mirror removed is in the safety backup.
    safety = [t for t in r["tasks"] if kind(t) == "backup"][0]
    got = repo_files(c, safety["snapshot_id"], tmp_path / "s")
    assert got[str(data / "added.txt")] == b"added since", got.keys()

    (data / "a.txt").write_bytes(b"edited again")
    (data / "added.txt").write_bytes(b"added again")
    r = restore(c, sid, "--mode", "merge")
    assert set_state(r) == "complete", r
    assert lower_enum(r.get("write_mode", ""), "restore_write_mode_") == "merge", r
    assert (data / "a.txt").read_bytes() == b"alpha " * 1000
    assert (data / "added.txt").read_bytes() == b"added again", "merge removed an entry added since the backup"
    rc, out, err = c.ctl("restore", sid, "--mode", "sideways")
    assert rc != 0 and "sideways" in err, (rc, out, err)


def tree_bytes(root):
    """Every entry under root: a file's bytes, a link's target, a directory's None."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = os.readlink(p) if p.is_symlink() else (p.read_bytes() if p.is_file() else None)
    return out


def test_an_agent_killed_mid_files_restore_puts_the_tree_back_from_its_safety_backup(cluster, tmp_path):
    """The agent SIGKILLed after a files restore wrote every file over the live
    tree and before mirror removed what the backup did not hold (failpoint
    restore.files.written): the tree is then neither the live one nor the
    backup's. At its restart the agent restores the restore's safety snapshot
    over it: every file, link and directory is as it was before the restore
    (edited, added and deleted ones alike), and the task says so."""
    c = cluster
    fp = tmp_path / "failpoints"
    c.add_agent("node-a", {"a.txt": b"alpha " * 1000, "keep/b.txt": b"bravo", "gone.txt": b"deleted after the backup"},
                env={"CAIRN_FAILPOINTS_FILE": os.fspath(fp)})
    data = c.agent_dirs["node-a"]["data"]
    c.enrol("node-a")
    sid = backup(c)
    # A second path declared after the backup: the safety backup holds it,
    # the restore does not write it, and the undo must not touch it either.
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "kept.txt").write_bytes(b"declared after the backup")
    cfg = c.agent_dirs["node-a"]["config"]
    cfg.write_text(cfg.read_text().replace(f'paths = ["{data}"]', f'paths = ["{data}", "{extra}"]'))
    c.agents["node-a"].stop()
    c.agents["node-a"].start()
    c.wait_for("node-a back", lambda: c.connected("node-a"), timeout=30)
    (data / "a.txt").write_bytes(b"edited after the backup")
    (data / "gone.txt").unlink()
    (data / "added" / "deep").mkdir(parents=True)
    (data / "added" / "deep" / "f").write_bytes(b"added after the backup")
    os.symlink("keep/b.txt", data / "link")
    live = tree_bytes(data)
    fp.write_text("restore.files.written kill\n")

    def half_restored():
        now = tree_bytes(data)
        assert now["a.txt"] == b"alpha " * 1000 and now["gone.txt"] == b"deleted after the backup", now
        assert now["added/deep/f"] == b"added after the backup", "mirror ran before the kill"

    def half_restored_and_written():
        half_restored()
        (extra / "written-while-down.txt").write_bytes(b"not the restore's")

    detail = killed_mid_restore(c, "node-a", [sid, "--component", "data"], while_dead=half_restored_and_written,
                                safety=True)
    assert "safety snapshot" in detail and "now hold what they held before it" in detail, detail
    assert tree_bytes(data) == live, detail
    assert tree_bytes(extra) == {"kept.txt": b"declared after the backup",
                                 "written-while-down.txt": b"not the restore's"}, detail
    # A second restore, uninterrupted, still works and leaves no record.
    r = restore(c, sid)
    assert set_state(r) == "complete", r
    assert (data / "a.txt").read_bytes() == b"alpha " * 1000 and (data / "gone.txt").exists()
    assert not (data / "added").exists()
    assert not list((c.agent_dirs["node-a"]["dir"] / "state" / "restores").glob("*.json"))


def test_unknown_target_is_refused_before_any_plan(cluster):
    c = cluster
    c.add_agent("node-a", {"a.txt": b"alpha"})
    declare_alternate(c, "node-a", c.agent_dirs["node-a"]["dir"] / "alt")
    c.enrol("node-a")
    sid = backup(c)
    with catalog(c) as con:
        plans = con.execute("SELECT COUNT(*) FROM plans").fetchone()[0]
    rc, out, err = c.ctl("restore", sid, "--target", "elsewhere")
    assert rc != 0, (rc, out, err)
    assert "'elsewhere'" in err and "'alternate'" in err, f"the error must name the declared targets: {err}"
    with catalog(c) as con:
        assert con.execute("SELECT COUNT(*) FROM plans").fetchone()[0] == plans, "a plan went out"
        assert con.execute("SELECT COUNT(*) FROM restores").fetchone()[0] == 0, "a restore was recorded"
        assert con.execute("SELECT COUNT(*) FROM backup_sets WHERE trigger = 'safety'").fetchone()[0] == 0


def test_safety_set_of_failed_restore_is_not_a_failed_backup(cluster):
    c = cluster
    c.add_agent("node-a", {"a.txt": b"alpha " * 100})
    c.enrol("node-a")
    sid = backup(c)
    src = c.json("backup", "show", sid)["tasks"][0]["snapshot_id"]
    # The source snapshot disappears from the repository: the restore fails before its safety backup.
    c.ok("repo", "forget", src, "--repo", c.repo, "--password-file", c.repo_pass)
    r = restore(c, sid, expect=1)
    assert set_state(r) == "failed", r
    safety_set = r["safety_backup_set_id"]
    t = [t for t in r["tasks"] if kind(t) == "backup"][0]
    assert task_state(t) == "failed" and "did not run" in json.dumps(t["reasons"]), t

    listing = c.ok("backup", "list")
    header, *rows = listing.splitlines()
    assert "KIND" in header, listing
    row = [ln for ln in rows if ln.startswith(safety_set)]
    assert row and row[0].split()[3] == "safety" and r["restore_id"] in row[0], listing
    row = [ln for ln in rows if ln.startswith(sid)]
    assert row and row[0].split()[3] == "backup", listing
    sets = {s["backup_set_id"]: s for s in c.json("backup", "list")["sets"]}
    assert sets[safety_set]["trigger"] == "safety" and sets[safety_set]["safety_for_restore_id"] == r["restore_id"]
    shown = c.ok("backup", "show", safety_set)
    assert shown.startswith(f"safety backup for restore {r['restore_id']}"), shown
