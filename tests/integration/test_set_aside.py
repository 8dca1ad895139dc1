"""What in-place restores set aside beside the live data (docs/set-aside.md):
a real etcd member restored several times in a row keeps only the copies its
agent's [set_aside] rule keeps; a restore without a safety backup keeps its
copy whatever the rule says (the only copy of that data); /metrics counts the
copies and their bytes; `cairn-agent set-aside remove` removes them (an only
copy only with --force); a working dir a killed restore left is removed when
the agent starts again."""
import os
import subprocess
import time
import urllib.request

from cluster import AGENT, backup_set_id, cluster, restore_id  # noqa: F401  (cluster is a fixture)
from servers_etcd import EtcdMember, need_etcd


def metric(c, name, **labels):
    text = urllib.request.urlopen(c.http_url() + "metrics", timeout=10).read().decode()
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(name + "{") and want in line:
            return float(line.split()[-1])
    return None


def gauges(c):
    """(copies, bytes, only copies) of etcd on node-a, as /metrics says."""
    return tuple(metric(c, f"cairn_restore_set_aside_{n}", component="etcd", agent="node-a")
                 for n in ("copies", "bytes", "only_copies"))


def copies(dd, kind="old"):
    return sorted(p for p in dd.parent.iterdir() if p.name.startswith(f"{dd.name}.cairn-{kind}-"))


def tree_bytes(paths):
    """Regular files below, each inode once, links not followed (as the agent counts)."""
    seen, total = set(), 0
    for top in paths:
        for root, dirs, files in os.walk(top):
            for f in files:
                st = os.lstat(os.path.join(root, f))
                if (st.st_dev, st.st_ino) in seen or not os.path.isfile(os.path.join(root, f)):
                    continue
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def restore(c, sid, *extra):
    rc, out, err = c.ctl("restore", sid, "--component", "etcd", "--node", "node-a", *extra, "--wait", timeout=300)
    assert rc == 0, f"restore exited {rc}\n{out}\n{err}\n{c.logs()}"
    return restore_id(out)


def set_aside(c, *args):
    cfg = c.agent_dirs["node-a"]["config"]
    p = subprocess.run([os.fspath(AGENT), "--config", os.fspath(cfg), "set-aside", *args],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


def test_restores_in_a_row_keep_what_the_rule_says(cluster, tmp_path):
    need_etcd()
    c = cluster
    member = EtcdMember(tmp_path, "etcd-a").start()
    try:
        dd = member.data_dir
        c.add_agent("node-a", components=member.component_toml() + "\n[set_aside]\nkeep_last = 1\nkeep_days = 0\n",
                    env={"CAIRN_SET_ASIDE_INTERVAL_S": "2"})
        c.enrol("node-a")
        member.put_many({f"/registry/k{i:05d}": f"v-{i}-" + "x" * 200 for i in range(3000)})
        rc, out, err = c.ctl("backup", "create", "--component", "etcd", "--node", "node-a", "--wait")
        assert rc == 0, f"backup exited {rc}\n{out}\n{err}\n{c.logs()}"
        sid = backup_set_id(out)

        # Three restores with their safety backups: the newest copy stays, the
        # two before it (held by their safety snapshots) are gone.
        rids = [restore(c, sid) for _ in range(3)]
        left = copies(dd)
        assert len(left) == 1, left
        assert not copies(dd, "restore"), copies(dd, "restore")
        on_disk = tree_bytes(left)
        print(f"after 3 restores: {len(left)} set-aside copy, {on_disk} bytes beside {dd}")
        # The controller hears of it with the agent's next heartbeat: `restore
        # show` of the newest restore lists its copy, /metrics counts it.
        c.wait_for("restore show listing the copy", lambda: f"set aside on node-a: {left[0]}" in
                   c.ctl("restore", "show", rids[-1])[1], timeout=30)
        c.wait_for("/metrics counting the copy", lambda: gauges(c) == (1, on_disk, 0), timeout=30)
        rc, out, err = set_aside(c, "list")
        assert rc == 0 and os.fspath(left[0]) in out and rids[-1] in out and "kept: newest" in out, out + err
        rc, out, err = c.ctl("status")
        assert rc == 0 and "set aside by restores: 1 copy" in out, out
        rc, out, err = c.ctl("restore", "show", rids[-1])
        assert rc == 0 and "kept: newest" in out, out
        rc, out, err = c.ctl("restore", "show", rids[0])
        assert rc == 0 and "set aside on" not in out, out

        # Without a safety backup the copy is the only one of that data: kept
        # beside the newest, whatever keep_last says.
        skipped = restore(c, sid, "--skip-safety-backup")
        restore(c, sid)
        left = copies(dd)
        assert len(left) == 2, left
        print(f"after 5 restores, one without a safety backup: {len(left)} copies, {tree_bytes(left)} bytes")
        rc, out, err = set_aside(c, "list")
        assert rc == 0 and skipped in out and "kept: only-copy" in out, out + err
        c.wait_for("/metrics counting the only copy", lambda: gauges(c) == (2, tree_bytes(left), 1), timeout=30)

        # Removal by hand: the only copy needs --force.
        rc, out, err = set_aside(c, "remove", "--all")
        assert rc == 1 and "add --force" in out, out + err
        left = copies(dd)
        assert len(left) == 1 and skipped in set_aside(c, "list")[1], left
        rc, out, err = set_aside(c, "remove", "--path", os.fspath(dd.parent / "etcd-not-a-copy"))
        assert rc == 1 and "not a copy a restore set aside" in out, out + err
        rc, out, err = set_aside(c, "remove", "--all", "--force")
        assert rc == 0 and "removed" in out, out + err
        assert copies(dd) == [], copies(dd)
        assert member.get_all(), "the live data is still there"
        c.wait_for("/metrics saying no copy is left", lambda: gauges(c) == (0, 0, 0), timeout=30)

        # A working dir an agent killed mid-restore left (no restore record
        # names it): removed as the agent starts again.
        work = dd.parent / f"{dd.name}.cairn-restore-0dead0ff"
        (work / "extracted").mkdir(parents=True)
        (work / "extracted" / "etcd.db").write_bytes(b"\0" * 65536)
        agent = c.agents["node-a"]
        agent.kill()
        agent.start()
        c.wait_for("the leftover working dir removed", lambda: not work.exists(), timeout=30)
    finally:
        member.stop()
