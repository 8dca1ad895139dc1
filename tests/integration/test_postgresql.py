"""The postgresql driver against a real PostgreSQL 15 (servers_postgresql.py),
through the controller: base backups while the server runs, WAL archived
through the agent (archive_command = cairn-agent wal-push), point-in-time
recovery to a time between two transactions, continuous archiving through a
segment switch storm with the agent killed in the middle, and a damaged WAL
segment in the repository refused before anything is stopped."""
import json
import os
import signal
import time

from cluster import backup_set_id, cluster, killed_mid_restore, kind, restore_id, set_state, task_state  # noqa: F401
from servers_postgresql import postgres_server  # noqa: F401


def _details(r):
    return " ".join(x.get("detail", "") for t in r["tasks"] for x in t.get("reasons", []))


def _wal_snapshots(c):
    snaps = json.loads(c.ok("repo", "snapshots", "--json", "--repo", c.repo, "--password-file", c.repo_pass))
    out = {}
    for s in snaps:
        tags = s.get("tags") or []
        if "wal" in tags:
            name = [t[4:] for t in tags if t.startswith("wal:")][0]
            out[name] = s
    return out


def _segments(names, timeline="00000001"):
    return sorted(n for n in names if len(n) == 24 and n.startswith(timeline))


def _backup(c, pg):
    rc, out, err = c.ctl("backup", "create", "--component", "pg", "--wait", timeout=600)
    assert rc == 0, f"backup exited {rc}\n{out}\n{err}\n{c.logs()}{pg.log_tail()}"
    set_id = backup_set_id(out)
    shown = c.json("backup", "show", set_id)
    assert set_state(shown) == "complete", shown
    return set_id, json.loads(shown["tasks"][0]["component_metadata"])


