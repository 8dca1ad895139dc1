"""The controller's /metrics and status page (issue 12): scraped over HTTP,
loaded in Debian's headless Chromium, behind a bearer token, and the example
alerting rules in docs/alerts.md checked with promtool."""
import os
import pathlib
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from cluster import backup_set_id, cluster, task_state  # noqa: F401
from conftest import ROOT, write_secret


def get(url, token=None):
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, r.headers.get("Content-Type", ""), r.read().decode()


def metric(text, name, **labels):
    """The value of one sample, or None."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        m = re.match(r"([a-z_]+)(\{.*\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(m.group(3))
    return None


def chromium():
    for b in ("chromium", "chromium-browser"):
        if shutil.which(b):
            return shutil.which(b)
    pytest.fail("Debian's chromium is not installed (scripts/install-deps.sh installs it)")


def test_metrics_and_the_status_page_show_what_happened(cluster, tmp_path):
    c = cluster
    c.add_agent("node-a", {"a.txt": b"alpha" * 100})
    c.enrol("node-a")
    c.ok("policy", "add", "nightly", "--schedule", "0 1 * * *", "--tz", "Europe/Berlin", "--keep-last", "3")
    out = c.ok("backup", "create", "--wait")
    sid = backup_set_id(out)
    base = c.http_url()

    def scraped():
        status, ctype, text = get(base + "metrics")
        assert status == 200 and ctype.startswith("text/plain; version=0.0.4"), ctype
        return text if metric(text, "cairn_backup_success_total", component="data", agent="node-a") else None
    text = c.wait_for("the backup counted in /metrics", scraped, timeout=15)
    assert metric(text, "cairn_backup_success_total", policy="", component="data", agent="node-a", repository="main") == 1
    # Counters start at 0: for the backups by hand and the policy's alike.
    assert metric(text, "cairn_backup_failure_total", policy="", component="data", agent="node-a", repository="main") == 0
    assert metric(text, "cairn_backup_failure_total", policy="nightly", component="data", agent="node-a",
                  repository="main") == 0
    assert metric(text, "cairn_agents", state="connected") == 1
    assert metric(text, "cairn_agents", state="pending") == 0
    assert metric(text, "cairn_backup_duration_seconds_count", component="data", agent="node-a") == 1
    assert metric(text, "cairn_backup_duration_seconds_bucket", component="data", le="+Inf") == 1
    assert metric(text, "cairn_snapshots", repository="main", component="data", agent="node-a") == 1
    assert metric(text, "cairn_backup_bytes", component="data") == 500
    assert metric(text, "cairn_policy_next_run_timestamp_seconds", policy="nightly") > 0
    assert metric(text, "cairn_audit_outbox_events") is not None
    # Retention's backlog, for the repositories the controller declares (none here).
    assert "# TYPE cairn_backup_sets_expired gauge" in text
    assert metric(text, "cairn_backup_sets_expired") is None
    last = metric(text, "cairn_backup_last_success_timestamp_seconds", component="data", agent="node-a")
    assert last and abs(last - __import__("time").time()) < 120
    for line in text.splitlines():  # the exposition format: HELP and TYPE before each family
        if line.startswith("# TYPE"):
            assert line.split()[3] in ("counter", "gauge", "histogram"), line

    # What a person sees: Debian's Chromium renders the page (no script, no
    # resource from elsewhere), and its DOM holds the agent, policy and set.
    browser = chromium()
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", base],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=120).stdout.decode()
    assert "node-a" in dom and ">connected<" in dom, dom[-3000:]
    assert "nightly" in dom and "0 1 * * * Europe/Berlin" in dom, dom[-3000:]
    assert sid in dom and ">complete<" in dom, dom[-3000:]
    assert "<script" not in dom
    # No publisher configured: nothing is said to wait for one (issue 32).
    assert "not yet published" not in dom and "kept in the controller's catalog" in dom, dom[-3000:]
    shot = tmp_path / "status.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,900",
                    f"--screenshot={shot}", base], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
    assert shot.exists() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 5000

    # Read-only: other methods and paths are refused.
    with pytest.raises(urllib.error.HTTPError) as e:
        get(base + "nothing-here")
    assert e.value.code == 404
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(urllib.request.Request(base + "metrics", data=b"x", method="POST"), timeout=10)
    assert e.value.code == 405

    # After a controller restart the finished task shows its final totals, not
    # the last progress report that arrived (issue 32).
    c.controller.stop()
    c.start_controller()
    (t,) = c.json("backup", "show", sid)["tasks"]
    p = t.get("progress", {})
    assert int(p.get("bytes_done", 0)) == int(p.get("bytes_total", 0)) == 500, t
    assert p.get("phase", "PHASE_UNSPECIFIED") == "PHASE_UNSPECIFIED", t
    assert "500 B/500 B" in c.ok("backup", "show", sid)


def test_an_empty_controller_says_so_in_every_table(cluster):
    """No agent, policy, set or restore yet: each table says what is empty and
    how it fills, instead of showing nothing (issue 32)."""
    status, _, page = get(cluster.http_url())
    assert status == 200
    assert "none yet (agents appear when they first connect)" in page, page
    assert "none defined ('cairnctl policy add')" in page, page
    assert page.count("<td colspan=\"5\">none yet</td>") == 2, page  # backup sets, restores
    # An empty repository declared: measured at start as 0 bytes, not "not measured yet" (issue 32).
    cluster.declare_repository()
    base = cluster.http_url()
    text = cluster.wait_for("the repository measured", lambda: (lambda t: t if metric(t, "cairn_repository_size_bytes",
                            repository="main") is not None else None)(get(base + "metrics")[2]), timeout=15)
    assert metric(text, "cairn_repository_size_bytes", repository="main") == 0
    assert "0 MiB (0 bytes)" in get(base)[2]
    # A first backup: its data counts within seconds, not at the next
    # 10-minute measurement.
    cluster.add_agent("node-a", {"a.bin": os.urandom(300_000)})
    cluster.enrol("node-a")
    cluster.ok("backup", "create", "--wait")
    text = cluster.wait_for("the first backup's data measured", lambda: (lambda t: t if (metric(
        t, "cairn_repository_size_bytes", repository="main") or 0) > 300_000 else None)(get(base + "metrics")[2]),
        timeout=40)


def test_a_token_guards_the_listener(cluster):
    c = cluster
    token = "s3cr3t-" + os.urandom(8).hex()
    tf = write_secret(c.base / "http.token", token)
    c.controller.stop()
    c.controller_cfg.write_text(c.controller_cfg.read_text().replace(
        '[http]\nlisten = "127.0.0.1:0"', f'[http]\nlisten = "127.0.0.1:0"\ntoken_file = "{tf}"'))
    c.start_controller()
    base = c.http_url()
    for path in ("metrics", ""):
        with pytest.raises(urllib.error.HTTPError) as e:
            get(base + path)
        assert e.value.code == 401
        with pytest.raises(urllib.error.HTTPError) as e:
            get(base + path, token="wrong")
        assert e.value.code == 401
        assert get(base + path, token=token)[0] == 200
    assert token not in c.controller.log.read_text()

    # 100 slow clients without a token (headers begun, never finished) from one
    # address do not take every connection: Prometheus scraping from another
    # address gets its answer (issue 32).
    import http.client
    import socket
    port = int(base.rstrip("/").rsplit(":", 1)[1])
    slow = []
    try:
        for _ in range(100):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            slow.append(s)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=4, source_address=("127.0.0.2", 0))
        conn.request("GET", "/metrics", headers={"Authorization": "Bearer " + token})
        r = conn.getresponse()
        assert r.status == 200 and b"cairn_agents" in r.read()
        conn.close()
    finally:
        for s in slow:
            s.close()

    # A token file others can read is refused at start, naming it.
    c.controller.stop()
    os.chmod(tf, 0o644)
    c.controller.start()
    c.controller.p.wait(timeout=20)
    assert c.controller.p.returncode != 0
    assert str(tf) in c.controller.log.read_text() and "chmod 600" in c.controller.log.read_text()


def alert_rules(tmp_path):
    """Debian's promtool, docs/alerts.md (its text) and its one rules block,
    also written to tmp_path/rules.yml."""
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.fail("promtool (Debian's prometheus package) is not installed")
    doc = (pathlib.Path(ROOT) / "docs" / "alerts.md").read_text()
    rules = [b for b in re.findall(r"```yaml\n(.*?)```", doc, re.S) if b.lstrip().startswith("groups:")]
    assert len(rules) == 1, "docs/alerts.md must hold one rules block"
    (tmp_path / "rules.yml").write_text(rules[0])
    return promtool, doc, rules[0]


def test_the_example_alerting_rules_pass_promtool(tmp_path):
    promtool, doc, rules = alert_rules(tmp_path)
    f = tmp_path / "rules.yml"
    p = subprocess.run([promtool, "check", "rules", str(f)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    out = p.stdout.decode()
    assert p.returncode == 0, out
    assert "SUCCESS: 22 rules found" in out, out
    # Every metric a rule names is one the controller serves (docs/alerts.md's table).
    names = set(re.findall(r"\b(cairn_[a-z_]+)", rules))
    served = set(re.findall(r"`(cairn_[a-z_]+)", doc.split("## Example rules")[0]))
    assert names <= served | {n + "_bucket" for n in served}, names - served


def test_the_wal_alerts_fire_at_their_first_report(tmp_path):
    """promtool test rules on docs/alerts.md's rules: CairnWalArchiveGap fires on
    the first scrape that reports a missing segment, and never for the
    timeline="all" 0 an archive without gaps reports; CairnWalArchiveFailing on
    the first scrape that says the archive fails (its agent gone included), and
    stops with it."""
    promtool, _, _ = alert_rules(tmp_path)
    (tmp_path / "test.yml").write_text("""rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'cairn_wal_archive_gap_segments{component="pg",agent="node-a",timeline="all"}'
        values: '0 0 0 _ _'
      - series: 'cairn_wal_archive_gap_segments{component="pg",agent="node-a",timeline="1"}'
        values: '_ _ _ 1 1'
      - series: 'cairn_wal_archive_failing{component="pg",agent="node-a"}'
        values: '0 0 1 1 0'
    alert_rule_test:
      - eval_time: 1m
        alertname: CairnWalArchiveFailing
        exp_alerts: []
      - eval_time: 2m
        alertname: CairnWalArchiveFailing
        exp_alerts:
          - exp_labels: {severity: critical, component: pg, agent: node-a}
            exp_annotations:
              summary: "cairn: WAL of pg on node-a is not being archived: the recovery point falls behind ('cairnctl status' names why)"
      - eval_time: 4m
        alertname: CairnWalArchiveFailing
        exp_alerts: []
      - eval_time: 2m
        alertname: CairnWalArchiveGap
        exp_alerts: []
      - eval_time: 3m
        alertname: CairnWalArchiveGap
        exp_alerts:
          - exp_labels: {severity: critical, component: pg, agent: node-a, timeline: "1"}
            exp_annotations:
              summary: "cairn: the WAL archive of pg on node-a lacks 1 segment(s) on timeline 1: no recovery passes the gap; take a base backup now ('cairnctl status' names the segments)"
