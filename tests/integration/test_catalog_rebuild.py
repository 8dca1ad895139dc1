"""The controller's disk is lost (issue 12): `cairnctl catalog rebuild`
recreates the backup sets, snapshots and outcomes from the repository's
snapshot tags, the agent is approved again, and a restore from a rebuilt set
brings the bytes back."""
import shutil

from cluster import backup_set_id, cluster, set_state  # noqa: F401


def test_catalog_deleted_rebuilt_from_the_repository_and_restored_from(cluster):
    c = cluster
    c.add_agent("node-a", {"a.txt": b"alpha version 1\n"})
    c.add_agent("node-b", {"b.txt": b"bravo\n"})
    c.enrol("node-a")
    c.enrol("node-b")
    data = c.agent_dirs["node-a"]["data"]
    c.ok("policy", "add", "nightly", "--schedule", "0 1 * * *")
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

    # The disk is lost.
    c.controller.stop()
    catalog_dir = c.base / "controller"
    shutil.rmtree(catalog_dir)
    out = c.ok("catalog", "rebuild", "--data-dir", catalog_dir, "--repo", c.repo, "--password-file", c.repo_pass,
               "--repository-name", "main")
    assert "3 backup set(s) (2 complete)" in out and "2 agent(s)" in out, out
    assert f"set {partial_set} is partial: 1 of the set's 2 task(s) left a snapshot" in out, out
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