def test_pitr_to_a_time_between_two_transactions(cluster, postgres_server):  # noqa: F811
    c, pg = cluster, postgres_server
    c.add_agent("node-a", components=pg.component_toml())
    c.enrol("node-a")
    pg.pgbench("-i", "-s", "2", "-q")
    accounts = int(pg.value("SELECT count(*) FROM pgbench_accounts"))
    assert accounts == 200000
    pg.sql("CREATE TABLE marks (id int PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())")

    set_id, meta = _backup(c, pg)
    # What the backup recorded: the label pg_backup_stop gave, and the WAL it needs.
    assert "START WAL LOCATION" in meta["backup_label"] and meta["timeline"] == 1, meta
    assert meta["mode"] == "physical" and "postgres" in meta["databases"], meta
    wal = _wal_snapshots(c)
    assert meta["start_wal"] in wal and meta["stop_wal"] in wal, (meta, sorted(wal))

    # Two transactions a second apart, and a time between them.
    pg.sql("INSERT INTO marks (id) VALUES (1)")
    time.sleep(1.2)
    between = pg.value("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
    time.sleep(1.2)
    pg.sql("INSERT INTO marks (id) VALUES (2)")
    pg.pgbench("-t", "200", "-c", "2", "-n")
    pg.switch_and_wait_archived()
    assert pg.value("SELECT count(*) FROM marks") == "2"

    # A time before the base backup is refused before anything is ordered,
    # saying what the catalog covers.
    rc, out, err = c.ctl("restore", set_id, "--component", "pg", "--to-time", "2001-01-01T00:00:00Z", "--wait",
                         timeout=600)
    assert rc != 0 and "no base backup of it is older" in err and "is consistent from" in err, (rc, out, err)
    rc, out, err = c.ctl("restore", "--component", "pg", "--to-time", "2001-01-01T00:00:00Z")
    assert rc != 0 and "no base backup of 'pg' on node-a is consistent before time 2001-01-01" in err, (rc, out, err)
    # A time after the newest archived WAL: the agent refuses, saying what the repository covers.
    rc, out, err = c.ctl("restore", set_id, "--component", "pg", "--to-time", "2099-01-01T00:00:00Z", "--wait",
                         timeout=600)
    assert rc == 1, f"restore exited {rc}\n{out}\n{err}"
    r = c.json("restore", "show", restore_id(out))
    assert "after the newest archived WAL" in _details(r) and "up to LSN" in _details(r), r
    assert pg.value("SELECT count(*) FROM marks") == "2", "a refused restore changed the server"

    rc, out, err = c.ctl("restore", set_id, "--component", "pg", "--to-time", between, "--wait", timeout=900)
    assert rc == 0, f"restore exited {rc}\n{out}\n{err}\n{c.logs()}{pg.log_tail()}"
    r = c.json("restore", "show", restore_id(out))
    assert set_state(r) == "complete", r
    # Exactly what was committed by then: mark 1, not mark 2; pgbench's rows.
    assert pg.sql("SELECT id FROM marks ORDER BY id") == [["1"]], pg.log_tail()
    assert int(pg.value("SELECT count(*) FROM pgbench_accounts")) == accounts
    assert pg.value("SELECT pg_is_in_recovery()") == "f"
    # Promoted onto a new timeline; the recovery settings are gone again.
    assert pg.value("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)") == "00000002"
    conf = (pg.data / "postgresql.auto.conf").read_text()
    assert "restore_command" not in conf and "cairn recovery" not in conf, conf
    parent = os.listdir(pg.data.parent)
    assert not [p for p in parent if ".cairn-wal-" in p or ".cairn-restore-" in p], parent
    assert [p for p in parent if p.startswith("data.cairn-old-")], parent

    # The new timeline is archived beside the old one, and backed up.
    pg.sql("INSERT INTO marks (id) VALUES (3)")
    seg = pg.switch_and_wait_archived()
    assert seg.startswith("00000002"), seg
    wal = _wal_snapshots(c)
    assert "00000002.history" in wal and seg in wal, sorted(wal)
    set2, meta2 = _backup(c, pg)
    assert meta2["timeline"] == 2, meta2

    # A set whose base backup is newer than the target is refused, naming the
    # one to use; with no set named, the controller picks it.
    rc, out, err = c.ctl("restore", set2, "--component", "pg", "--to-time", between)
    assert rc != 0 and f"restore set '{set_id}' instead" in err, (rc, out, err)
    rc, out, err = c.ctl("restore", "--component", "pg", "--to-time", between, "--wait", timeout=900)
    assert rc == 0, f"restore exited {rc}\n{out}\n{err}\n{c.logs()}{pg.log_tail()}"
    assert f"from set {set_id}" in out, out
    assert pg.sql("SELECT id FROM marks ORDER BY id") == [["1"]], pg.log_tail()
    # Promoted onto timeline 3: timeline 2, which the archive holds, is not reused.
    assert pg.value("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)") == "00000003"
    pg.sql("INSERT INTO marks (id) VALUES (4)")
    assert pg.switch_and_wait_archived().startswith("00000003")
    assert "00000003.history" in _wal_snapshots(c)

    # --to-latest of the first set follows the newest timeline that branched
    # from it (3, as PostgreSQL's own default): marks 1 and 4.
    rc, out, err = c.ctl("restore", set_id, "--component", "pg", "--to-latest", "--wait", timeout=900)
    assert rc == 0, f"restore exited {rc}\n{out}\n{err}\n{c.logs()}{pg.log_tail()}"
    assert pg.sql("SELECT id FROM marks ORDER BY id") == [["1"], ["4"]], pg.log_tail()
    # --target-timeline current replays the old timeline's whole archive:
    # mark 2 is back (and 3 and 4, of later timelines, are not).
    rc, out, err = c.ctl("restore", set_id, "--component", "pg", "--to-latest", "--target-timeline", "current",
                         "--wait", timeout=900)
    assert rc == 0, f"restore exited {rc}\n{out}\n{err}\n{c.logs()}{pg.log_tail()}"
    assert pg.sql("SELECT id FROM marks ORDER BY id") == [["1"], ["2"]], pg.log_tail()


def test_an_incremental_base_backup_stores_about_the_pages_that_changed(cluster, postgres_server):  # noqa: F811
    """Relation files are cut into small chunks (issue 36): after twenty rows
    far apart in a 50 MB table are updated and checkpointed, the next base
    backup stores about the pages that changed, in 128 KiB chunks on
    average: 8.3 MB of 86 MB when this was written. With 1 MiB chunks (256
    KiB at the least, 4 MiB at the most) each page re-stores the chunk around
    it: 43 MB."""
    c, pg = cluster, postgres_server
    c.add_agent("node-a", components=pg.component_toml())
    c.enrol("node-a")
    pg.pgbench("-i", "-s", "4", "-q")
    pg.sql("VACUUM (FREEZE, ANALYZE) pgbench_accounts")
    pg.sql("CHECKPOINT")
    first, _ = _backup(c, pg)
    pg.sql("UPDATE pgbench_accounts SET abalance = abalance + 7 WHERE aid % 20000 = 1")
    pg.sql("CHECKPOINT")
    second, _ = _backup(c, pg)
    snaps = {s["id"]: s for s in json.loads(c.ok("repo", "snapshots", "--json", "--repo", c.repo, "--password-file", c.repo_pass))}

    def summary(set_id):
        (t,) = c.json("backup", "show", set_id)["tasks"]
        return snaps[t["snapshot_id"]]["summary"]
    s1, s2 = summary(first), summary(second)
    assert int(s2["bytes_total"]) > 50 << 20, s2
    assert int(s1["data_added_raw"]) > 50 << 20, s1
    assert int(s2["data_added_raw"]) < 16 << 20, s2
    assert pg.value("SELECT count(*) FROM pgbench_accounts WHERE abalance = 7") == "20"


def test_switch_storm_with_the_agent_killed_loses_no_segment(cluster, postgres_server):  # noqa: F811
    c, pg = cluster, postgres_server
    agent = c.add_agent("node-a", components=pg.component_toml())
    c.enrol("node-a")
    pg.sql("CREATE TABLE t (i int)")
    first = pg.switch_and_wait_archived()
    names = []
    for i in range(24):
        pg.sql(f"INSERT INTO t VALUES ({i})")
        names.append(pg.value("SELECT pg_walfile_name(pg_current_wal_insert_lsn())"))
        pg.value("SELECT pg_switch_wal()")
        if i == 8:
            agent.kill()  # mid-storm: the server keeps what it cannot hand over
        if i == 16:
            c.wait_for("archiving to fail while the agent is down",
                       lambda: int(pg.value("SELECT failed_count FROM pg_stat_archiver")) > 0, timeout=30)
            agent.start()
    pg.sql("INSERT INTO t VALUES (99)")
    last = pg.switch_and_wait_archived(timeout=300)
    wal = _wal_snapshots(c)
    segs = _segments(wal)
    want = [s for s in segs if first <= s <= last]
    # Every segment from the first to the last, in order, none missing.
    lo, hi = int(first[8:], 16), int(last[8:], 16)
    expected = [first[:8] + f"{n:016X}" for n in range(lo, hi + 1)]
    assert want == expected, f"missing: {sorted(set(expected) - set(want))}"
    for n in names:
        assert n in wal, n
    # What the server holds is what the repository holds: the archiver caught up.
    assert pg.value("SELECT last_archived_wal FROM pg_stat_archiver") == last
    # The private copies live in the agent's own 0700 directory, emptied as it
    # starts: the killed agent's copies are gone, only the running one's is there.
    bg = c.base / "node-a" / "state" / "background" / "pg"
    assert bg.is_dir() and (bg.stat().st_mode & 0o777) == 0o700, bg
    assert len(list(bg.iterdir())) <= 1, sorted(bg.iterdir())


def test_damaged_wal_segment_is_refused_before_anything_stops(cluster, postgres_server):  # noqa: F811
    c, pg = cluster, postgres_server
    c.add_agent("node-a", components=pg.component_toml())
    c.enrol("node-a")
    pg.sql("CREATE TABLE t (i int)")
    set_id, meta = _backup(c, pg)
    pg.sql("INSERT INTO t VALUES (1)")
    time.sleep(0.3)
    between = pg.value("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
    time.sleep(0.3)
    pg.sql("INSERT INTO t VALUES (11)")
    pg.switch_and_wait_archived()
    # The packs written for the next segment alone, then damaged.
    data = os.path.join(c.repo, "data")

    def packs():
        return {os.path.join(dp, f) for dp, _, fns in os.walk(data) for f in fns}

    before = packs()
    pg.sql("INSERT INTO t SELECT generate_series(1, 20000)")
    damaged = pg.switch_and_wait_archived()
    new = packs() - before
    assert new, "the segment wrote no pack"
    for p in new:
        with open(p, "r+b") as f:
            f.seek(os.path.getsize(p) // 2)
            b = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([b[0] ^ 0x40]))
    pg.sql("INSERT INTO t VALUES (2)")
    pg.switch_and_wait_archived()
    rows = pg.value("SELECT count(*) FROM t")

    rc, out, err = c.ctl("restore", set_id, "--component", "pg", "--to-latest", "--wait", timeout=900)
    assert rc == 1, f"restore exited {rc}\n{out}\n{err}"
    r = c.json("restore", "show", restore_id(out))
    d = _details(r)
    assert f"'{damaged}'" in d and "damaged" in d and "can reach LSN" in d and "nothing was changed" in d, d
    # The server ran on, untouched.
    assert pg.value("SELECT count(*) FROM t") == rows
    assert pg.value("SELECT pg_is_in_recovery()") == "f"
    # A time inside the intact WAL before the damage is reached (the commit
    # records there are read), by time as by LSN.
    rc, out, err = c.ctl("restore", set_id, "--component", "pg", "--to-time", between, "--wait", timeout=900)
    assert rc == 0, f"restore exited {rc}\n{out}\n{err}\n{c.logs()}{pg.log_tail()}"
    assert pg.sql("SELECT i FROM t ORDER BY i") == [["1"]], pg.log_tail()


def test_repository_unreachable_shows_the_lag_then_archiving_catches_up(cluster, postgres_server):  # noqa: F811
    import urllib.request
    c, pg = cluster, postgres_server
    c.add_agent("node-a", components=pg.component_toml())
    c.enrol("node-a")
    pg.sql("CREATE TABLE t (i int)")
    first = pg.switch_and_wait_archived()
    away = str(c.repo) + ".away"
    os.rename(c.repo, away)  # the repository's disk gone for a while
    try:
        for i in range(3):
            pg.sql(f"INSERT INTO t VALUES ({i})")
            pg.value("SELECT pg_switch_wal()")

        def failing():
            st = c.json("status")
            rows = [x for x in st.get("components", []) if x["component"] == "pg"]
            return rows and rows[0].get("wal_last_error") and int(rows[0].get("wal_pending", 0)) >= 1 and rows[0]
        row = c.wait_for("the status to show the archive failing", failing, timeout=60)
        assert "no repository at" in row["wal_last_error"], row
        text = c.ok("status")
        assert "WAL archived" in text and "FAILING" in text, text
        base = c.http_url()

        def scraped():
            body = urllib.request.urlopen(base + "metrics", timeout=10).read().decode()
            lines = [ln for ln in body.splitlines()
                     if ln.startswith('cairn_wal_archive_failures_total{component="pg",agent="node-a"}')]
            return lines and float(lines[0].split()[-1]) > 0 and body
        body = c.wait_for("/metrics to count the failures", scraped, timeout=30)
        assert 'cairn_wal_pending_files{component="pg",agent="node-a"}' in body
        # PostgreSQL kept every segment it could not hand over.
        assert int(pg.value("SELECT failed_count FROM pg_stat_archiver")) > 0
    finally:
        os.rename(away, c.repo)
    pg.sql("INSERT INTO t VALUES (99)")
    last = pg.switch_and_wait_archived(timeout=300)
    segs = _segments(_wal_snapshots(c))
    lo, hi = int(first[8:], 16), int(last[8:], 16)
    assert [s for s in segs if first <= s <= last] == [first[:8] + f"{n:016X}" for n in range(lo, hi + 1)]
    c.wait_for("the status to clear the failure",
               lambda: not [x for x in c.json("status").get("components", [])
                            if x["component"] == "pg" and x.get("wal_last_error")], timeout=30)


def test_logical_mode_round_trip_of_databases_roles_and_grants(cluster, postgres_server):  # noqa: F811
    c, pg = cluster, postgres_server
    # Beside restores in place, a restore to the target "copy" makes shop and
    # "Odd Name" as new databases beside the live ones.
    c.add_agent("node-a", components=pg.component_toml() +
                'logical_restore_as = { shop = "shop copy", "Odd Name" = "odd=copy" }\nrestore_to_name = "copy"\n')
    c.enrol("node-a")
    pg.make_shop_databases()
    rc, out, err = c.ctl("backup", "create", "--component", "pg", "--mode", "logical", "--wait", timeout=600)
    assert rc == 0, f"backup exited {rc}\n{out}\n{err}\n{c.logs()}"
    set_id = backup_set_id(out)
    meta = json.loads(c.json("backup", "show", set_id)["tasks"][0]["component_metadata"])
    assert meta["mode"] == "logical" and {"shop", "Odd Name", "postgres"} <= set(meta["databases"]), meta
    assert not os.path.exists(str(pg.data) + ".cairn-dump"), "the dumps were left on disk"
    # No secret in the agent's log or a command line it ran.
    log = (c.agent_dirs["node-a"]["dir"] / "agent.log").read_text(errors="replace")
    assert "pg-test-secret" not in log

    # Lost: one database dropped, the other's rows changed, the role gone.
    pg.sql('DROP DATABASE "Odd Name"')
    pg.sql("DELETE FROM items WHERE id > 10", db="shop")
    pg.sql("DROP OWNED BY reader", db="shop")
    pg.sql("DROP ROLE reader")

    rc, out, err = c.ctl("restore", set_id, "--component", "pg", "--wait", timeout=900)
    assert rc == 0, f"restore exited {rc}\n{out}\n{err}\n{c.logs()}{pg.log_tail()}"
    for db in ("shop", "Odd Name"):
        assert pg.value("SELECT count(*) FROM items", db=db) == "5000", db
        assert pg.value("SELECT has_table_privilege('reader', 'items', 'SELECT')", db=db) == "t", db
    assert pg.value("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'reader'") == "t"
    # A point-in-time target does not apply to a dump.
    rc, out, err = c.ctl("restore", set_id, "--component", "pg", "--to-latest", "--wait", timeout=600)
    assert rc == 1, (rc, out, err)
    assert "logical dump" in _details(c.json("restore", "show", restore_id(out)))

    # Into other names, beside the live databases: those are left as they are now.
    pg.sql("DELETE FROM items WHERE id > 100", db="shop")
    rc, out, err = c.ctl("restore", set_id, "--component", "pg", "--target", "copy", "--skip-safety-backup", "--wait",
                         timeout=600)
    assert rc == 0, f"restore exited {rc}\n{out}\n{err}\n{c.logs()}{pg.log_tail()}"
    # (psql reads a -d holding '=' as a connection string: hence dbname='...'.)
    for db in ("shop copy", "dbname='odd=copy'"):
        assert pg.value("SELECT count(*) FROM items", db=db) == "5000", db
        assert pg.value("SELECT has_table_privilege('reader', 'items', 'SELECT')", db=db) == "t", db
    assert pg.value("SELECT count(*) FROM items", db="shop") == "100"
    assert pg.value("SELECT count(*) FROM items", db="Odd Name") == "5000"
    # Again: the new names are taken now, so nothing is made or changed.
    pg.sql("DELETE FROM items WHERE id > 10", db="shop copy")
    rc, out, err = c.ctl("restore", set_id, "--component", "pg", "--target", "copy", "--skip-safety-backup", "--wait",
                         timeout=600)
    assert rc == 1, (rc, out, err)
    assert "databases 'odd=copy', 'shop copy' exist already" in _details(c.json("restore", "show", restore_id(out)))
    assert pg.value("SELECT count(*) FROM items", db="shop copy") == "10"
    # A target the component does not declare is refused before the plan runs.
    rc, out, err = c.ctl("restore", set_id, "--component", "pg", "--target", "elsewhere", "--wait", timeout=600)
    said = out + err + (_details(c.json("restore", "show", restore_id(out))) if " created" in out else "")
    assert rc != 0 and "restore target 'elsewhere'" in said, (rc, out, err)


def test_a_standby_is_the_backup_source_and_its_backup_restores(cluster, postgres_server):  # noqa: F811
    import threading
    from cluster import AGENT
    c, pg = cluster, postgres_server
    sb = pg.start_standby(AGENT)
    try:
        c.add_agent("node-a", components=pg.component_toml() + sb.component_toml())
        c.enrol("node-a")
        pg.sql("INSERT INTO marks VALUES (1)")
        c.wait_for("the standby to replay", lambda: sb.value("SELECT count(*) FROM marks") == "1", timeout=60)
        # A standby cannot close a segment itself: pg_backup_stop waits until
        # the primary does (archive_timeout in production; here, by hand).
        stop = threading.Event()

        def switch():
            while not stop.wait(1.0):
                pg.sql("SELECT pg_switch_wal(), txid_current()")
        t = threading.Thread(target=switch, daemon=True)
        t.start()
        try:
            rc, out, err = c.ctl("backup", "create", "--component", "pg-standby", "--wait", timeout=600)
        finally:
            stop.set()
            t.join()
        assert rc == 0, f"backup exited {rc}\n{out}\n{err}\n{c.logs()}{sb.log_tail()}"
        set_id = backup_set_id(out)
        meta = json.loads(c.json("backup", "show", set_id)["tasks"][0]["component_metadata"])
        assert meta["from_standby"] is True and meta["mode"] == "physical", meta
        pg.sql("INSERT INTO marks VALUES (2)")
        c.wait_for("the standby to replay", lambda: sb.value("SELECT count(*) FROM marks") == "2", timeout=60)
        seg = pg.switch_and_wait_archived()
        c.wait_for("the standby to archive the same segment",
                   lambda: sb.value("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")[:24] >= seg, timeout=120)
        # The standby's own backup and archive restore it, promoted, with every commit.
        rc, out, err = c.ctl("restore", set_id, "--component", "pg-standby", "--to-latest", "--wait", timeout=900)
        assert rc == 0, f"restore exited {rc}\n{out}\n{err}\n{c.logs()}{sb.log_tail()}"
        assert sb.value("SELECT pg_is_in_recovery()") == "f"
        assert sb.sql("SELECT id FROM marks ORDER BY id") == [["1"], ["2"]]
        assert int(sb.value("SELECT count(*) FROM pgbench_accounts")) == 100000
    finally:
        sb.cleanup()


def test_an_agent_killed_mid_restore_puts_the_previous_data_back_at_its_start(cluster, postgres_server, tmp_path):  # noqa: F811
    """The agent SIGKILLed inside a physical restore (docs/protocol.md § An agent
    stopped during an in-place restore): with the server stopped, with the data
    directory swapped, and with the server started on the restored copy and
    replaying. Each time the controller ends the restore failed (agent lost);
    at the agent's restart the server runs again on the data it had before the
    restore (a row written after the backup is there), the restored copy is
    kept aside, and `restore show` says what the agent did. Then the agent
    frozen with the data swapped and thawed once the controller lost it: it
    finishes the restore, and the lost task says the server runs on the
    backup's data. A last restore without a fault then completes."""
    c, pg = cluster, postgres_server
    fp = tmp_path / "failpoints"
    c.add_agent("node-a", components=pg.component_toml(), env={"CAIRN_FAILPOINTS_FILE": os.fspath(fp)})
    c.enrol("node-a")
    pg.sql("CREATE TABLE t (i int)")
    pg.sql("INSERT INTO t VALUES (1)")
    set_id, _ = _backup(c, pg)
    pg.sql("INSERT INTO t VALUES (2)")  # after the backup: the live data's own
    pg.switch_and_wait_archived()
    parent = pg.data.parent

    for point in ["stopped", "swapped", "started"]:
        fp.write_text(f"restore.postgresql.{point} kill\n")
        failed_before = {p.name for p in parent.glob(pg.data.name + ".cairn-failed-*")}
        detail = killed_mid_restore(c, "node-a", [set_id, "--component", "pg", "--to-immediate"])
        assert "postgresql was started on it" in detail, detail
        # The server answers as a primary, on the data it had before the restore.
        assert pg.value("SELECT pg_is_in_recovery()") == "f", f"[{point}] {detail}{pg.log_tail()}"
        assert pg.value("SELECT count(*) FROM t") == "2", f"[{point}] not the pre-restore data: {detail}"
        assert not (pg.data / "recovery.signal").exists()
        failed_now = {p.name for p in parent.glob(pg.data.name + ".cairn-failed-*")} - failed_before
        if point == "stopped":
            assert "nothing had been moved yet" in detail and not failed_now, (detail, failed_now)
        else:
            assert len(failed_now) == 1 and "the restored copy is in" in detail, (detail, failed_now)
        assert not list(parent.glob(pg.data.name + ".cairn-wal-*")), "the fetched WAL was left"

    # Cut off rather than killed (SIGSTOP with the data swapped, SIGCONT once
    # the controller has lost it): the agent finishes the restore, and the
    # task, ended as lost, says the server now runs on the backup's data.
    fp.write_text("restore.postgresql.swapped freeze\n")
    p = c.ctl_popen("restore", set_id, "--component", "pg", "--to-immediate", "--skip-safety-backup", "--wait")
    agent = c.agents["node-a"]
    agent.expect_dead = True
    try:
        c.wait_for("node-a lost by the controller while frozen",
                   lambda: not (c.find_agent(name="node-a") or {}).get("connected"), timeout=120)
    finally:
        os.kill(agent.pid, signal.SIGCONT)
        agent.expect_dead = False
    out = p.communicate(timeout=300)[0].decode(errors="replace")
    assert p.returncode != 0, out
    rid = restore_id(out)

    def finished():
        t = c.json("restore", "show", rid)["tasks"][0]
        d = " ".join(x.get("detail", "") for x in t.get("reasons", []))
        return d if "the agent finished this restore (succeeded)" in d else None
    detail = c.wait_for("the account of the restore finished after the agent was lost", finished, timeout=300)
    assert "runs on the snapshot's data" in detail, detail
    assert pg.value("SELECT count(*) FROM t") == "1"  # the backup's rows, as the task now says
    assert pg.value("SELECT pg_is_in_recovery()") == "f"

    rc, out, err = c.ctl("restore", set_id, "--component", "pg", "--to-immediate", "--skip-safety-backup", "--wait",
                         timeout=600)
    assert rc == 0, f"restore exited {rc}\n{out}\n{err}\n{c.logs()}{pg.log_tail()}"
    assert pg.value("SELECT count(*) FROM t") == "1"
    assert pg.value("SELECT pg_is_in_recovery()") == "f"


def test_a_primary_restored_under_a_standby_names_it_and_the_reseed_it_gives_works(cluster, postgres_server):  # noqa: F811
    """Restoring a primary to an earlier point leaves a streaming standby on
    the old timeline, serving the replaced data: the restore ends partial,
    naming the standby and how to re-seed it, and those steps make it follow
    the restored primary again."""
    from cluster import AGENT
    c, pg = cluster, postgres_server
    sb = pg.start_standby(AGENT)
    try:
        c.add_agent("node-a", components=pg.component_toml())
        c.enrol("node-a")
        pg.sql("INSERT INTO marks VALUES (1)")
        set_id, meta = _backup(c, pg)
        pg.sql("INSERT INTO marks VALUES (2)")
        c.wait_for("the standby to replay", lambda: sb.value("SELECT count(*) FROM marks") == "2", timeout=60)
        name = pg.value("SELECT application_name FROM pg_stat_replication")
        assert name, pg.sql("SELECT * FROM pg_stat_replication")

        rc, out, err = c.ctl("restore", set_id, "--component", "pg", "--to-immediate", "--wait", timeout=900)
        assert rc == 3, f"restore exited {rc}, expected 3 (partial)\n{out}\n{err}\n{c.logs()}{pg.log_tail()}"
        shown = c.json("restore", "show", restore_id(out))
        detail = _details(shown)
        assert f"standby '{name}'" in detail and "Re-seed it" in detail and "pg_basebackup" in detail, detail
        # The primary: at the backup's end, promoted; the standby: still the replaced data.
        assert pg.sql("SELECT id FROM marks ORDER BY id") == [["1"]]
        assert pg.value("SELECT pg_is_in_recovery()") == "f"
        assert sb.value("SELECT count(*) FROM marks") == "2"

        sb.reseed(pg)
        pg.sql("INSERT INTO marks VALUES (3)")
        c.wait_for("the re-seeded standby to follow the restored primary",
                   lambda: sb.sql("SELECT id FROM marks ORDER BY id") == [["1"], ["3"]], timeout=60)
        assert sb.value("SELECT pg_is_in_recovery()") == "t"
    finally:
        sb.cleanup()


def _marker(pg, n):
    """Commits marker n in a transaction of its own; returns its xid and the time just after it committed."""
    xid = pg.value(f"INSERT INTO marks (id) VALUES ({n}) RETURNING pg_current_xact_id()::text")
    time.sleep(0.3)
    return xid, pg.value("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")


def _postmaster_pid(pg):
    return (pg.data / "postmaster.pid").read_text().split()[0]


def test_a_segment_missing_from_the_archive_is_a_gap_never_the_latest_wal(cluster, postgres_server):  # noqa: F811
    """A segment forgotten from the repository with later ones kept: --to-latest
    is refused before anything stops, naming the segment and how far recovery
    reaches; a transaction past the gap too; a time and a transaction before the
    gap are reached, read from the commit records of the intact WAL."""
    import urllib.request
    c, pg = cluster, postgres_server
    # The agent checks the archive for gaps every second here (600 s by default).
    c.add_agent("node-a", components=pg.component_toml().replace("archive_socket", "archive_check_seconds = 1\narchive_socket", 1))
    c.enrol("node-a")
    pg.sql("CREATE TABLE marks (id int PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())")
    set_id, meta = _backup(c, pg)
    marks = {}
    segs = {}
    for n in range(1, 9):
        marks[n] = _marker(pg, n)
        segs[n] = pg.switch_and_wait_archived()  # marker n's commit is in segs[n]
    wal = _wal_snapshots(c)
    gone = segs[5]
    # The base backup replays that segment: forgetting it is refused, naming the
    # backup, unless forced; nothing is removed.
    base_snap = c.json("backup", "show", set_id)["tasks"][0]["snapshot_id"]
    forget = ["repo", "forget", wal[gone]["id"], "--repo", c.repo, "--password-file", c.repo_pass, "--retry-lock", "60s"]
    rc, out, err = c.ctl(*forget)
    assert rc != 0 and "replayed by kept snapshot" in err and base_snap[:8] in err and "nothing was removed" in err, (rc, out, err)
    assert gone in _wal_snapshots(c)
    c.ok(*forget, "--force")
    assert gone not in _wal_snapshots(c)

    # The agent finds the gap before any restore needs it: status, /metrics.
    def gap_reported():
        rows = [x for x in c.json("status").get("components", []) if x["component"] == "pg"]
        return rows and any(gone in g for g in rows[0].get("wal_gaps", [])) and rows[0]
    row = c.wait_for("the status to report the gap", gap_reported, timeout=60)
    assert any(f"timeline 1: {gone} (1 segment) missing, {segs[6]} archived after it" in g for g in row["wal_gaps"]), row
    assert f"WAL GAP: timeline 1: {gone}" in c.ok("status")

    def scraped():
        body = urllib.request.urlopen(c.http_url() + "metrics", timeout=10).read().decode()
        gauge = [ln for ln in body.splitlines()
                 if ln.startswith('cairn_wal_archive_gap_segments{component="pg",agent="node-a",timeline="1"}')]
        return gauge and float(gauge[0].split()[-1]) == 1
    c.wait_for("/metrics to count the missing segment", scraped, timeout=30)
    page = urllib.request.urlopen(c.http_url(), timeout=10).read().decode()
    assert f"timeline 1: {gone} (1 segment) missing" in page
    pid = _postmaster_pid(pg)

    rc, out, err = c.ctl("restore", set_id, "--component", "pg", "--to-latest", "--wait", timeout=900)
    assert rc == 1, f"restore exited {rc}\n{out}\n{err}"
    d = _details(c.json("restore", "show", restore_id(out)))
    assert f"'{gone}' is not in the repository" in d and "can reach LSN" in d and "nothing was changed" in d, d
    assert "before the safety backup" in d, d  # refused before anything was written
    # A transaction past the gap: refused, naming the gap, before anything stopped.
    rc, out, err = c.ctl("restore", set_id, "--component", "pg", "--to-xid", marks[7][0], "--wait", timeout=900)
    assert rc == 1, f"restore exited {rc}\n{out}\n{err}"
    d = _details(c.json("restore", "show", restore_id(out)))
    assert f"'{gone}' is not in the repository" in d and "nothing was changed" in d, d
    assert _postmaster_pid(pg) == pid, "a refused restore stopped the server"
    assert pg.value("SELECT count(*) FROM marks") == "8"

    # A time inside the intact WAL before the gap: exactly markers 1..3.
    rc, out, err = c.ctl("restore", set_id, "--component", "pg", "--to-time", marks[3][1], "--wait", timeout=900)
    assert rc == 0, f"restore exited {rc}\n{out}\n{err}\n{c.logs()}{pg.log_tail()}"
    assert pg.sql("SELECT id FROM marks ORDER BY id") == [["1"], ["2"], ["3"]], pg.log_tail()
    r = c.json("restore", "show", restore_id(out))
    assert "committed at" in json.dumps(r), r  # what proved the target
    # And by transaction: markers 1..4 (the old timeline's history, before the gap).
    rc, out, err = c.ctl("restore", set_id, "--component", "pg", "--to-xid", marks[4][0], "--target-timeline", "1",
                         "--wait", timeout=900)
    assert rc == 0, f"restore exited {rc}\n{out}\n{err}\n{c.logs()}{pg.log_tail()}"
    assert pg.sql("SELECT id FROM marks ORDER BY id") == [["1"], ["2"], ["3"], ["4"]], pg.log_tail()


def test_a_pitr_after_a_pitr_follows_the_new_timeline(cluster, postgres_server):  # noqa: F811
    """Two PITRs in a row from one base backup: the second target lies on the
    timeline the first made; recovery follows it (latest, as PostgreSQL's
    default), and --target-timeline current stays on the base backup's."""
    c, pg = cluster, postgres_server
    c.add_agent("node-a", components=pg.component_toml())
    c.enrol("node-a")
    pg.sql("CREATE TABLE marks (id int PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())")
    set_id, _ = _backup(c, pg)
    _, after1 = _marker(pg, 1)
    _marker(pg, 2)
    pg.switch_and_wait_archived()
    rc, out, err = c.ctl("restore", set_id, "--component", "pg", "--to-time", after1, "--wait", timeout=900)
    assert rc == 0, f"restore exited {rc}\n{out}\n{err}\n{c.logs()}{pg.log_tail()}"
    assert pg.sql("SELECT id FROM marks ORDER BY id") == [["1"]]
    # The restore offers a base backup on the new timeline; the command it gives works.
    nxt = [ln for ln in out.splitlines() if ln.startswith("next: 'pg' on node-a now runs on a new timeline")]
    assert nxt, out
    cmd = nxt[0].split("(cairnctl ", 1)[1].split(")", 1)[0].split()
    rc, bout, err = c.ctl(*cmd, timeout=600)
    assert rc == 0, f"{cmd} exited {rc}\n{bout}\n{err}"
    shown = c.json("backup", "show", backup_set_id(bout))
    assert json.loads(shown["tasks"][0]["component_metadata"])["timeline"] == 2, shown
    # On timeline 2 now: marker 3, a time after it, marker 4.
    _, after3 = _marker(pg, 3)
    _marker(pg, 4)
    assert pg.switch_and_wait_archived().startswith("00000002")
    # The same base backup (timeline 1) to a time on timeline 2: no new base backup needed.
    rc, out, err = c.ctl("restore", set_id, "--component", "pg", "--to-time", after3, "--wait", timeout=900)
    assert rc == 0, f"restore exited {rc}\n{out}\n{err}\n{c.logs()}{pg.log_tail()}"
    assert pg.sql("SELECT id FROM marks ORDER BY id") == [["1"], ["3"]], pg.log_tail()
    assert "timeline 2" in json.dumps(c.json("restore", "show", restore_id(out)))
    assert pg.value("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)") == "00000003"
    pg.switch_and_wait_archived()
    # --to-latest ends on the newest timeline; current, on the base backup's own.
    rc, out, err = c.ctl("restore", set_id, "--component", "pg", "--to-latest", "--target-timeline", "current",
                         "--wait", timeout=900)
    assert rc == 0, f"restore exited {rc}\n{out}\n{err}\n{c.logs()}{pg.log_tail()}"
    assert pg.sql("SELECT id FROM marks ORDER BY id") == [["1"], ["2"]], pg.log_tail()
    # A timeline that did not branch from the base backup's is refused, naming it.
    rc, out, err = c.ctl("restore", set_id, "--component", "pg", "--to-latest", "--target-timeline", "9", "--wait",
                         timeout=900)
    assert rc == 1, f"restore exited {rc}\n{out}\n{err}"
    assert "no history file of timeline 9" in _details(c.json("restore", "show", restore_id(out)))
    assert pg.sql("SELECT id FROM marks ORDER BY id") == [["1"], ["2"]]


def test_the_base_backup_picked_is_on_the_target_timeline_safety_backups_included(cluster, postgres_server):  # noqa: F811
    """With no set named, the controller picks the newest base backup consistent
    before the target on the target timeline's history: never a newer one left
    behind on a timeline the target did not follow (a PITR's safety backup), and
    a safety backup when it is the newest on that history."""
    c, pg = cluster, postgres_server
    c.add_agent("node-a", components=pg.component_toml())
    c.enrol("node-a")
    pg.sql("CREATE TABLE marks (id int PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())")
    base, meta = _backup(c, pg)
    assert meta["timeline"] == 1 and meta["history"] == [], meta
    _, after1 = _marker(pg, 1)
    _marker(pg, 2)
    pg.switch_and_wait_archived()
    # PITR 1: timeline 2 branches at marker 1; its safety backup (timeline 1,
    # after the branch) is newer than the base backup but not on timeline 2.
    rc, out, err = c.ctl("restore", base, "--component", "pg", "--to-time", after1, "--wait", timeout=900)
    assert rc == 0, f"restore exited {rc}\n{out}\n{err}\n{c.logs()}{pg.log_tail()}"
    r1 = c.json("restore", "show", restore_id(out))
    assert pg.sql("SELECT id FROM marks ORDER BY id") == [["1"]]
    _marker(pg, 3)
    assert pg.switch_and_wait_archived().startswith("00000002")

    # The latest WAL, no set named: timeline 2's end, from the base backup (the
    # safety backup of timeline 1 would bring back markers 1 and 2).
    rc, out, err = c.ctl("restore", "--component", "pg", "--node", "node-a", "--to-latest", "--wait", timeout=900)
    assert rc == 0, f"restore exited {rc}\n{out}\n{err}\n{c.logs()}{pg.log_tail()}"
    r2 = c.json("restore", "show", restore_id(out))
    assert r2["backup_set_id"] == base, (r2, r1)
    assert pg.sql("SELECT id FROM marks ORDER BY id") == [["1"], ["3"]], pg.log_tail()
    # The safety backup this restore took is on timeline 2, which timeline 3
    # left at its end: the newest base backup on timeline 3's history.
    safety2 = r2["safety_backup_set_id"]
    assert safety2, r2
    shown = c.json("backup", "show", safety2)
    assert shown["tasks"][0].get("component_metadata"), shown
    smeta = json.loads(shown["tasks"][0]["component_metadata"])
    assert smeta["timeline"] == 2 and [h["timeline"] for h in smeta["history"]] == [1], smeta
    _, after4 = _marker(pg, 4)
    _marker(pg, 5)
    assert pg.switch_and_wait_archived().startswith("00000003")
    rc, out, err = c.ctl("restore", "--component", "pg", "--node", "node-a", "--to-time", after4, "--wait", timeout=900)
    assert rc == 0, f"restore exited {rc}\n{out}\n{err}\n{c.logs()}{pg.log_tail()}"
    r3 = c.json("restore", "show", restore_id(out))
    assert r3["backup_set_id"] == safety2, r3
    assert pg.sql("SELECT id FROM marks ORDER BY id") == [["1"], ["3"], ["4"]], pg.log_tail()
    # Before the first branch, on timeline 1 by name: the base backup again.
    rc, out, err = c.ctl("restore", "--component", "pg", "--node", "node-a", "--to-latest", "--target-timeline", "1",
                         "--skip-safety-backup", "--wait", timeout=900)
    assert rc == 0, f"restore exited {rc}\n{out}\n{err}\n{c.logs()}{pg.log_tail()}"
    r4 = c.json("restore", "show", restore_id(out))
    assert r4["backup_set_id"] != safety2, r4
    assert pg.sql("SELECT id FROM marks ORDER BY id") == [["1"], ["2"]], pg.log_tail()


def test_randomized_pitr_lands_exactly_on_every_kind_of_target(cluster, postgres_server):  # noqa: F811
    """Markers committed at random moments across random segment switches, with
    pgbench traffic between them; then restores from one base backup to random
    targets of every kind (time, xid inclusive and exclusive, LSN, latest,
    immediate), in random order, each landing on exactly the markers committed
    by then. CAIRN_TEST_SEED=<n> replays a run (the seed is in the failure)."""
    import random
    seed = int(os.environ.get("CAIRN_TEST_SEED") or random.SystemRandom().randrange(1 << 30))
    rnd = random.Random(seed)
    c, pg = cluster, postgres_server
    c.add_agent("node-a", components=pg.component_toml())
    c.enrol("node-a")
    pg.pgbench("-i", "-s", "1", "-q")
    pg.sql("CREATE TABLE marks (id int PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())")
    base, _ = _backup(c, pg)
    n = rnd.randint(8, 14)
    marks = {}  # n -> (xid, a time after its commit and before the next, an LSN after its commit)
    for i in range(1, n + 1):
        xid, after = _marker(pg, i)
        lsn = pg.value("SELECT pg_current_wal_insert_lsn()::text")
        marks[i] = (xid, after, lsn)
        if rnd.random() < 0.3:
            pg.pgbench("-t", str(rnd.randint(20, 200)), "-c", "2", "-n")
        if rnd.random() < 0.35:
            pg.value("SELECT pg_switch_wal()")
        time.sleep(rnd.uniform(0, 0.3))
    pg.switch_and_wait_archived()

    k = lambda: rnd.randint(1, n)  # noqa: E731
    cases = []
    i = k()
    cases.append(("time", ["--to-time", marks[i][1]], i))
    i = k()
    cases.append(("xid", ["--to-xid", marks[i][0]], i))
    i = k()
    cases.append(("xid exclusive", ["--to-xid", marks[i][0], "--exclusive"], i - 1))
    i = k()
    cases.append(("lsn", ["--to-lsn", marks[i][2]], i))
    cases.append(("latest", ["--to-latest"], n))
    cases.append(("immediate", ["--to-immediate"], 0))
    rnd.shuffle(cases)
    for what, args, upto in cases:
        # Every target on the timeline the markers were written on (1): each
        # restore branches a new one.
        tl = [] if what == "immediate" else ["--target-timeline", "1"]
        rc, out, err = c.ctl("restore", base, "--component", "pg", *args, *tl, "--skip-safety-backup", "--wait",
                             timeout=900)
        ctx = f"seed {seed}, {what} {args} (markers 1..{upto} of {n})"
        assert rc == 0, f"{ctx}: restore exited {rc}\n{out}\n{err}\n{c.logs()}{pg.log_tail()}"
        got = [int(r[0]) for r in pg.sql("SELECT id FROM marks ORDER BY id")]
        assert got == list(range(1, upto + 1)), f"{ctx}: came back with {got}\n{pg.log_tail()}"
        assert int(pg.value("SELECT count(*) FROM pgbench_accounts")) == 100000, ctx


def test_the_archive_status_tells_the_truth_with_the_agent_down_and_after_it_restarts(cluster, postgres_server):  # noqa: F811
    """The agent stopped while the server writes: status says FAILING (not
    'archived 55s ago, 0 waiting'), /metrics' cairn_wal_archive_failing is 1 (the
    alert's input), the waiting count is the last reported; restarted, the
    status is the server's account (never 'archived never'), and clears once
    the waiting segments are stored."""
    import urllib.request
    c, pg = cluster, postgres_server
    agent = c.add_agent("node-a", components=pg.component_toml())
    c.enrol("node-a")
    pg.sql("CREATE TABLE t (i int)")
    for i in range(3):
        pg.sql(f"INSERT INTO t VALUES ({i})")
        pg.switch_and_wait_archived()
    base = c.http_url()

    def gauge():
        body = urllib.request.urlopen(base + "metrics", timeout=10).read().decode()
        line = [ln for ln in body.splitlines() if ln.startswith('cairn_wal_archive_failing{component="pg",agent="node-a"}')]
        return float(line[0].split()[-1]) if line else None
    c.wait_for("/metrics to show the archive", lambda: gauge() == 0, timeout=30)

    agent.expect_dead = True
    agent.kill()
    for i in range(2):
        pg.sql(f"INSERT INTO t VALUES ({10 + i})")
        pg.value("SELECT pg_switch_wal()")
    c.wait_for("the server to fail handing WAL over", lambda: int(pg.value("SELECT failed_count FROM pg_stat_archiver")) > 0,
               timeout=60)

    def failing():
        rows = [x for x in c.json("status").get("components", []) if x["component"] == "pg"]
        return rows and "the agent is not connected" in rows[0].get("wal_last_error", "") and rows[0]
    c.wait_for("the status to say the archive fails", failing, timeout=60)
    text = c.ok("status")
    assert "FAILING: the agent is not connected" in text, text
    c.wait_for("/metrics to say the archive fails", lambda: gauge() == 1, timeout=30)

    agent.expect_dead = False
    agent.start()

    def caught_up():
        rows = [x for x in c.json("status").get("components", []) if x["component"] == "pg"]
        return rows and not rows[0].get("wal_last_error") and int(rows[0].get("wal_pending", 0)) == 0 and rows[0]
    row = c.wait_for("the archive to catch up", caught_up, timeout=120)
    assert int(row["wal_archived_at"]) > 0, row
    text = c.ok("status")
    assert "WAL archived never" not in text and "FAILING" not in text, text
    c.wait_for("/metrics to clear the failure", lambda: gauge() == 0, timeout=30)
    assert pg.value("SELECT last_archived_wal FROM pg_stat_archiver") in _wal_snapshots(c)
