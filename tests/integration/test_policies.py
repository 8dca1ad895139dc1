"""Backup policies end to end (issue 12): a real controller and agent on
127.0.0.1, driven with cairnctl. Schedules fire, a run due while the previous
one runs is skipped with the reason, runs missed while the controller was down
run once, retention expires sets, and the controller removes their snapshots
and prunes the repository while the newest sets still restore."""
import json
import os
import re
import time
import urllib.request

from cluster import backup_set_id, cluster, lower_enum, restore_id, set_state  # noqa: F401


def with_repository(c, extra=""):
    """Declares the test repository to the controller (it prunes it), plus extra TOML; restarts it."""
    c.controller.stop()
    c.controller_cfg.write_text(c.controller_cfg.read_text() + f"""
[[repository]]
name = "main"
path = "{c.repo}"
password_file = "{c.repo_pass}"
{extra}""")
    c.start_controller()


def policy(c, name):
    return c.json("policy", "show", name)


def runs(c, name):
    return policy(c, name).get("runs", [])


def sets_of(c, name):
    return [s for s in c.json("backup", "list", "--limit", "1000")["sets"] if s.get("policy") == name]


def repo_snapshots(c):
    return json.loads(c.ok("repo", "snapshots", "--json", "--repo", c.repo, "--password-file", c.repo_pass))


def pack_bytes(c):
    return sum(p.stat().st_size for p in (c.repo / "data").rglob("*") if p.is_file())


def run_now_and_wait(c, name):
    """policy run-now, then waits for that run's set to end; returns the set."""
    before = {s["backup_set_id"] for s in sets_of(c, name)}
    c.ok("policy", "run-now", name)
    new = c.wait_for(f"a new set of policy {name}",
                     lambda: [s for s in sets_of(c, name) if s["backup_set_id"] not in before], timeout=30)
    assert len(new) == 1, new
    sid = new[0]["backup_set_id"]
    return c.wait_for(f"set {sid} ending",
                      lambda: next((s for s in sets_of(c, name) if s["backup_set_id"] == sid
                                    and set_state(s) != "running"), None), timeout=60)


def test_retention_expires_old_sets_prunes_and_the_newest_still_restore(cluster):
    c = cluster
    with_repository(c)
    c.add_agent("node-a", {"keep.txt": b"kept in every set\n" * 100})
    c.enrol("node-a")
    data = c.agent_dirs["node-a"]["data"]
    # A schedule that does not fire during the test (once a year): runs are started by hand.
    out = c.ok("policy", "add", "hourly", "--schedule", "0 0 1 1 *", "--component", "data", "--keep-last", "2")
    assert "policy hourly added" in out and "last 2" in out, out

    contents, ids = [], []
    for i in range(4):
        blob = os.urandom(400_000)  # unique each run: what the old sets alone hold
        (data / "run.bin").write_bytes(blob)
        contents.append(blob)
        s = run_now_and_wait(c, "hourly")
        assert set_state(s) == "complete", s
        assert s["trigger"] == "schedule" and s["requested_by"] == "operator:it", s
        ids.append(s["backup_set_id"])

    # Retention ran after each complete run; the controller removes the
    # expired sets' snapshots and prunes once no backup writes to the repository.
    def forgotten():
        gone = [s for s in sets_of(c, "hourly") if int(s.get("forgotten_at", 0))]
        return gone if len(gone) == 2 else None
    gone = c.wait_for("the two oldest sets forgotten", forgotten, timeout=60)
    sets = sets_of(c, "hourly")
    kept = [s for s in sets if not int(s.get("forgotten_at", 0))]
    # The two newest runs are kept (runs of one second too, in the order they ran), the two oldest gone.
    assert sorted(s["backup_set_id"] for s in kept) == sorted(ids[2:]), (ids, sets)
    assert sorted(s["backup_set_id"] for s in gone) == sorted(ids[:2]), (ids, sets)
    assert [s["backup_set_id"] for s in sets] == ids[::-1], "backup list is newest first, in the order sets were made"
    newest = ids[3]
    snaps = repo_snapshots(c)
    assert len(snaps) == 2, f"the repository still holds the forgotten sets' snapshots: {snaps}"
    for s in gone:
        assert all(s["backup_set_id"] not in json.dumps(x) for x in snaps), (s, snaps)
    # Prune freed the unique data only the forgotten sets held.
    assert pack_bytes(c) < 3 * 400_000, f"pack data {pack_bytes(c)} bytes after prune"
    assert "retention: repository 'main'" in c.controller.log.read_text(), c.logs()
    # /metrics: retention has no backlog left in the repository.
    # (The controller renders it every 2 s.)
    def no_backlog():
        text = urllib.request.urlopen(c.http_url() + "metrics", timeout=10).read().decode()
        return text if re.search(r'^cairn_backup_sets_expired\{repository="main"\} 0$', text, re.M) else None
    text = c.wait_for("no expired sets left in /metrics", no_backlog, timeout=10)
    assert "cairn_backup_sets_expired_oldest_timestamp_seconds{" not in text, text

    # forget --dry-run says which rule keeps each set, and changes nothing.
    out = c.ok("forget", "--dry-run", "--policy", "hourly")
    assert out.count("kept by last") == 2, out
    assert "dry run: 0 set(s) would be forgotten" in out, out

    # The newest set restores its bytes; a forgotten one is refused, clearly.
    (data / "run.bin").write_bytes(b"damaged")
    rc, out, err = c.ctl("restore", newest, "--wait", "--skip-safety-backup")
    assert rc == 0, f"{out}\n{err}\n{c.logs()}"
    assert (data / "run.bin").read_bytes() == contents[3]
    rc, out, err = c.ctl("restore", gone[0]["backup_set_id"], "--wait")
    assert rc != 0
    assert "expired by policy 'hourly'" in err and "snapshots removed" in err, err


