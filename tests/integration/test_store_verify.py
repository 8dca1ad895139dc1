"""A deleted snapshot leaves a trace (issue 57): what a repository holds
against what the controller recorded. `cairnctl repo check` names each
snapshot a signed set record lists in the repository that is not there, with
its set, task, agent and component, and names each record that does not
verify; the controller's periodic verification names each snapshot its
catalog holds that the store no longer lists, on /metrics, the status page,
in an audit event and in `cairnctl status`, and never what retention let go.
Snapshots are deleted behind the controller's back through the store's own
API: a local disk, SeaweedFS (S3, botocore) and Azurite (its REST API)."""
import json
import os
import re
import secrets
import subprocess
import time
import urllib.request

import pytest

from cluster import BUILD, Cluster, backup_set_id, catalog, cluster, set_state  # noqa: F401

FORGE = BUILD / "tests" / "cairn-record-forge"
VERIFY_ENV = {"CAIRN_VERIFY_INTERVAL_SECONDS_FOR_TESTS": "2"}

MISSING = re.compile(r"^error: snapshot ([0-9a-f]{64}) \(set (\S+), task (\S+), agent (\S+), component (\S+), made "
                     r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC)\) is recorded in the signed set record but not in the "
                     r"repository(; the store keeps a whole earlier version \([^)]*\): "
                     r"'cairnctl repo check --recover' puts it back)?$", re.M)


def backed_up(c, node="node-a"):
    """A backup set of the node's data, its signed record in the repository:
    (set id, task id, snapshot id)."""
    sid = backup_set_id(c.ok("backup", "create", "--node", node, "--wait", timeout=180))
    c.wait_signed(sid)
    (t,) = c.json("backup", "show", sid)["tasks"]
    assert t.get("snapshot_id"), t
    return sid, t["task_id"], t["snapshot_id"]


def check(c, *args):
    return c.ctl("repo", "check", *c.repo_args(), *args, timeout=300)


def missing_named(out):
    return {m.group(1): m.groups()[1:5] for m in MISSING.finditer(out)}


def metric(c, name, repository="main"):
    text = urllib.request.urlopen(c.http_url() + "metrics", timeout=10).read().decode()
    m = re.search(rf'^{name}{{repository="{repository}"}} (\S+)$', text, re.M)
    return (float(m.group(1)) if m else None), text


def verified_since(c, t0, timeout=60):
    """Waits for a verification of "main" that began after t0 (unix seconds); returns its missing count."""
    def done():
        at, _ = metric(c, "cairn_repository_verified_timestamp_seconds")
        return at is not None and at > t0
    c.wait_for("a verification of repository 'main'", done, timeout=timeout)
    return metric(c, "cairn_repository_snapshots_missing")[0]


def audit_missing(c):
    con = catalog(c)
    try:
        return [json.loads(d) for (d,) in con.execute(
            "SELECT details FROM audit_outbox WHERE action = 'repository.snapshots_missing' ORDER BY seq")]
    finally:
        con.close()


def store_cluster(tmp_path, repo_url, credentials, agent_credentials=None):
    """A controller and an agent whose repository "main" is at repo_url (an
    object store), verified every 2 s. The agent uses agent_credentials when
    given (the store must protect what it writes: agents refuse otherwise)."""
    c = Cluster(tmp_path / "cluster")
    c.base.mkdir(parents=True)
    c.repo = repo_url
    c.repo_credentials = credentials
    c.agent_repo_credentials = agent_credentials
    c.init()
    c.controller.env = VERIFY_ENV
    c.start_controller()
    c.declare_repository()
    c.add_agent("node-a", {"a.bin": os.urandom(200_000)})
    c.enrol("node-a")
    return c


