"""The controller's disk is lost (issue 12): `cairnctl catalog rebuild`
recreates the backup sets, snapshots and outcomes from the repository, the
agent is approved again, and a restore from a rebuilt set brings the bytes
back. A set is taken as the controller ran it only from the record the
controller signed when it ended (issue 32); snapshot tags that anyone with
the repository's password can write make an `unattested` set at most, which
is not restored without --accept-unattested."""
import json
import shutil

from cluster import backup_set_id, cluster, set_state  # noqa: F401


def test_catalog_deleted_rebuilt_from_the_repository_and_restored_from(cluster):
    c = cluster
    c.add_agent("node-a", {"a.txt": b"alpha version 1\n"})
    c.add_agent("node-b", {"b.txt": b"bravo\n"})
    c.enrol("node-a")
    c.enrol("node-b")
    c.declare_repository()  # the controller writes each set's signed record there
    data = c.agent_dirs["node-a"]["data"]
    c.ok("policy", "add", "nightly", "--schedule", "0 0 1 1 *")
    first = backup_set_id(c.ok("backup", "create", "--wait"))
    (data / "a.txt").write_bytes(b"alpha version 2\n")
    c.ok("policy", "run-now", "nightly")
    c.wait_for("the policy's set complete",
               lambda: [s for s in c.json("backup", "list")["sets"]
                        if s.get("policy") == "nightly" and set_state(s) == "complete"], timeout=60)
    # A set that is not complete: node-b is away, its task never runs.
    c.agents["node-b"].stop()
    rc, out, err = c.ctl("backup", "create", "--node", "node-a", "--node", "node-b")
    partial_set = backup_set_id(out)
    c.wait_for("node-a's task of the set done",
               lambda: any(t.get("snapshot_id") for t in c.json("backup", "show", partial_set)["tasks"]), timeout=60)
    before = {s["backup_set_id"]: s for s in c.json("backup", "list")["sets"]}
    # The two sets that ended have their signed record in the repository; the
    # one still running (node-b away) has none yet.
    complete = [i for i, s in before.items() if set_state(s) == "complete"]
    for sid in complete:
        c.wait_signed(sid)

    # The disk is lost.
    c.controller.stop()
    catalog_dir = c.base / "controller"
    shutil.rmtree(catalog_dir)
    out = c.ok("catalog", "rebuild", "--data-dir", catalog_dir, "--repo", c.repo, "--password-file", c.repo_pass,
               "--repository-name", "main", "--trusted-key", c.signing_pub())
    assert "3 backup set(s) (2 complete)" in out and "2 agent(s)" in out, out
    assert "2 set(s) attested by a signed set record, 1 unattested" in out, out
    assert f"set {partial_set} is partial: 1 of the set's 2 task(s) left a snapshot" in out, out
    assert f"set {partial_set} is unattested" in out, out
    # A second rebuild never replaces the catalog.
    rc, out2, err = c.ctl("catalog", "rebuild", "--data-dir", catalog_dir, "--repo", c.repo,
                          "--password-file", c.repo_pass)
    assert rc != 0 and "a catalog exists" in err, err

    c.start_controller()
    after = {s["backup_set_id"]: s for s in c.json("backup", "list")["sets"]}
    assert set(after) == set(before), (sorted(after), sorted(before))
    assert set_state(after[first]) == "complete"
    assert set_state(after[partial_set]) == "partial"
    assert any(s.get("policy") == "nightly" for s in after.values())
    shown = c.json("backup", "show", first)
    assert [t["component"] for t in shown["tasks"]] == ["data", "data"]
    assert not shown.get("unattested") and c.json("backup", "show", partial_set).get("unattested")

    # The agents come back pending (a repository proves no trust); approved,
    # they keep their identity and the restore reads the rebuilt set.
    c.agents["node-b"].start()
    for name in ("node-a", "node-b"):
        key = c.agent_dirs[name]["key"]
        pend = c.wait_for(f"{name} pending", lambda: c._pending(key), timeout=30)
        assert pend["name"] == name
        c.ok("agent", "approve", name)
        c.wait_for(f"{name} connected", lambda: c.connected(name), timeout=30)
    (data / "a.txt").write_bytes(b"damaged")
    rc, out, err = c.ctl("restore", first, "--node", "node-a", "--wait")
    assert rc == 0, f"{out}\n{err}\n{c.logs()}"
    assert (data / "a.txt").read_bytes() == b"alpha version 1\n"


def _snapshot_of_task(c, task_id):
    snaps = json.loads(c.ok("repo", "snapshots", "--repo", c.repo, "--password-file", c.repo_pass, "--json"))
    for s in snaps:
        if f"task:{task_id}" in s.get("tags", []):
            return s
    raise AssertionError(f"no snapshot of task {task_id}: {snaps}")


def _forge(c, where, tags):
    """An attacker with the repository's password (a compromised node) writes a
    snapshot of its own bytes with whatever cairn tags it likes."""
    args = ["repo", "backup", "--repo", c.repo, "--password-file", c.repo_pass, "--no-parent"]
    for t in ["cairn", "component:data", "set-tasks:1"] + tags:
        args += ["--tag", t]
    return c.ok(*args, where)


