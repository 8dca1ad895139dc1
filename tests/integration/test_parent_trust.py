"""A backup's parent comes only from what the same agent wrote (DESIGN.md, trust
model; docs/protocol.md § Task). Two real agents share one repository; someone
holding the repository password (any agent) writes a snapshot in node-b's name,
with node-b's host, paths and file metadata but other content, newer than
node-b's own. node-b's next backup must not take it as its parent: the restore
gives node-b's real bytes back, not the attacker's."""
import json
import os
import subprocess

from cluster import BUILD, CTL, backup_set_id, cluster, lower_enum  # noqa: F401

FORGE = BUILD / "tests" / "cairn-snapshot-forge"


def snapshots(c):
    return json.loads(c.ok("repo", "snapshots", "--json", "--repo", c.repo, "--password-file", c.repo_pass))


def task_of(c, set_id, agent):
    s = c.json("backup", "show", set_id)
    [t] = [t for t in s["tasks"] if t["agent_name"] == agent]
    assert lower_enum(t["state"], "task_state_") == "succeeded", (t, c.logs())
    return t


def test_forged_snapshot_in_another_nodes_name_is_never_its_parent(cluster):
    c = cluster
    assert FORGE.exists(), f"{FORGE} is not built"
    real = os.urandom(20000)
    c.add_agent("node-a", {"a.txt": b"alpha " * 1000})
    c.add_agent("node-b", {"b.txt": real, "keep/c.txt": b"charlie " * 100})
    c.enrol("node-a")
    c.enrol("node-b")
    victim = c.agent_dirs["node-b"]["data"] / "b.txt"

    first = backup_set_id(c.ok("backup", "create", "--wait"))
    b1 = task_of(c, first, "node-b")["snapshot_id"]
    a1 = task_of(c, first, "node-a")["snapshot_id"]

    # The attacker's snapshot: node-b's tree with b.txt's content swapped for
    # bytes of the same length; inode, size, mtime and ctime stay node-b's.
    evil = c.base / "evil.bin"
    evil.write_bytes((b"attacker was here " * 2000)[:len(real)])
    p = subprocess.run([os.fspath(FORGE), "--repo", os.fspath(c.repo), "--password-file", os.fspath(c.repo_pass),
                        "--snapshot", b1, "--path", os.fspath(victim), "--content-file", os.fspath(evil)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    forged = p.stdout.decode().strip()
    by_id = {s["id"]: s for s in snapshots(c)}
    assert by_id[forged]["hostname"] == by_id[b1]["hostname"] and by_id[forged]["paths"] == by_id[b1]["paths"]
    assert by_id[forged]["time"] > by_id[b1]["time"], "the forged snapshot must be the newest of node-b's paths"

    # node-b backs up again, its files unchanged.
    second = backup_set_id(c.ok("backup", "create", "--node", "node-b", "--wait"))
    b2 = task_of(c, second, "node-b")["snapshot_id"]
    parent = {s["id"]: s for s in snapshots(c)}[b2].get("parent", "")
    assert parent == b1, f"node-b's backup took parent {parent!r}; its own is {b1}, the forged {forged}, node-a's {a1}"

    # node-b loses the file and restores the set: its own bytes come back.
    victim.unlink()
    rc, out, err = c.ctl("restore", second, "--node", "node-b", "--wait")
    assert rc == 0, f"restore --wait exited {rc}\n{out}\n{err}\n{c.logs()}"
    got = victim.read_bytes()
    assert got != evil.read_bytes(), "node-b's restore wrote the attacker's bytes"
    assert got == real, "node-b's restore did not give its own bytes back"


def test_repo_backup_no_parent_reads_everything(tmp_path):
    """`cairnctl repo backup --no-parent`: no snapshot of the repository serves as parent."""
    env = dict(os.environ)
    pw = tmp_path / "pw"
    pw.write_text("pw\n")
    os.chmod(pw, 0o600)
    repo, data = tmp_path / "repo", tmp_path / "data"
    data.mkdir()
    (data / "x").write_bytes(b"x" * 5000)

    def ctl(*args):
        p = subprocess.run([os.fspath(CTL), *map(os.fspath, args), "--repo", os.fspath(repo), "--password-file",
                            os.fspath(pw)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=120)
        assert p.returncode == 0, p.stderr.decode(errors="replace")
        return p.stdout.decode()

    ctl("repo", "init")
    first = json.loads(ctl("repo", "backup", data, "--json").splitlines()[-1])
    searched = json.loads(ctl("repo", "backup", data, "--json").splitlines()[-1])
    assert searched["parent"] == first["snapshot_id"]
    none = json.loads(ctl("repo", "backup", data, "--no-parent", "--json").splitlines()[-1])
    assert none["parent"] == ""
    assert none["files_unmodified"] == 0, none