def test_check_names_each_snapshot_deleted_from_a_local_repository_and_each_record_that_does_not_verify(cluster, tmp_path):
    c = cluster
    c.declare_repository()
    c.add_agent("node-a", {"a.bin": os.urandom(100_000)})
    c.enrol("node-a")
    first = backed_up(c)
    second = backed_up(c)
    key = ["--trusted-key", c.signing_pub()]
    rc, out, err = check(c, *key)
    assert rc == 0 and "no errors were found" in out, (rc, out, err)
    assert "checked 2 snapshots, 2 of 2 recorded in set records," in out, out

    (c.repo / "snapshots" / first[2]).unlink()
    rc, out, err = check(c, *key)
    assert rc == 1, (rc, out, err)
    assert missing_named(out) == {first[2]: (first[0], first[1], "node-a", "data")}, out
    assert "checked 1 snapshots, 1 of 2 recorded in set records," in out and "1 error found" in out, out
    assert "without verifying" not in out
    rc, out, _ = check(c, *key, "--json")
    lines = [json.loads(l) for l in out.splitlines()]
    (p,) = [l for l in lines if l.get("kind") == "snapshot_missing"]
    assert (p["snapshots"], p["set"], p["task"], p["agent"], p["component"]) == (
        [first[2]], first[0], first[1], "node-a", "data"), p
    summary = lines[-1]
    assert summary["snapshots_missing"] == 1 and summary["snapshots_recorded"] == 2, summary
    assert summary["set_records_verified"] is True and summary["repository_names"] == ["main"], summary

    # Without a key the records are read unverified, and it says so.
    rc, out, _ = check(c)
    assert rc == 1 and first[2] in missing_named(out), out
    assert "note: set records read without verifying their signatures (give --trusted-key to verify)" in out, out

    # Every snapshot gone ("checked 0 snapshots" said nothing before): each is named.
    (c.repo / "snapshots" / second[2]).unlink()
    rc, out, _ = check(c, *key)
    assert rc == 1 and set(missing_named(out)) == {first[2], second[2]}, out
    assert "checked 0 snapshots, 0 of 2 recorded in set records," in out, out

    # A key that is not the controller's: no record verifies, each is named, nothing counted as recorded.
    c.ok("keys", "init", "--dir", tmp_path / "other-keys")
    rc, out, _ = check(c, "--trusted-key", tmp_path / "other-keys" / "controller-signing.pub")
    assert rc == 1 and not missing_named(out), out
    for sid in (first[0], second[0]):
        assert re.search(rf"^error: set record [0-9a-f]{{16}} \(set {sid}\) does not verify: it is signed by key "
                         r"'[^']+', which is not a controller key trusted here", out, re.M), out
    assert "0 of 0 recorded" in out, out