""")
    p = subprocess.run([promtool, "test", "rules", "test.yml"], cwd=tmp_path, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=60)
    assert p.returncode == 0, p.stdout.decode()


# Each documented alert at its first firing: (input series, interval, the
# evaluation before it fires, the one at which it fires, the labels and
# $value of the alert then). A counter's first failure comes both ways: from
# 0 (the controller starts every known label set at 0) and as a series whose
# first sample is already 1 (a failure between two scrapes of a new one).
BACKUP = 'policy="nightly",component="etcd",agent="node-a",repository="main"'
BACKUP_B = 'policy="nightly",component="etcd",agent="node-b",repository="main"'
FIRST_FIRING = {
    "CairnBackupFailed": ([(f"cairn_backup_failure_total{{{BACKUP}}}", "0 0 1 1"),
                           (f"cairn_backup_failure_total{{{BACKUP_B}}}", "_ _ 1 1")], "1m", "1m", "2m",
                          [(BACKUP, None), (BACKUP_B, None)]),
    "CairnBackupPartial": ([(f"cairn_backup_partial_total{{{BACKUP}}}", "0 0 1 1"),
                            (f"cairn_backup_partial_total{{{BACKUP_B}}}", "_ _ 1 1")], "1m", "1m", "2m",
                           [(BACKUP, None), (BACKUP_B, None)]),
    "CairnNoRecentBackup": ([(f"cairn_backup_last_success_timestamp_seconds{{{BACKUP}}}", "0x1600"),
                             ('cairn_backup_last_success_timestamp_seconds{policy="",component="etcd",agent="node-a",'
                              'repository="main"}', "0x1600")], "1m", "25h59m", "26h1m", [(BACKUP, None)]),
    "CairnPolicyOverdue": ([('cairn_policy_next_run_timestamp_seconds{policy="nightly"}', "0x20")], "1m", "9m", "11m",
                           [('policy="nightly"', None)]),
    "CairnPolicyRunNotStarted": ([('cairn_policy_last_run_started{policy="nightly"}', "1 1 0 0")], "1m", "1m", "2m",
                                 [('policy="nightly"', None)]),
    "CairnAgentDisconnected": ([('cairn_agents{state="disconnected"}', "0 1x30")], "1m", "15m", "17m",
                               [('state="disconnected"', "1")]),
    "CairnAgentPending": ([('cairn_agents{state="pending"}', "0 1x70")], "1m", "60m", "62m", [('state="pending"', "1")]),
    "CairnRestoreFailed": ([('cairn_restore_failure_total{component="etcd",agent="node-a"}', "0 0 1 1"),
                            ('cairn_restore_failure_total{component="etcd",agent="node-b"}', "_ _ 1 1")], "1m", "1m",
                           "2m", [('component="etcd",agent="node-a"', None), ('component="etcd",agent="node-b"', None)]),
    "CairnAuditBacklog": ([("cairn_audit_outbox_events", "0 20000x40")], "1m", "30m", "32m", [("", "20000")]),
    "CairnAuditTopicProblem": ([("cairn_audit_topic_problem", "0 0 1 1")], "1m", "1m", "2m", [("", None)]),
    "CairnRetentionStuck": ([('cairn_backup_sets_expired_oldest_timestamp_seconds{repository="main"}', "0x400")], "1m",
                            "5h59m", "6h1m", [('repository="main"', None)]),
    "CairnNoProvenRestore": ([('cairn_component_proven_restorable_timestamp_seconds{component="etcd"}', "0x200")], "1h",
                             "191h", "193h", [('component="etcd"', None)]),
    "CairnDrillFailed": ([('cairn_drill_total{component="etcd",outcome="failed"}', "0 0 1 1"),
                          ('cairn_drill_total{component="zk",outcome="failed"}', "_ _ 1 1"),
                          ('cairn_drill_total{component="etcd",outcome="not_run"}', "0 0 0 0")], "1m", "1m", "2m",
                         [('component="etcd",outcome="failed"', None), ('component="zk",outcome="failed"', None)]),
    "CairnDrillNotRun": ([('cairn_drill_total{component="etcd",outcome="not_run"}', "0 0 1 1"),
                          ('cairn_drill_total{component="zk",outcome="not_run"}', "_ _ 1 1"),
                          ('cairn_drill_total{component="etcd",outcome="failed"}', "0 0 0 0")], "1m", "1m", "2m",
                         [('component="etcd",outcome="not_run"', None), ('component="zk",outcome="not_run"', None)]),
    "CairnOffsiteCopyFailing": ([('cairn_set_copies{repository="offsite",state="failed"}', "1x420"),
                                 ('cairn_set_copy_last_success_timestamp_seconds{repository="offsite"}', "0x420")],
                                "1m", "6h10m", "6h35m", [('repository="offsite",state="failed"', None)]),
    "CairnWalArchiveFailing": ([('cairn_wal_archive_failing{component="pg",agent="node-a"}', "0 0 1 1")], "1m", "1m",
                               "2m", [('component="pg",agent="node-a"', None)]),
    "CairnWalArchiveGap": ([('cairn_wal_archive_gap_segments{component="pg",agent="node-a",timeline="all"}', "0 0 _ _"),
                            ('cairn_wal_archive_gap_segments{component="pg",agent="node-a",timeline="1"}', "_ _ 2 2")],
                           "1m", "1m", "2m", [('component="pg",agent="node-a",timeline="1"', "2")]),
    "CairnWalArchiveLagging": ([('cairn_wal_pending_files{component="pg",agent="node-a"}', "0 9x30")], "1m", "15m",
                               "17m", [('component="pg",agent="node-a"', "9")]),
    "CairnSetAsideLarge": ([('cairn_restore_set_aside_bytes{component="etcd",agent="node-a"}', "0 60000000000x1600")],
                           "1m", "24h", "24h2m", [('component="etcd",agent="node-a"', "6e+10")]),
    "CairnSnapshotsMissing": ([('cairn_repository_snapshots_missing{repository="main"}', "0 0 2 2")], "1m", "1m", "2m",
                              [('repository="main"', "2")]),
    "CairnRepositoryUnprotected": ([('cairn_repository_store_protection{repository="offsite",state="none"}', "1x80"),
                                    ('cairn_repository_store_protection{repository="local",state="not_applicable"}',
                                     "1x80"),
                                    ('cairn_repository_store_protection{repository="vault",state="versioning"}', "1x80")],
                                   "1m", "59m", "61m", [('repository="offsite",state="none"', None)]),
    "CairnBackupSlow": ([('cairn_backup_duration_seconds_bucket{policy="nightly",component="etcd",agent="node-a",'
                          'le="3600"}', "0x10"),
                         ('cairn_backup_duration_seconds_bucket{policy="nightly",component="etcd",agent="node-a",'
                          'le="14400"}', "0 0 1 1"),
                         ('cairn_backup_duration_seconds_bucket{policy="nightly",component="etcd",agent="node-a",'
                          'le="+Inf"}', "0 0 1 1")], "1m", "1m", "2m", [('policy="nightly"', None)]),
}


def test_every_documented_alert_fires_at_its_first_failure(tmp_path):
    """promtool test rules on docs/alerts.md's rules: each alert it documents
    (a new one without a case here fails this test) is silent before its
    condition and fires at the first evaluation its condition holds (after
    its `for`), with the labels and the summary the document gives."""
    import yaml
    promtool, _, rules_text = alert_rules(tmp_path)
    rules = {r["alert"]: r for g in yaml.safe_load(rules_text)["groups"] for r in g["rules"]}
    assert set(rules) == set(FIRST_FIRING), f"documented but untested: {set(rules) - set(FIRST_FIRING)}; " \
                                            f"tested but not documented: {set(FIRST_FIRING) - set(rules)}"

    def labels_of(text):
        return dict(re.findall(r'(\w+)="([^"]*)"', text))

    tests = []
    for name, (series, interval, before, at, alerts) in FIRST_FIRING.items():
        rule = rules[name]
        expected = []
        for lbl, value in alerts:
            labels = {**rule.get("labels", {}), **labels_of(lbl)}
            notes = {}
            for k, v in rule.get("annotations", {}).items():
                v = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""), v)
                notes[k] = v.replace("{{ $value }}", value or "")
            expected.append({"exp_labels": labels, "exp_annotations": notes})
        tests.append({"interval": interval,
                      "input_series": [{"series": s, "values": v} for s, v in series],
                      "alert_rule_test": [{"eval_time": before, "alertname": name, "exp_alerts": []},
                                          {"eval_time": at, "alertname": name, "exp_alerts": expected}]})
    (tmp_path / "test.yml").write_text(yaml.safe_dump({"rule_files": ["rules.yml"], "evaluation_interval": "1m",
                                                      "tests": tests}, sort_keys=False))
    p = subprocess.run([promtool, "test", "rules", "test.yml"], cwd=tmp_path, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=300)
    assert p.returncode == 0, p.stdout.decode()[-6000:]


def test_a_set_waiting_for_an_offline_agent_blocks_nothing_else_and_a_skipped_run_shows(cluster, tmp_path):
    """Locks follow tasks (issue 30): a policy's set whose task waits for an
    offline agent holds that agent's component only; the other agent's
    component is backed up meanwhile. The policy's next run is skipped, names
    the set it waits for, and /metrics says the last run did not start."""
    c = cluster
    c.add_agent("node-a", {"a.txt": b"alpha"})
    c.add_agent("node-b", {"b.txt": b"beta"})
    c.enrol("node-a")
    c.enrol("node-b")
    c.agents["node-b"].expect_dead = True
    c.agents["node-b"].kill()
    c.wait_for("node-b disconnected", lambda: not (c.find_agent(name="node-b") or {}).get("connected"), timeout=30)
    c.ok("policy", "add", "hourly", "--schedule", "0 0 1 1 *", "--keep-last", "3")
    c.ok("policy", "run-now", "hourly")
    sets = c.wait_for("the policy's set with node-a's task ended", lambda: [
        s for s in c.json("backup", "list").get("sets", [])
        if s.get("policy") == "hourly"] or None, timeout=30)
    sid = sets[0]["backup_set_id"]

    def a_done():
        tasks = c.json("backup", "show", sid).get("tasks", [])
        return all(task_state(t) == "succeeded" for t in tasks if t.get("agent_name") == "node-a") and tasks
    c.wait_for("node-a's task of the policy's set succeeded", a_done, timeout=30)
    # node-a's component is free although the set still runs (node-b's task is queued).
    rc, out, err = c.ctl("backup", "create", "--node", "node-a", "--wait")
    assert rc == 0, f"a backup of node-a was refused while the set waits for node-b\n{out}\n{err}"
    # node-b's component stays with the set that waits for it, and the refusal names it.
    rc, out, err = c.ctl("backup", "create", "--node", "node-b")
    assert rc != 0 and sid in (out + err), f"{rc}\n{out}\n{err}"
    # The policy's next run is skipped, naming the set, and /metrics shows it.
    c.ctl("policy", "run-now", "hourly")
    shown = c.ok("policy", "show", "hourly")
    assert "skipped" in shown and sid in shown, shown

    def scraped():
        _, _, text = get(c.http_url() + "metrics")
        return text if metric(text, "cairn_policy_last_run_started", policy="hourly") == 0 else None
    c.wait_for("cairn_policy_last_run_started{policy=\"hourly\"} 0", scraped, timeout=15)


def test_the_page_says_what_is_wrong_a_failed_backup_a_failed_drill_a_drill_that_could_not_run(cluster, tmp_path):
    """What an on-call operator must see at a glance, in the browser: a
    component whose newest backup failed is not green because an older one
    succeeded; a drill whose backup did not restore is red with one line of
    reason (no server log); a drill the drill host could not run is not red
    and says it proves nothing; ages, not times. /metrics counts each from 0
    (the first failure is an increase) and keeps the outcomes apart."""
    from test_drill import damage_biggest_pack, drill_toml
    c = cluster
    c.add_agent("node-a", {"big.bin": os.urandom(400_000)}, components=drill_toml(tmp_path / "drills-a"))
    c.add_agent("node-b", {"b.txt": b"beta" * 100}, components=drill_toml(tmp_path / "drills-b", disk_budget="16K"))
    c.enrol("node-a")
    c.enrol("node-b")
    base = c.http_url()
    sid = backup_set_id(c.ok("backup", "create", "--wait"))

    def scraped(name, **labels):
        """/metrics once it shows the sample (the page renders every 2 s)."""
        def got():
            text = get(base + "metrics")[2]
            return text if metric(text, name, **labels) else None
        return c.wait_for(f"{name} {labels} in /metrics", got, timeout=15)

    # Before any failure every counter of each component is there, at 0.
    text = scraped("cairn_backup_success_total", component="data", agent="node-b")
    for agent in ("node-a", "node-b"):
        assert metric(text, "cairn_backup_failure_total", policy="", component="data", agent=agent) == 0, text
        assert metric(text, "cairn_backup_partial_total", policy="", component="data", agent=agent) == 0, text
        assert metric(text, "cairn_restore_failure_total", component="data", agent=agent) == 0, text
        assert metric(text, "cairn_restore_success_total", component="data", agent=agent) == 0, text

    # node-b's drill cannot run there (its disk budget): not a failed backup.
    rc, out, err = c.ctl("drill", "run", sid, "--node", "node-b", "--on", "node-b", "--wait", timeout=300)
    assert rc == 1 and "could not run" in out, f"{rc}\n{out}\n{err}"
    rc, out, err = c.ctl("drill", "list")
    assert "not run" in out, out
    # node-a's backup damaged in the repository: its drill fails, for the backup.
    pack = damage_biggest_pack(c)
    rc, out, err = c.ctl("drill", "run", sid, "--node", "node-a", "--on", "node-a", "--wait", timeout=300)
    assert rc == 1 and "FAILED" in out, f"{rc}\n{out}\n{err}"
    # node-a's next backup fails (its data is gone): the older good one no longer makes it green.
    data_a = c.agent_dirs["node-a"]["data"]
    data_a.rename(data_a.with_name("data.away"))
    rc, out, err = c.ctl("backup", "create", "--node", "node-a", "--wait", timeout=120)
    assert rc != 0, out + err

    text = scraped("cairn_backup_failure_total", component="data", agent="node-a")
    assert metric(text, "cairn_backup_failure_total", policy="", component="data", agent="node-a") == 1, text
    assert metric(text, "cairn_backup_failure_total", policy="", component="data", agent="node-b") == 0, text
    assert metric(text, "cairn_drill_total", component="data", outcome="failed") == 1, text
    assert metric(text, "cairn_drill_total", component="data", outcome="not_run") == 1, text
    assert metric(text, "cairn_drill_total", component="data", outcome="proven") == 0, text

    rc, out, err = c.ctl("status")
    lines = out.splitlines()
    a = lines.index(next(l for l in lines if l.startswith("data ") and "node-a" in l))
    b = lines.index(next(l for l in lines if l.startswith("data ") and "node-b" in l))
    below_a = "\n".join(lines[a + 1:b] if b > a else lines[a + 1:a + 4])
    assert "NEWEST BACKUP failed: none of the declared paths" in below_a and "LAST DRILL FAILED" in below_a, out
    below_b = "\n".join(lines[b + 1:a] if a > b else lines[b + 1:b + 3])
    assert "could not run" in below_b and "disk_budget" in below_b and "FAILED" not in below_b, out

    time.sleep(2.5)  # the page of the same render as that /metrics, or a later one
    dom = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", base],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=120).stdout.decode()
    table = dom[dom.index('id="components"'):]
    table = table[:table.index("</table>")]
    rows = {r.split("</td>")[1].split(">")[-1]: r for r in table.split("<tr>")[2:]}
    row_a, row_b = rows["node-a"], rows["node-b"]
    # node-a: newest backup red with its reason, the good one's age; the drill red, one line.
    cells_a = row_a.split("<td")
    assert 'class="failed"' in cells_a[3] and "last good" in cells_a[3] and " ago" in cells_a[3], row_a
    assert "none of the declared paths" in cells_a[3], row_a
    assert 'class="failed"' in cells_a[4] and "the newest drill FAILED" in cells_a[4] and pack.name[:8] in cells_a[4], row_a
    assert len(re.sub(r"<[^>]+>", "", cells_a[4])) < 600, row_a
    # node-b: the drill could not run: not red, and it says it proves nothing.
    cells_b = row_b.split("<td")
    assert 'class="failed"' not in row_b and "could not run" in cells_b[4] and "proves nothing" in cells_b[4], row_b
    assert 'class="complete"' in cells_b[3] and " ago" in cells_b[3], row_b