def test_schedule_fires_and_a_run_never_overlaps_the_previous_one(cluster):
    c = cluster
    c.add_agent("node-a", {"a.txt": b"alpha"})
    c.enrol("node-a")
    # The agent goes away: the first run's set waits for it, still running.
    c.agents["node-a"].stop()
    c.ok("policy", "add", "often", "--schedule", "@every 2s")
    c.wait_for("a run started", lambda: any(r["outcome"] == "started" for r in runs(c, "often")), timeout=15)
    skipped = c.wait_for("a later run skipped",
                         lambda: [r for r in runs(c, "often") if r["outcome"] == "skipped"], timeout=15)
    first = next(r for r in runs(c, "often") if r["outcome"] == "started")
    assert first["backup_set_id"] in skipped[0]["reason"] and "still running" in skipped[0]["reason"], skipped
    assert len(sets_of(c, "often")) == 1
    out = c.ok("policy", "show", "often")
    assert "skipped" in out and "next runs" in out, out
    # The agent back: the set completes, and the schedule starts new runs again.
    c.agents["node-a"].start()
    c.wait_for("the first set complete",
               lambda: set_state(next(s for s in sets_of(c, "often")
                                      if s["backup_set_id"] == first["backup_set_id"])) == "complete", timeout=60)
    c.wait_for("a second set", lambda: len(sets_of(c, "often")) >= 2, timeout=20)
    # Paused, it starts nothing.
    c.ok("policy", "pause", "often")
    c.wait_for("every set ended", lambda: all(set_state(s) != "running" for s in sets_of(c, "often")), timeout=60)
    n = len(sets_of(c, "often"))
    p = policy(c, "often")
    assert p["paused"] and not p.get("next_runs"), p
    time.sleep(5)
    assert len(sets_of(c, "often")) == n