def test_check_names_a_record_forged_with_the_repository_password(cluster, tmp_path):
    """A record the controller never signed, written by someone holding the
    repository's password and claiming the controller's key id: named as not
    verifying, and the snapshot it lists is not looked for."""
    c = cluster
    c.declare_repository()
    c.add_agent("node-a", {"a.bin": os.urandom(50_000)})
    c.enrol("node-a")
    genuine = backed_up(c)
    key_id = c.json("status")["active_key_id"]
    made_up = secrets.token_hex(32)
    p = subprocess.run(
        [os.fspath(FORGE), "--repo", os.fspath(c.repo), "--password-file", os.fspath(c.repo_pass), "--set",
         "bs-f0rged000000001", "--task", "tk-f0rged000000001", "--snapshot", made_up, "--repository", "main",
         "--key-id", key_id], capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr.decode()
    rc, out, _ = check(c, "--trusted-key", c.signing_pub())
    assert rc == 1, out
    assert re.search(r"^error: set record [0-9a-f]{16} \(set bs-f0rged000000001\) does not verify: its signature does "
                     rf"not verify under controller key '{re.escape(key_id)}'; the snapshots it lists are not counted$",
                     out, re.M), out
    assert not missing_named(out) and "1 of 1 recorded in set records" in out, out
    # Unverified, the forgery is taken at its word: why the controller's key matters.
    rc, out, _ = check(c)
    assert set(missing_named(out)) == {made_up}, out
    assert genuine[2] not in out


def test_seaweedfs_a_deleted_snapshot_is_named_by_check_and_the_controller_and_retention_is_not(tmp_path):
    from servers_s3 import SeaweedFS
    from test_policies import run_now_and_wait, sets_of

    store = SeaweedFS(tmp_path / "seaweedfs").start()
    c = None
    try:
        bucket = "cairn-" + secrets.token_hex(4)
        # A versioned bucket: the setup agents accept (docs/configuration.md § Protecting the repository from its writers).
        store.client().create_bucket(Bucket=bucket)
        store.client().put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        c = store_cluster(tmp_path, store.url(bucket, "repo"), store.credentials(tmp_path / "admin.cred"))
        kept = backed_up(c)
        # Retention forgets two sets while the verification runs every 2 s: never missing.
        c.ok("policy", "add", "hourly", "--schedule", "0 0 1 1 *", "--component", "data", "--keep-last", "1")
        for _ in range(3):
            (c.agent_dirs["node-a"]["data"] / "run.bin").write_bytes(os.urandom(100_000))
            assert set_state(run_now_and_wait(c, "hourly")) == "complete"
        seen = []

        def forgotten():
            seen.append(metric(c, "cairn_repository_snapshots_missing")[0])
            return len([s for s in sets_of(c, "hourly") if int(s.get("forgotten_at", 0))]) == 2
        c.wait_for("two sets forgotten", forgotten, timeout=120)
        assert verified_since(c, time.time()) == 0
        assert 0.0 in seen and set(seen) <= {None, 0.0}, seen
        assert audit_missing(c) == []
        rc, out, _ = check(c, "--trusted-key", c.signing_pub())
        assert rc == 0 and "2 of 2 recorded in set records" in out, out  # the forgotten sets' records went with them

        # Deleted behind the controller's back, through the store's API.
        s3 = store.client()
        key = f"repo/snapshots/{kept[2]}"
        s3.head_object(Bucket=bucket, Key=key)
        s3.delete_object(Bucket=bucket, Key=key)
        t0 = time.time()
        assert verified_since(c, t0) == 1
        page = urllib.request.urlopen(c.http_url(), timeout=10).read().decode()
        assert "1 of the 2 the catalog holds MISSING" in page, page
        assert f"{kept[2]} (set {kept[0]}, task {kept[1]}, agent node-a, component data, made " in page, page
        events = audit_missing(c)
        assert len(events) == 1 and events[0]["missing"] == 1, events
        assert [(e["set"], e["task"], e["snapshot"]) for e in events[0]["snapshots"]] == [kept], events
        out = c.ok("status")
        assert re.search(rf"^repository +main: verified .*: 1 of the 2 snapshot\(s\) the catalog holds there are MISSING$",
                         out, re.M), out
        assert f"MISSING snapshot {kept[2]} (set {kept[0]}, task {kept[1]}, agent node-a, component data" in out, out
        (r,) = c.json("status")["repositories"]
        assert [m["snapshot_id"] for m in r["missing"]] == [kept[2]], r
        # One series of the store's protection, in a state the backend can say.
        _, text = metric(c, "cairn_repository_store_protection")
        states = re.findall(r'^cairn_repository_store_protection\{repository="main",state="(\w+)"\} 1$', text, re.M)
        assert len(states) == 1 and states[0] in {"not_applicable", "none", "unknown", "versioning", "object_lock",
                                                  "create_only"}, text
        assert f"store protection: {states[0]}" in page, page
        # The same answer from the repository alone, with the controller's key.
        rc, out, _ = check(c, "--trusted-key", c.signing_pub())
        assert rc == 1 and missing_named(out) == {kept[2]: (kept[0], kept[1], "node-a", "data")}, out
        # Still missing at the next turn: no second event.
        assert verified_since(c, time.time()) == 1
        assert len(audit_missing(c)) == 1
    finally:
        if c:
            c.stop_all()
        store.stop()


def test_azurite_a_deleted_snapshot_is_named_by_check_and_the_controller(tmp_path):
    from servers_azurite import DEV_ACCOUNT, Azurite

    store = Azurite(tmp_path / "azurite").start()
    c = None
    try:
        container = "cairn-" + secrets.token_hex(4)
        from servers_azurite import write_credentials
        agent_sas = write_credentials(tmp_path / "agent.cred", sas_token=store.account_sas(DEV_ACCOUNT, "rcl"))
        c = store_cluster(tmp_path, store.url(container, "repo"), store.credentials(tmp_path / "azure.cred"), agent_sas)
        first = backed_up(c)
        second = backed_up(c)
        assert verified_since(c, time.time()) == 0
        name = f"repo/snapshots/{first[2]}"
        assert name in store.blobs(container, "repo/snapshots/")
        sas = store.account_sas(DEV_ACCOUNT, "rld", hours=1)
        req = urllib.request.Request(f"{store.endpoint}/{DEV_ACCOUNT}/{container}/{name}?{sas}", method="DELETE")
        assert urllib.request.urlopen(req, timeout=30).status == 202
        assert name not in store.blobs(container, "repo/snapshots/")
        rc, out, _ = check(c, "--trusted-key", c.signing_pub())
        assert rc == 1, out
        assert missing_named(out) == {first[2]: (first[0], first[1], "node-a", "data")}, out
        assert "checked 1 snapshots, 1 of 2 recorded in set records," in out, out
        assert verified_since(c, time.time()) == 1
        (e,) = audit_missing(c)
        assert [s["snapshot"] for s in e["snapshots"]] == [first[2]] and second[2] not in json.dumps(e), e
    finally:
        if c:
            c.stop_all()
        store.stop()