def test_a_rebuild_takes_sets_only_from_records_the_controller_signed(cluster, tmp_path):
    """Issue 32's four forgeries, each written with the repository's password
    and cairn's tags: a new set in the victim's name comes back unattested and
    is refused by a restore; a snapshot claiming a task of a genuine set, or
    the failed task of a set that ended partial, is left out of that set (its
    signed record does not list it); a snapshot reusing a genuine task's id
    does not make the rebuild fail. The genuine sets restore the genuine bytes."""
    c = cluster
    c.add_agent("victim", {"v.txt": b"genuine bytes\n"})
    c.add_agent("other", {"o.txt": b"other\n"})
    c.enrol("victim")
    c.enrol("other")
    c.declare_repository()
    genuine = backup_set_id(c.ok("backup", "create", "--wait"))
    c.agents["other"].stop()
    rc, out, err = c.ctl("backup", "create")
    part = backup_set_id(out)
    c.wait_for("the victim's task of the second set done",
               lambda: any(t.get("snapshot_id") for t in c.json("backup", "show", part)["tasks"]), timeout=60)
    c.ok("backup", "cancel", part)  # other never ran its task: the set ends without it
    assert set_state(c.json("backup", "show", part)) != "complete"
    c.wait_signed(genuine)
    c.wait_signed(part)
    tasks = {t["agent_name"]: t["task_id"] for t in c.json("backup", "show", genuine)["tasks"]}
    genuine_snap = _snapshot_of_task(c, tasks["victim"])  # before any forgery claims the task
    victim_tags = dict(t.split(":", 1) for t in genuine_snap["tags"] if ":" in t)
    other_failed = [t["task_id"] for t in c.json("backup", "show", part)["tasks"] if t["agent_name"] == "other"][0]
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "v.txt").write_bytes(b"attacker bytes\n")
    victim = ["agent:victim", "agent-key:" + victim_tags["agent-key"]]
    _forge(c, evil, ["set:bs-f0rged000000001", "task:tk-f0rged000000001"] + victim)      # a set of its own
    _forge(c, evil, [f"set:{genuine}", f"task:{tasks['victim']}"] + victim)             # the genuine set's task
    _forge(c, evil, [f"set:{part}", f"task:{other_failed}", "agent:other",
                     "agent-key:" + "ab" * 32])                                            # the partial set's failed task
    _forge(c, evil, ["set:bs-0000000000000000", f"task:{tasks['victim']}"] + victim)    # reuses a genuine task id

    c.controller.stop()
    catalog_dir = c.base / "controller"
    shutil.rmtree(catalog_dir)
    out = c.ok("catalog", "rebuild", "--data-dir", catalog_dir, "--repo", c.repo, "--password-file", c.repo_pass,
               "--trusted-key", c.signing_pub())
    assert "2 set(s) attested by a signed set record, 1 unattested" in out, out
    assert "set bs-f0rged000000001 is unattested" in out, out
    assert f"set {genuine}: snapshot" in out and "the set's signed record does not list it" in out, out
    assert f"set {part}: snapshot" in out, out
    assert f"claims task {tasks['victim']}, which another set has; left out" in out, out
    # Without the controller's key nothing is attested, and the rebuild says why.
    shutil.rmtree(catalog_dir)
    out2 = c.ok("catalog", "rebuild", "--data-dir", catalog_dir, "--repo", c.repo, "--password-file", c.repo_pass)
    assert "no controller key was given" in out2 and "0 set(s) attested" in out2, out2
    shutil.rmtree(catalog_dir)
    c.ok("catalog", "rebuild", "--data-dir", catalog_dir, "--repo", c.repo, "--password-file", c.repo_pass,
         "--trusted-key", c.signing_pub())

    c.start_controller()
    c.agents["other"].start()
    for name in ("victim", "other"):
        key = c.agent_dirs[name]["key"]
        c.wait_for(f"{name} pending", lambda: c._pending(key), timeout=30)
        c.ok("agent", "approve", name)
        c.wait_for(f"{name} connected", lambda: c.connected(name), timeout=30)
    sets = {s["backup_set_id"]: s for s in c.json("backup", "list")["sets"]}
    assert sets["bs-f0rged000000001"].get("unattested") and not sets[genuine].get("unattested"), sets
    assert set_state(sets[part]) != "complete", sets[part]
    shown = c.json("backup", "show", genuine)
    victim_task = [t for t in shown["tasks"] if t["agent_name"] == "victim"][0]
    assert victim_task["snapshot_id"] == genuine_snap["id"], (victim_task, genuine_snap)
    data = c.agent_dirs["victim"]["data"]
    (data / "v.txt").write_bytes(b"changed since\n")
    rc, out, err = c.ctl("restore", "bs-f0rged000000001", "--node", "victim", "--wait")
    assert rc != 0 and "unattested" in err and "--accept-unattested" in err, (rc, out, err)
    assert (data / "v.txt").read_bytes() == b"changed since\n"
    rc, out, err = c.ctl("restore", genuine, "--node", "victim", "--wait")
    assert rc == 0, f"{out}\n{err}\n{c.logs()}"
    assert (data / "v.txt").read_bytes() == b"genuine bytes\n"
