"""The prometheus driver against a real Prometheus (servers_prometheus.py),
through the controller: the admin API snapshot is backed up, the data dir is
wiped, the restore brings back the same series and samples; a server without
its admin API is refused before anything runs, naming the flag."""
import json
import os
import shutil
import time

from cluster import backup_set_id, cluster, lower_enum, task_state, set_state, kind, restore_id  # noqa: F401
from servers_prometheus import Prometheus, prometheus_server  # noqa: F401

SELF = '{job="self"}'


def test_backup_wipe_restore_same_samples(cluster, prometheus_server, tmp_path):  # noqa: F811
    c, prom = cluster, prometheus_server
    c.add_agent("node-a", components=prom.component_toml())
    c.enrol("node-a")
    # A while of scraping, then a window that ends before the backup starts.
    prom.wait_samples('up{job="self"}', 8)
    end = time.time() - 1
    start = end - 300
    before = prom.raw_samples(SELF, start, end)
    assert len(before) > 50, f"too few series scraped: {len(before)}"
    assert sum(len(v) for v in before.values()) > 400

    rc, out, err = c.ctl("backup", "create", "--component", "prometheus", "--wait")
    assert rc == 0, f"backup exited {rc}\n{out}\n{err}\n{c.logs()}\n{prom.log_tail()}"
    set_id = backup_set_id(out)
    # Prometheus never removes its snapshots: the driver did.
    assert os.listdir(prom.data / "snapshots") == [], "the server's snapshot was left in its data dir"
    shown = c.json("backup", "show", set_id)
    assert set_state(shown) == "complete", shown
    # The server's metadata is stored with the snapshot in the repository.
    snap_id = shown["tasks"][0]["snapshot_id"]
    snaps = json.loads(c.ok("repo", "snapshots", "--json", "--repo", c.repo, "--password-file", c.repo_pass))
    meta = [s for s in snaps if s["id"] == snap_id][0].get("component", {})
    assert meta.get("prometheus_version", "").startswith("2."), meta
    assert meta["blocks"] >= 1 and meta["min_time"] <= start * 1000 + 300_000 and meta["max_time"] >= end * 1000, meta
    assert str(prom.data) in [s for s in snaps if s["id"] == snap_id][0]["paths"]
    # ... and reported to the controller: `backup show` (JSON and text) shows it.
    shown_meta = json.loads(shown["tasks"][0]["component_metadata"])
    assert shown_meta["prometheus_version"] == meta["prometheus_version"], shown_meta
    assert shown_meta["blocks"] == meta["blocks"], shown_meta
    text = c.ok("backup", "show", set_id)
    assert "recorded " in text and "prometheus_version=" + meta["prometheus_version"] in text, text

    # Wipe: the server comes back empty, the window answers nothing.
    prom.stop()
    shutil.rmtree(prom.data)
    prom.config.write_text(prom.config.read_text().replace("evaluation_interval: 1s", "evaluation_interval: 2s"))
    prom.start()
    assert prom.raw_samples(SELF, start, end) == {}, "the wipe left data behind"

    rc, out, err = c.ctl("restore", set_id, "--component", "prometheus", "--wait", timeout=300)
    assert rc == 0, f"restore exited {rc}\n{out}\n{err}\n{c.logs()}\n{prom.log_tail()}"
    r = c.json("restore", "show", restore_id(out))
    assert set_state(r) == "complete", r
    assert [task_state(t) for t in r["tasks"] if kind(t) == "restore"] == ["succeeded"], r
    # What the restore replaced (the wiped server's data) was saved first.
    assert [task_state(t) for t in r["tasks"] if kind(t) == "backup"] == ["succeeded"], r

    prom.wait_ready()
    after = prom.raw_samples(SELF, start, end)
    assert after.keys() == before.keys(), (
        f"series differ: missing {sorted(before.keys() - after.keys())[:5]}, extra {sorted(after.keys() - before.keys())[:5]}")
    for k in before:
        assert after[k] == before[k], f"samples of {dict(k)} differ after the restore"
    # The configuration came back; the wiped (empty) TSDB dir was kept aside.
    assert "evaluation_interval: 1s" in prom.config.read_text()
    kept = [p for p in os.listdir(prom.data.parent) if p.startswith("data.cairn-old-")]
    assert len(kept) == 1, os.listdir(prom.data.parent)
    assert not [p for p in os.listdir(prom.data.parent) if p.startswith("data.cairn-restore-")]