def test_configured_policy_wins_and_missed_runs_run_once(cluster):
    c = cluster
    c.add_agent("node-a", {"a.txt": b"alpha"})
    c.enrol("node-a")
    c.ok("policy", "add", "nightly", "--schedule", "0 0 1 1 *")
    with_repository(c, """
[[policy]]
name = "nightly"
schedule = "@every 3s"
components = ["data"]
keep_last = 3
keep_min = 2
""")
    p = policy(c, "nightly")
    assert p["source"] == "config" and p["spec"]["schedule"] == "@every 3s", p
    assert "replaces the catalog's policy" in c.controller.log.read_text()
    rc, out, err = c.ctl("policy", "edit", "nightly", "--schedule", "@daily")
    assert rc != 0 and "declared in the controller's configuration" in err, err
    c.wait_for("a scheduled run", lambda: any(r["trigger"] == "schedule" for r in runs(c, "nightly")), timeout=20)

    # Down for about four periods: one run stands for the missed ones.
    c.controller.stop()
    time.sleep(13)
    c.start_controller()
    missed = c.wait_for("the missed run", lambda: [r for r in runs(c, "nightly") if r["trigger"] == "missed"],
                        timeout=20)
    assert len(missed) == 1, runs(c, "nightly")
    assert "fell due while the controller was not running" in missed[0]["reason"], missed
    time.sleep(4)
    assert len([r for r in runs(c, "nightly") if r["trigger"] == "missed"]) == 1


def test_bad_policies_are_refused_with_the_reason(cluster):
    c = cluster
    rc, out, err = c.ctl("policy", "add", "x", "--schedule", "61 * * * *")
    assert rc != 0 and "minute field '61'" in err, err
    rc, out, err = c.ctl("policy", "add", "x", "--schedule", "@daily", "--tz", "Mars/Olympus")
    assert rc != 0 and "unknown time zone 'Mars/Olympus'" in err, err
    rc, out, err = c.ctl("policy", "add", "x")
    assert rc != 0 and "--schedule" in err, err
    rc, out, err = c.ctl("policy", "add", "bad name", "--schedule", "@daily")
    assert rc != 0
    rc, out, err = c.ctl("policy", "show", "nope")
    assert rc != 0 and "no policy 'nope'" in err, err
    # A bad [[policy]] stops the controller at start with the place and the reason.
    c.controller.stop()
    c.controller_cfg.write_text(c.controller_cfg.read_text() + '\n[[policy]]\nname = "p"\nschedule = "0 25 * * *"\n')
    c.controller.start()
    deadline = time.monotonic() + 20
    while c.controller.alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not c.controller.alive()
    log = c.controller.log.read_text()
    assert "controller.toml" in log and "policy 'p'" in log and "hour field" in log, log[-2000:]


def test_a_set_written_to_another_repository_restores_from_it_with_its_safety_backup(cluster):
    """A policy's --repository: its sets live in that repository, not the
    component's default; restoring one reads it from there, and the safety
    backup of what it overwrites goes there too."""
    c = cluster
    offsite = c.base / "offsite"
    c.ok("repo", "init", "--repo", offsite, "--password-file", c.repo_pass)
    # The first line ends the 'data' component's table: its default is 'main'.
    c.add_agent("node-a", {"app.conf": b"version 1\n" * 50}, components=f"""repository = "main"
[[repository]]
name = "offsite"
path = "{offsite}"
password_file = "{c.repo_pass}"
""")
    c.enrol("node-a")
    data = c.agent_dirs["node-a"]["data"]
    c.ok("policy", "add", "off", "--schedule", "0 0 1 1 *", "--component", "data", "--repository", "offsite")
    s = run_now_and_wait(c, "off")
    assert set_state(s) == "complete", s

    def snaps(repo):
        return json.loads(c.ok("repo", "snapshots", "--json", "--repo", repo, "--password-file", c.repo_pass))
    assert len(snaps(offsite)) == 1 and snaps(c.repo) == [], (snaps(offsite), snaps(c.repo))
    first = snaps(offsite)[0]

    (data / "app.conf").write_bytes(b"version 2, damaged\n")
    rc, out, err = c.ctl("restore", s["backup_set_id"], "--wait")
    assert rc == 0, f"{out}\n{err}\n{c.logs()}"
    assert (data / "app.conf").read_bytes() == b"version 1\n" * 50
    # The safety backup holds what the restore overwrote, beside the set it restored.
    after = snaps(offsite)
    assert len(after) == 2 and snaps(c.repo) == [], (after, snaps(c.repo))
    safety = next(x for x in after if "safety" in x["tags"])
    assert safety["parent"] == first["id"] and f"restore-of:{first['id']}" in safety["tags"], after
    sets = c.json("backup", "list", "--limit", "10")["sets"]
    assert [x["trigger"] for x in sets if x["state"] == "SET_STATE_COMPLETE"] == ["safety", "schedule"], sets
