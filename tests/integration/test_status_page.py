"""The controller's /metrics and status page (issue 12): scraped over HTTP,
loaded in Debian's headless Chromium, behind a bearer token, and the example
alerting rules in docs/alerts.md checked with promtool."""
import os
import pathlib
import re
import shutil
import subprocess
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
    assert metric(text, "cairn_backup_failure_total", component="data") is None
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


def test_the_example_alerting_rules_pass_promtool(tmp_path):
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.fail("promtool (Debian's prometheus package) is not installed")
    doc = (pathlib.Path(ROOT) / "docs" / "alerts.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", doc, re.S)
    rules = [b for b in blocks if b.lstrip().startswith("groups:")]
    assert len(rules) == 1, "docs/alerts.md must hold one rules block"
    f = tmp_path / "rules.yml"
    f.write_text(rules[0])
    p = subprocess.run([promtool, "check", "rules", str(f)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    out = p.stdout.decode()
    assert p.returncode == 0, out
    assert "SUCCESS: 18 rules found" in out, out
    # Every metric a rule names is one the controller serves (docs/alerts.md's table).
    names = set(re.findall(r"\b(cairn_[a-z_]+)", rules[0]))
    served = set(re.findall(r"`(cairn_[a-z_]+)", doc.split("## Example rules")[0]))
    assert names <= served | {n + "_bucket" for n in served}, names - served


def test_the_wal_alerts_fire_at_their_first_report(tmp_path):
    """promtool test rules on docs/alerts.md's rules: CairnWalArchiveGap fires on
    the first scrape that reports a missing segment, and never for the
    timeline="all" 0 an archive without gaps reports; CairnWalArchiveFailing on
    the first scrape that says the archive fails (its agent gone included), and
    stops with it."""
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.fail("promtool (Debian's prometheus package) is not installed")
    doc = (pathlib.Path(ROOT) / "docs" / "alerts.md").read_text()
    rules = [b for b in re.findall(r"```yaml\n(.*?)```", doc, re.S) if b.lstrip().startswith("groups:")][0]
    (tmp_path / "rules.yml").write_text(rules)
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
    c.ok("policy", "add", "hourly", "--schedule", "0 * * * *", "--keep-last", "3")
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