def test_admin_api_off_is_refused_naming_the_flag(cluster, tmp_path):  # noqa: F811
    c = cluster
    prom = Prometheus(tmp_path / "prometheus-no-admin", admin=False).start()
    try:
        c.add_agent("node-a", components=prom.component_toml())
        c.enrol("node-a")
        rc, out, err = c.ctl("backup", "create", "--component", "prometheus", "--wait")
        assert rc == 1, f"backup exited {rc}, expected 1 (failed)\n{out}\n{err}"
        shown = c.json("backup", "show", backup_set_id(out))
        tasks = shown["tasks"]
        assert len(tasks) == 1 and task_state(tasks[0]) == "failed", shown
        details = " ".join(r.get("detail", "") for r in tasks[0].get("reasons", []))
        assert "--web.enable-admin-api" in details, details
        assert "admin API" in details, details
        assert not os.path.exists(prom.data / "snapshots") or os.listdir(prom.data / "snapshots") == []
    finally:
        prom.stop()


def test_restore_of_a_stopped_server_needs_skip_safety_backup(cluster, prometheus_server):  # noqa: F811
    c, prom = cluster, prometheus_server
    c.add_agent("node-a", components=prom.component_toml())
    c.enrol("node-a")
    prom.wait_samples('up{job="self"}', 5)
    end = time.time() - 1
    before = prom.raw_samples(SELF, end - 300, end)
    assert before
    rc, out, err = c.ctl("backup", "create", "--component", "prometheus", "--wait")
    assert rc == 0, f"backup exited {rc}\n{out}\n{err}\n{c.logs()}"
    set_id = backup_set_id(out)

    # The server is down and its data gone: no safety backup can be taken.
    prom.stop()
    shutil.rmtree(prom.data)
    rc, out, err = c.ctl("restore", set_id, "--component", "prometheus", "--wait", timeout=300)
    assert rc == 1, f"restore exited {rc}, expected 1 (failed)\n{out}\n{err}"
    r = c.json("restore", "show", restore_id(out))
    details = " ".join(x.get("detail", "") for t in r["tasks"] for x in t.get("reasons", []))
    assert "--skip-safety-backup" in details and "not reachable" in details, r
    assert not prom.data.exists() and prom.pid() is None, "a refused restore changed something"

    rc, out, err = c.ctl("restore", set_id, "--component", "prometheus", "--skip-safety-backup", "--wait", timeout=300)
    assert rc == 0, f"restore exited {rc}\n{out}\n{err}\n{c.logs()}\n{prom.log_tail()}"
    assert prom.pid() is not None, "the restore did not start the server"
    prom.wait_ready()
    assert prom.raw_samples(SELF, end - 300, end) == before
    assert not [p for p in os.listdir(prom.data.parent) if p.startswith("data.cairn-old-")], "nothing was there to keep"


def test_second_backup_reads_no_unchanged_block(cluster, tmp_path):  # noqa: F811
    """The server's snapshot has a new name every run; stored at data_dir, the
    next backup finds the persisted blocks in its parent and reads none again."""
    c = cluster
    prom = Prometheus(tmp_path / "prometheus")
    samples = prom.backfill()
    prom.start()
    try:
        c.add_agent("node-a", components=prom.component_toml())
        c.enrol("node-a")
        got = prom.api("/api/v1/query", query="count_over_time(cairn_backfill[6h])", time=f"{time.time():.3f}")
        assert sum(float(r["value"][1]) for r in got["result"]) == samples, got
        blocks = [d for d in os.listdir(prom.data) if os.path.exists(prom.data / d / "meta.json")]
        assert blocks, os.listdir(prom.data)
        block_files = sum(len(fs) for d in blocks for _, _, fs in os.walk(prom.data / d))

        summaries = []
        for _ in range(2):
            rc, out, err = c.ctl("backup", "create", "--component", "prometheus", "--wait")
            assert rc == 0, f"backup exited {rc}\n{out}\n{err}\n{c.logs()}"
            sid = c.json("backup", "show", backup_set_id(out))["tasks"][0]["snapshot_id"]
            snaps = json.loads(c.ok("repo", "snapshots", "--json", "--repo", c.repo, "--password-file", c.repo_pass))
            summaries.append([s for s in snaps if s["id"] == sid][0]["summary"])
        assert summaries[0]["files_new"] >= block_files, summaries
        assert summaries[1]["files_unmodified"] >= block_files, summaries
    finally:
        prom.stop()
