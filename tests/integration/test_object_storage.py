"""Repositories in an object store (issue 34), against a real S3 server:
SeaweedFS on loopback with authentication on (servers_s3.py), and a
fault-injecting proxy written for these tests in front of it (s3_proxy.py).
"""
import http.server
import json
import os
import random
import re
import secrets
import shutil
import subprocess
import threading
import time
import datetime
from unittest import mock

import pytest

from conftest import BIN, assert_same_tree, restored_path, summary_of, write_random
from object_store_repo import (S3Repo as Repo, a_store_that_stays_down_fails_the_backup_cleanly, bucket_keys, faults_mid_transfer_are_retried,
                               no_credentials_or_open_ones_are_refused)
from object_store_repo import s3, s3_proxy  # noqa: F401 (fixtures)
from servers_s3 import write_credentials
from test_roundtrip import make_every_kind

BUILD = BIN.parent.parent


@pytest.fixture(scope="module")
def store(s3):
    return s3


@pytest.fixture
def proxy(s3_proxy):
    return s3_proxy


def new_repo(store, tmp_path, endpoint=None, role="admin", init=True):
    bucket = "cairn-" + secrets.token_hex(4)
    creds = store.credentials(tmp_path / f"{role}.cred", role=role)
    r = Repo(store.url(bucket, "repo", endpoint=endpoint), tmp_path, creds)
    r.bucket = bucket
    if init:
        admin = Repo(store.url(bucket, "repo"), tmp_path, store.credentials(tmp_path / "admin-init.cred"))
        admin.pw = r.pw
        admin.ok("init")
    return r


def test_conformance_suite_against_seaweedfs(store, tmp_path):
    """The backend conformance suite (tests/unit/common/storage) against the real S3 server."""
    store.client().create_bucket(Bucket="conformance")
    exe = BUILD / "tests" / "unit" / "common" / "storage" / "unit_storage"
    env = dict(os.environ, CAIRN_CONFORMANCE_URLS=store.url("conformance"),
               CAIRN_CONFORMANCE_CREDENTIALS=os.fspath(store.credentials(tmp_path / "c.cred")),
               CAIRN_CONFORMANCE_EXPECT_EXCLUSIVE="1")
    p = subprocess.run([os.fspath(exe), "conformance:*"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=600)
    out = p.stdout.decode(errors="replace")
    assert p.returncode == 0, out[-5000:]
    assert "All tests passed" in out


def test_a_store_that_ignores_conditional_writes_is_detected(store, proxy, tmp_path):
    """Some S3-compatible servers accept If-None-Match and ignore it: the suite finds out, and a
    repository there still backs up and restores (writers sharing data just do not claim)."""
    proxy.ignore_conditional = True
    store.client().create_bucket(Bucket="ignores-inm")
    exe = BUILD / "tests" / "unit" / "common" / "storage" / "unit_storage"
    env = dict(os.environ, CAIRN_CONFORMANCE_URLS=store.url("ignores-inm", endpoint=proxy.endpoint),
               CAIRN_CONFORMANCE_CREDENTIALS=os.fspath(store.credentials(tmp_path / "c.cred")),
               CAIRN_CONFORMANCE_EXPECT_EXCLUSIVE="1")
    p = subprocess.run([os.fspath(exe), "conformance: the stores in CAIRN_CONFORMANCE_URLS", "-c", "exclusive create"], env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    out = " ".join(p.stdout.decode(errors="replace").split())  # Catch2 wraps long lines
    assert p.returncode != 0 and "does not enforce exclusive create" in out, out[-3000:]
    r = new_repo(store, tmp_path, endpoint=proxy.endpoint)
    src = tmp_path / "src"
    src.mkdir()
    write_random(src / "a.bin", 3 << 20)
    import time
    # A writer sharing data with replicas (what Kafka's agents do) would claim: it stores its own copy instead.
    out, err = r.ok("backup", "--shared-with-replicas", "0.5", src)
    assert "does not enforce it" in err, err
    r.ok("restore", "latest", "--target", tmp_path / "out")
    assert_same_tree(src, restored_path(tmp_path / "out", src))


def test_sigv4_matches_botocore(tmp_path):
    """Our SigV4 signer against botocore's (Debian's python3-botocore), over generated requests:
    odd characters in paths and query values, unsorted and valueless parameters, headers with
    runs of spaces, session tokens, regions and both services."""
    from botocore.auth import S3SigV4Auth, SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    from botocore.utils import percent_encode

    rng = random.Random(34)
    alphabet = "abcXYZ019-_.~ /+=&%:@!$'()*,;?#[]éü中"
    cases, expected = [], []
    for i in range(400):
        service = "s3" if i % 4 else "service"
        method = rng.choice(["GET", "PUT", "HEAD", "DELETE", "POST"])
        path = "/" + "/".join("".join(rng.choice(alphabet.replace("/", "")) for _ in range(rng.randint(1, 12)))
                              for _ in range(rng.randint(1, 4)))
        if service != "s3":  # only S3 is signed in production: other services normalize dot segments, S3 does not
            path = "/" + "".join(rng.choice("abcXYZ019-_~") for _ in range(rng.randint(0, 10)))
        params = {}
        for _ in range(rng.randint(0, 4)):
            params[rng.choice(["list-type", "prefix", "uploads", "partNumber", "uploadId", "continuation-token", "Z", "a"])] = \
                "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 10)))
        headers = {}
        if rng.random() < 0.5:
            headers["X-Amz-Meta-Note"] = "  two  spaces   inside "
        if rng.random() < 0.5:
            headers["Range"] = f"bytes={rng.randint(0, 99)}-{rng.randint(100, 999)}"
        if rng.random() < 0.3:
            headers["If-None-Match"] = "*"
        payload = os.urandom(rng.randint(0, 64)) if method in ("PUT", "POST") else b""
        import hashlib
        payload_hash = hashlib.sha256(payload).hexdigest()
        region = rng.choice(["us-east-1", "eu-west-3", "ap-southeast-2"])
        ak = "AK" + secrets.token_hex(8).upper()
        sk = secrets.token_urlsafe(30)
        token = secrets.token_urlsafe(40) if rng.random() < 0.4 else ""
        host = rng.choice(["127.0.0.1:9000", "s3.example.com", "bucket.s3.eu-west-3.amazonaws.com"])
        date = datetime.datetime(2026, 11, 26, rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59))
        amz_date = date.strftime("%Y%m%dT%H%M%SZ")

        url = "http://" + host + (percent_encode(path, safe="/~") if service == "s3" else path)
        req_headers = dict(headers)
        if service == "s3":
            req_headers["X-Amz-Content-SHA256"] = payload_hash
        req = AWSRequest(method=method, url=url, headers=req_headers, params=params, data=payload)
        creds = Credentials(ak, sk, token or None)
        auth = (S3SigV4Auth if service == "s3" else SigV4Auth)(creds, service, region)
        with mock.patch("botocore.auth.datetime") as dt:
            dt.datetime.utcnow.return_value = date
            auth.add_auth(req)
        expected.append(req.headers["Authorization"])
        cases.append({"method": method, "host": host, "path": path, "query": [[k, v] for k, v in params.items()],
                      "headers": [[k, v] for k, v in headers.items()], "payload_hash": payload_hash,
                      "region": region, "service": service, "date": amz_date, "access_key": ak, "secret_key": sk,
                      "token": token})
    p = subprocess.run([os.fspath(BUILD / "tests" / "cairn-sigv4-sign")], input="\n".join(json.dumps(c) for c in cases) + "\n",
                       stdout=subprocess.PIPE, text=True, timeout=60, check=True)
    ours = [json.loads(line) for line in p.stdout.splitlines()]
    assert len(ours) == len(cases)
    bad = [(c, o["canonical_request"], e, o["Authorization"]) for c, o, e in zip(cases, ours, expected)
           if o["Authorization"] != e]
    assert not bad, f"{len(bad)} of {len(cases)} differ; first: {bad[0]}"


def test_round_trip_every_file_kind(store, tmp_path):
    r = new_repo(store, tmp_path)
    src = tmp_path / "src"
    make_every_kind(src)
    out, err = r.ok("backup", "--json", src)
    assert summary_of(out)["partial"] is False
    target = tmp_path / "restore"
    target.mkdir()
    r.ok("restore", "latest", "--target", target)
    assert_same_tree(src, restored_path(target, src))
    out, _ = r.ok("check", "--read-data")
    assert "no errors were found" in out
    # Nothing but the repository's own objects under its prefix, laid out as on a disk.
    kinds = {k.split("/")[1] for k in bucket_keys(store, r.bucket, "repo/")}
    assert kinds <= {"config", "keys", "data", "index", "snapshots", "locks", "claims"}, kinds
    assert {"config", "keys", "data", "index", "snapshots"} <= kinds


def test_wrong_secret_is_refused_clearly_and_writes_nothing(store, tmp_path):
    r = new_repo(store, tmp_path)
    before = bucket_keys(store, r.bucket)
    ak, _ = store.keys["admin"]
    secret = "wrong-" + secrets.token_hex(12)
    bad = write_credentials(tmp_path / "bad.cred", ak, secret)
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("data\n")
    for args in (("backup", src), ("snapshots",)):
        rc, out, err = r.run(*args, creds=bad)
        assert rc == 14, (rc, err)
        assert r.url.split("/repo")[0] in err and "bad.cred" in err, err
        assert "secret key does not match" in err, err
        assert secret not in err + out and ak not in err + out
    assert bucket_keys(store, r.bucket) == before
    no_credentials_or_open_ones_are_refused(r, bad, "S3")


def test_credentials_from_environment_and_shared_file(store, tmp_path):
    r = new_repo(store, tmp_path)
    ak, sk = store.keys["admin"]
    r.ok("snapshots", creds="", env={"AWS_ACCESS_KEY_ID": ak, "AWS_SECRET_ACCESS_KEY": sk})
    aws = tmp_path / ".aws"
    aws.mkdir()
    (aws / "credentials").write_text(f"[default]\naws_access_key_id = WRONG\naws_secret_access_key = wrong\n\n"
                                     f"[backup]\naws_access_key_id = {ak}\naws_secret_access_key = {sk}\n")
    os.chmod(aws / "credentials", 0o600)
    rc, _, err = r.run("snapshots", creds="")
    assert rc == 14 and "profile 'default'" in err, err
    r.ok("snapshots", creds="", env={"AWS_PROFILE": "backup"})


class _IMDS(http.server.BaseHTTPRequestHandler):
    """A local stand-in for the EC2 instance metadata service (IMDSv2), not the real one:
    a token from PUT /latest/api/token, required on every GET."""
    token = secrets.token_hex(16)
    keys = None
    gets = []

    def log_message(self, *a):
        pass

    def do_PUT(self):
        if self.path != "/latest/api/token" or not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
            self.send_response(400)
            self.end_headers()
            return
        self._send(self.token)

    def do_GET(self):
        _IMDS.gets.append(self.path)
        if self.headers.get("X-aws-ec2-metadata-token") != self.token:
            self.send_response(401)
            self.end_headers()
            return
        if self.path == "/latest/meta-data/iam/security-credentials/":
            self._send("cairn-backup-role")
        elif self.path == "/latest/meta-data/iam/security-credentials/cairn-backup-role":
            exp = (datetime.datetime.utcnow() + datetime.timedelta(hours=6)).strftime("%Y-%m-%dT%H:%M:%SZ")
            self._send(json.dumps({"Code": "Success", "AccessKeyId": self.keys[0], "SecretAccessKey": self.keys[1],
                                   "Token": "", "Expiration": exp}))
        else:
            self.send_response(404)
            self.end_headers()

    def _send(self, text):
        b = text.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)


def test_credentials_from_instance_metadata_stand_in(store, tmp_path):
    r = new_repo(store, tmp_path)
    _IMDS.keys = store.keys["admin"]
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _IMDS)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        env = {"AWS_EC2_METADATA_DISABLED": "false",
               "AWS_EC2_METADATA_SERVICE_ENDPOINT": f"http://127.0.0.1:{srv.server_address[1]}"}
        out, _ = r.ok("snapshots", creds="", env=env)
        assert "/latest/meta-data/iam/security-credentials/cairn-backup-role" in _IMDS.gets
    finally:
        srv.shutdown()


def test_read_only_credentials_cannot_write(store, tmp_path):
    r = new_repo(store, tmp_path, role="reader")
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x\n")
    rc, out, err = r.run("backup", src)
    assert rc == 14, (rc, err)
    assert "AccessDenied" in err and "reader.cred" in err, err
    r.ok("snapshots")  # reading is allowed


def test_agent_credentials_that_cannot_delete_back_up_and_restore_but_not_prune(store, proxy, tmp_path):
    """The agent's role: every DELETE outside locks/ refused (by the proxy, as a bucket policy would)."""
    proxy.agent_role()
    r = new_repo(store, tmp_path, endpoint=proxy.endpoint)
    src = tmp_path / "src"
    src.mkdir()
    write_random(src / "a.bin", 5 << 20)
    r.ok("backup", src)
    (src / "b.txt").write_text("second\n")
    r.ok("backup", src)
    r.ok("restore", "latest", "--target", tmp_path / "out")
    assert_same_tree(src, restored_path(tmp_path / "out", src))
    assert proxy.count("DELETE", r"/locks/") >= 2  # its own locks it removes
    before = bucket_keys(store, r.bucket)
    rc, out, err = r.run("forget", "--keep-last", "1", "--prune")
    assert rc == 14, (rc, out, err)
    assert "cannot prune or forget" in err and "controller" in err, err
    # Nothing of the data was lost (locks come and go).
    after = bucket_keys(store, r.bucket)
    assert {k for k in before if "/locks/" not in k} <= set(after)
    out, _ = r.ok("check", "--read-data")
    assert "no errors were found" in out


def test_agent_credentials_fail_prune_and_forget_even_with_nothing_to_delete(store, proxy, tmp_path):
    """docs/configuration.md: with agent credentials, forget and prune fail with exit code 14 and say
    that maintenance runs where the controller's credentials are; also when there is nothing to delete
    (they ask the store first), and before they write a lock. A dry run changes nothing and may run."""
    proxy.agent_role()
    r = new_repo(store, tmp_path, endpoint=proxy.endpoint)
    src = tmp_path / "src"
    src.mkdir()
    write_random(src / "a.bin", 1 << 20)
    r.ok("backup", src)
    before = bucket_keys(store, r.bucket)
    for args in (("prune",), ("forget", "--keep-last", "5"), ("forget", "--keep-last", "5", "--prune")):
        rc, out, err = r.run(*args)
        assert rc == 14, (args, rc, out, err)
        assert "cannot prune or forget" in err and "controller's credentials" in err, (args, err)
        assert bucket_keys(store, r.bucket) == before, args  # not even a lock
    out, _ = r.ok("prune", "--dry-run")
    assert "nothing was changed" in out
    # The controller's credentials: nothing to prune, and that is success.
    admin = Repo(store.url(r.bucket, "repo"), tmp_path, store.credentials(tmp_path / "controller.cred"))
    admin.pw = r.pw
    out, _ = admin.ok("prune")
    assert "nothing to prune" in out
    admin.ok("forget", "--keep-last", "5")


def test_a_killed_restore_from_s3_leaves_partial_files_the_next_restore_removes(store, tmp_path):
    """kill -9 of `repo restore` reading from S3, once the first temporary file appears; the restore with
    --overwrite into the same target removes what it left and says so (test_crash.py does it on disk)."""
    from test_crash import finish_after_kills, kill_restores, restore_source
    r = new_repo(store, tmp_path)
    src = restore_source(tmp_path, files=4)
    r.ok("backup", src)
    target = tmp_path / "out"
    left = kill_restores(lambda overwrite: r.popen("restore", "latest", "--target", target, *(["--overwrite"] if overwrite else []),
                                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
                         target, kills=1)
    finish_after_kills(lambda overwrite: r.run("restore", "latest", "--target", target, "--json",
                                               *(["--overwrite"] if overwrite else [])),
                       target, src, left)


def test_the_summaries_count_every_request_the_store_saw(store, proxy, tmp_path):
    """storage.requests in backup's and restore's --json summaries is what the store was sent: the
    proxy in front of it counts the same (the lock's removal included)."""
    r = new_repo(store, tmp_path, endpoint=proxy.endpoint)
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    write_random(src / "a.bin", 3 << 20)
    for i in range(5):
        (src / "d" / f"f{i}.txt").write_text(f"file {i}\n")
    for args in (("backup", "--json", src), ("backup", "--json", src),
                 ("restore", "latest", "--target", tmp_path / "out", "--json")):
        seen = len(proxy.requests)
        out, _ = r.ok(*args)
        summary = summary_of(out)
        assert summary["storage"]["requests"] == len(proxy.requests) - seen, (args, summary["storage"], proxy.requests[seen:])
        assert summary["storage"]["retries"] == 0
    assert_same_tree(src, restored_path(tmp_path / "out", src))


def test_a_stalled_store_is_part_of_the_summarys_duration(store, proxy, tmp_path):
    """A store that holds a request for seconds (less than the stall timeout: no retry) makes the
    command take that long, and the summary's duration_s says so: it is the command's wall time,
    the lock and the snapshot's upload included."""
    r = new_repo(store, tmp_path, endpoint=proxy.endpoint)
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_text("small\n")
    proxy.add("stall", method="PUT", path=r"/snapshots/", count=1, seconds=3.0)
    t0 = time.monotonic()
    out, _ = r.ok("backup", "--json", src)
    wall = time.monotonic() - t0
    summary = summary_of(out)
    assert summary["storage"]["retries"] == 0, summary
    assert 3.0 <= summary["duration_s"] <= wall, (summary["duration_s"], wall)
    proxy.add("stall", method="PUT", path=r"/locks/", count=1, seconds=3.0)
    t0 = time.monotonic()
    out, _ = r.ok("restore", "latest", "--target", tmp_path / "out", "--json")
    wall = time.monotonic() - t0
    summary = summary_of(out)
    assert 3.0 <= summary["duration_s"] <= wall, (summary["duration_s"], wall)


def test_a_secret_in_a_repository_url_is_refused_and_never_printed(store, tmp_path):
    """Credentials are never taken from a URL: one written into it anyway (userinfo, a signed query)
    is refused, by cairnctl and by the controller's configuration, and the refusal shows the URL
    with the secret as '***'."""
    from cluster import CONTROLLER
    secret = "wJalrXUtnFEMIK7MDENGbPxRfiCYSECRET"
    host = store.endpoint.split("://", 1)[1]
    urls = [f"s3:http://AKIDEXAMPLE:{secret}@{host}/bucket/repo", f"s3://AKIDEXAMPLE:{secret}@bucket/repo",
            f"s3:http://{host}/bucket/repo?X-Amz-Credential=AKIDEXAMPLE&X-Amz-Signature={secret}"]
    r = new_repo(store, tmp_path, init=False)
    for url in urls:
        bad = Repo(url, tmp_path, r.creds)
        for args in (("snapshots",), ("init",), ("backup", tmp_path)):
            rc, out, err = bad.run(*args)
            assert rc == 1, (url, args, rc, out, err)
            assert "carries credentials" in err or "has a query" in err, err
            assert "***" in err and secret not in out + err and "AKIDEXAMPLE" not in out + err, err
    # The controller refuses to start on such a [[repository]] path, naming file, line and repository.
    for url in urls:
        cfg = tmp_path / "controller.toml"
        cfg.write_text(f'[controller]\ndata_dir = "{tmp_path / "ctl"}"\n\n[[repository]]\nname = "offsite"\n'
                       f'password_file = "{r.pw}"\npath = "{url}"\n')
        p = subprocess.run([os.fspath(CONTROLLER), "--config", cfg], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        out = (p.stdout + p.stderr).decode(errors="replace")
        assert p.returncode == 2, (p.returncode, out)
        assert f"{cfg}:7:" in out and "repository 'offsite'" in out and "carries credentials" in out and "***" in out, out
        assert secret not in out and "AKIDEXAMPLE" not in out, out


def test_faults_mid_transfer_are_retried_and_the_repository_checks_clean(store, proxy, tmp_path):
    faults_mid_transfer_are_retried(new_repo(store, tmp_path, endpoint=proxy.endpoint), proxy, tmp_path, "SlowDown")


def test_a_store_that_stays_down_fails_the_backup_cleanly(store, proxy, tmp_path):
    a_store_that_stays_down_fails_the_backup_cleanly(new_repo(store, tmp_path, endpoint=proxy.endpoint), proxy,
                                                     tmp_path, "SlowDown")


# ---- through the controller ------------------------------------------------


def s3_cluster(store, proxy, tmp_path, liveness=None):
    """A controller and agents whose repository "main" is in the S3 store. The
    controller uses the admin credentials directly; agents reach the store
    through the proxy in the agent role (no DELETE outside locks/)."""
    from cluster import Cluster
    bucket = "cairn-" + secrets.token_hex(4)
    c = Cluster(tmp_path / "cluster", **({"liveness": liveness} if liveness else {}))
    c.base.mkdir(parents=True)
    c.repo = store.url(bucket, "repo")
    c.repo_credentials = store.credentials(tmp_path / "controller.cred")
    c.agent_repo = store.url(bucket, "repo", endpoint=proxy.endpoint)
    c.agent_repo_credentials = store.credentials(tmp_path / "agent.cred")
    c.bucket = bucket
    proxy.agent_role()
    c.init()
    c.start_controller()
    c.declare_repository()
    return c


def test_controller_backs_up_etcd_into_s3_restores_it_and_prunes_there(store, proxy, tmp_path):
    from cluster import backup_set_id, lower_enum, restore_id, set_state
    from servers_etcd import EtcdMember
    from test_policies import run_now_and_wait, sets_of

    member = EtcdMember(tmp_path, "etcd-a").start()
    c = s3_cluster(store, proxy, tmp_path)
    try:
        original = {f"/registry/k{i:05d}": f"v-{i}-" + "x" * (i % 40) for i in range(3000)}
        member.put_many(original)
        c.add_agent("node-a", {"keep.txt": b"kept\n" * 100}, components=member.component_toml())
        c.enrol("node-a")

        rc, out, err = c.ctl("backup", "create", "--component", "etcd", "--node", "node-a", "--wait")
        assert rc == 0, f"{out}\n{err}\n{c.logs()}"
        sid = backup_set_id(out)
        # The task's result says what the store was asked; /metrics sums it per repository.
        shown = c.json("backup", "show", sid)
        assert all(int(t["storage_requests"]) > 0 for t in shown["tasks"]), shown["tasks"]
        assert "store: " in c.ok("backup", "show", sid)
        import urllib.request
        def counted():  # the controller renders /metrics every 2 s
            text = urllib.request.urlopen(c.http_url() + "metrics", timeout=10).read().decode()
            return text if re.search(r'^cairn_storage_requests_total\{repository="main"\} [1-9]', text, re.M) else None
        text = c.wait_for("the store's requests in /metrics", counted, timeout=15)
        assert re.search(r'^cairn_storage_retries_total\{repository="main"\} 0$', text, re.M)
        c.wait_signed(sid)  # the controller's signed record went to the bucket too
        assert any(k.startswith("repo/sets/") for k in bucket_keys(store, c.bucket, "repo/"))

        member.delete("/registry/k00", prefix=True)
        member.put_many({"/registry/new": "not in the snapshot"})
        rc, out, err = c.ctl("restore", sid, "--component", "etcd", "--node", "node-a", "--wait", timeout=300)
        assert rc == 0, f"{out}\n{err}\n{c.logs()}"
        r = c.json("restore", "show", restore_id(out))
        assert lower_enum(r.get("state", ""), "set_state_") == "complete", r
        assert member.get_all() == original

        # Retention and prune by the controller, with its own credentials.
        data = c.agent_dirs["node-a"]["data"]
        c.ok("policy", "add", "hourly", "--schedule", "0 0 1 1 *", "--component", "data", "--keep-last", "1")
        for i in range(3):
            (data / "run.bin").write_bytes(os.urandom(300_000))
            s = run_now_and_wait(c, "hourly")
            assert set_state(s) == "complete", s
        c.wait_for("two sets forgotten", lambda: len([s for s in sets_of(c, "hourly") if int(s.get("forgotten_at", 0))]) == 2,
                   timeout=90)
        snaps = json.loads(c.ok("repo", "snapshots", "--json", *c.repo_args()))
        assert len([s for s in snaps if s.get("paths") and os.fspath(data) in s["paths"][0]]) == 1, snaps
        # The controller removed the snapshots and pruned the packs only they held (in the bucket).
        freed = re.findall(r"retention: repository 'main': \d+ snapshot\(s\) of \d+ set\(s\) removed; pack data (\d+) -> (\d+) bytes",
                           c.controller.log.read_text())
        assert freed and all(int(b) < int(a) - 200_000 for a, b in freed), freed
        out = c.ok("repo", "check", "--read-data", *c.repo_args())
        assert "no errors were found" in out
        # The agent never deleted anything outside locks/: the proxy refused none of its requests either.
        # (The protection probe's replace of claims/.probe-overwrite is the one refusal: the role is create-only.)
        assert proxy.count("DELETE") >= 1 and all(st != 403 or p.endswith("/claims/.probe-overwrite") for m, p, st in proxy.requests), \
            [r for r in proxy.requests if r[2] == 403][:5]
    finally:
        c.stop_all()
        member.stop()


def test_a_restores_store_requests_are_counted_under_its_repository(store, proxy, tmp_path):
    """/metrics counts each task's store requests under the repository the task used: a restore's
    as well as a backup's, never under an empty repository name; the restore's task names it too."""
    import urllib.request
    from cluster import backup_set_id, restore_id
    c = s3_cluster(store, proxy, tmp_path)
    try:
        c.add_agent("node-a", {"a.bin": os.urandom(2 << 20), "b.txt": b"as backed up\n"})
        c.enrol("node-a")
        sid = backup_set_id(c.ok("backup", "create", "--node", "node-a", "--wait"))
        backed = sum(int(t["storage_requests"]) for t in c.json("backup", "show", sid)["tasks"])
        assert backed > 0

        def requests():  # the controller renders /metrics every 2 s
            text = urllib.request.urlopen(c.http_url() + "metrics", timeout=10).read().decode()
            return {m.group(1): int(float(m.group(2)))
                    for m in re.finditer(r'^cairn_storage_requests_total\{repository="([^"]*)"\} (\S+)$', text, re.M)}
        c.wait_for("the backup's requests in /metrics", lambda: requests() == {"main": backed}, timeout=15)
        data = c.agent_dirs["node-a"]["data"]
        (data / "b.txt").write_text("changed since\n")
        rc, out, err = c.ctl("restore", sid, "--node", "node-a", "--skip-safety-backup", "--wait", timeout=300)
        assert rc == 0, f"{out}\n{err}\n{c.logs()}"
        (t,) = c.json("restore", "show", restore_id(out))["tasks"]
        assert t.get("repository") == "main" and int(t["storage_requests"]) > 0, t
        assert (data / "b.txt").read_text() == "as backed up\n"
        want = {"main": backed + int(t["storage_requests"])}
        deadline = time.monotonic() + 15
        while (seen := requests()) != want and time.monotonic() < deadline:
            time.sleep(0.5)
        assert seen == want, f"cairn_storage_requests_total by repository: {seen}, not {want}"
    finally:
        c.stop_all()


def test_a_running_backup_shows_the_stores_retries_as_they_happen(store, proxy, tmp_path):
    """Every retry is visible while the task runs, not only in its result
    (issue 34): each progress report carries the store's requests and retries
    so far, and `backup show` shows them while the task is still running."""
    from cluster import backup_set_id, lower_enum, set_state
    c = s3_cluster(store, proxy, tmp_path)
    try:
        files = {f"f{i}.bin": os.urandom(6 << 20) for i in range(4)}
        c.add_agent("node-a", files, env={"CAIRN_STORAGE_RETRY_FOR_TESTS": "6,50,200"})
        c.enrol("node-a")
        # The first two pack uploads answered 503 SlowDown, and every pack
        # upload held 2 s: the backup runs for seconds after its retries.
        proxy.add("slowdown", method="PUT", path=r"/data/", count=2)
        proxy.add("stall", method="PUT", path=r"/data/", seconds=2.0)
        sid = backup_set_id(c.ok("backup", "create", "--node", "node-a"))
        seen = []

        def live():
            (t,) = c.json("backup", "show", sid)["tasks"]
            seen.append((lower_enum(t.get("state", ""), "task_state_"), int(t.get("storage_retries", 0))))
            return t if seen[-1][0] == "running" and seen[-1][1] >= 2 else None
        t = c.wait_for("the store's retries shown while the backup runs", live, timeout=60)
        assert int(t["storage_requests"]) > int(t["storage_retries"]), t
        m = re.search(r"store: \d+ requests, (\d+) retried", c.ok("backup", "show", sid))
        assert m and int(m.group(1)) >= 2, m
        done = c.wait_for("the backup to end", lambda: (lambda s: s if set_state(s) != "running" else None)(c.json("backup", "show", sid)),
                          timeout=120)
        assert set_state(done) == "complete", (done, seen, c.logs())
        (t,) = done["tasks"]
        assert int(t["storage_retries"]) >= 2, t
    finally:
        proxy.clear()
        c.stop_all()


def test_controller_backs_up_a_kafka_rf3_cluster_into_s3_and_restores_it(store, proxy, tmp_path):
    """Three KRaft brokers, RF=3, their agents writing at once into the S3
    repository (claims by conditional create: the store enforces it): the
    bucket grows by about one copy of the data (one broker's log dir stored
    alone into a local repository of its own), not three; every snapshot lists
    its own broker's records. Then the topic is deleted and the cluster
    restored through the controller's steps (stop, data, start, verify on
    every broker, each from its own snapshot) from the bucket: every record
    back (the KRaft metadata came back with the log dirs)."""
    from cluster import Cluster, set_state
    from servers_kafka import KRAFT_VERSION, KafkaCluster, consume_checksums, produce_keyed, require, wait_isr
    from test_kafka import assert_steps_succeeded, backup, delete_topic, metadata, repo_bytes, restore

    require(KRAFT_VERSION)
    kc = KafkaCluster.kraft(tmp_path / "kc", n=3, segment_bytes=4 << 20).start()
    c = None
    try:
        c = s3_cluster(store, proxy, tmp_path, liveness=25)  # three JVMs on two cores starve the daemons now and then
        kc.create_topic("orders", partitions=6, rf=3)
        want = produce_keyed(kc.bootstrap, "orders", 6, 48000, 1024, producer_config={"batch.size": 65536})
        wait_isr(kc.bootstrap, "orders")
        for b in kc.brokers:
            c.add_agent(f"broker-{b.node_id}", components=b.component_toml())
            c.enrol(f"broker-{b.node_id}")
        # One copy: broker 1's log dir alone, into a local repository of its own.
        one = tmp_path / "one-copy"
        c.ok("repo", "init", "--repo", one, "--password-file", c.repo_pass)
        base = repo_bytes(one)
        c.ok("repo", "backup", "--repo", one, "--password-file", c.repo_pass, kc.broker(1).log_dir)
        one_copy = repo_bytes(one) - base
        assert one_copy > 40 << 20, one_copy

        before = sum(v for k, v in bucket_keys(store, c.bucket, "repo/data/").items())
        shown = backup(c)
        assert set_state(shown) == "complete", shown
        assert len(shown["tasks"]) == 3
        growth = sum(v for k, v in bucket_keys(store, c.bucket, "repo/data/").items()) - before
        ratio = growth / one_copy
        print(f"RF=3: one copy {one_copy / 2**20:.1f} MiB, three brokers at once {growth / 2**20:.1f} MiB, ratio {ratio:.2f}")
        assert ratio <= 1.3, f"three replicas grew the bucket by {ratio:.2f}x one copy (limit 1.3x)"
        for t in shown["tasks"]:
            m = metadata(t)
            assert sum(m["partitions"][f"orders-{p}"][1] for p in range(6)) == 48000, m["partitions"]
        out = c.ok("repo", "check", *c.repo_args())
        assert "no errors were found" in out

        delete_topic(kc.bootstrap, "orders")
        r = restore(c, shown["backup_set_id"])
        assert set_state(r) == "complete", json.dumps(r, indent=1)
        assert_steps_succeeded(r, 3)
        wait_isr(kc.bootstrap, "orders")
        assert consume_checksums(kc.bootstrap, "orders") == want
    finally:
        if c:
            c.stop_all()
        kc.stop(kill=True)  # the data dies with the test: no controlled shutdowns to wait for


def test_local_cache_makes_an_unchanged_backup_cheap_and_is_never_trusted_over_the_store(store, proxy, tmp_path):
    r = new_repo(store, tmp_path, endpoint=proxy.endpoint)
    cache = tmp_path / "cache"
    env = {"CAIRN_CACHE_DIR": os.fspath(cache)}
    src = tmp_path / "src"
    make_every_kind(src)
    for i in range(30):
        d = src / f"dir{i}"
        d.mkdir()
        (d / "f.txt").write_text(f"file {i}\n" * 50)
    r.ok("backup", src, env=env)
    n0 = len(proxy.requests)
    r.ok("backup", src, env=env)
    unchanged = proxy.requests[n0:]
    # Config, key, locks, listings, the new snapshot: no index, snapshot or tree is read again. Each
    # cache entry is checked against the store (a HEAD of the parent's pack of trees), and what the
    # backup writes is cached with the entity tag a HEAD gives (its pack of trees, index, snapshot).
    assert len(unchanged) <= 24, "\n".join(map(str, unchanged))
    assert not [q for q in unchanged if q[0] == "GET" and ("/data/" in q[1] or "/index/" in q[1])], unchanged
    n0 = len(proxy.requests)
    r.ok("backup", src, "--no-cache", env=env)
    assert len(proxy.requests) - n0 > len(unchanged) + 10  # without it every tree is fetched

    # A damaged cache: every entry's bytes flipped. Still the right data, read from the store.
    entries = [p for p in cache.rglob("*") if p.is_file()]
    assert any("/trees/" in os.fspath(p) for p in entries) and any("/snapshots/" in os.fspath(p) for p in entries)
    for p in entries:
        b = bytearray(p.read_bytes())
        if b:
            b[len(b) // 2] ^= 0xFF
            p.write_bytes(bytes(b))
    (src / "new.txt").write_text("after the cache was damaged\n")
    r.ok("backup", src, env=env)
    target = tmp_path / "restore"
    r.ok("restore", "latest", "--target", target, env=env)
    assert_same_tree(src, restored_path(target, src))

    # A stale cache: snapshots forgotten by another client are gone for this one too.
    snaps = json.loads(r.ok("snapshots", "--json", env=env)[0])
    other = {"CAIRN_CACHE_DIR": os.fspath(tmp_path / "other-cache")}
    r.ok("forget", "--keep-last", "1", "--prune", env=other)
    after = json.loads(r.ok("snapshots", "--json", env=env)[0])
    assert len(snaps) == 4 and len(after) == 1, (snaps, after)
    assert len(list((next(cache.iterdir()) / "snapshots").iterdir())) == 1
    out, _ = r.ok("check", "--read-data", env=env)
    assert "no errors were found" in out


def versions_of(store, bucket, prefix):
    """{key: [(version id, is a delete marker, is latest)]} under prefix, as the store lists them."""
    out = {}
    for page in store.client().get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        for v in page.get("Versions", []):
            out.setdefault(v["Key"], []).append((v["VersionId"], False, v["IsLatest"]))
        for m in page.get("DeleteMarkers", []):
            out.setdefault(m["Key"], []).append((m["VersionId"], True, m["IsLatest"]))
    return out


def deleted_keys(versions):
    """Keys whose newest version is a delete marker: deleted, their bytes kept as old versions."""
    return {k for k, vs in versions.items() if any(marker and latest for _, marker, latest in vs)}


def test_prune_with_object_lock_reports_retained_versions_and_removes_them_once_retention_ends(store, tmp_path):
    """S3 Object Lock (issue 34). A bucket with it on is versioned: prune's DELETE only
    adds a delete marker and the bytes stay. prune does not fail on them, says how much
    is retained and until when, and a prune after the date removes those versions (and
    their markers): the space comes back. The bucket's default retention is a day at
    least, so the test gives the packs a retention of seconds itself (GOVERNANCE, which
    cairn never bypasses). A versioned bucket without Object Lock keeps its old versions:
    they are the operator's safety net, left to the bucket's lifecycle rules."""
    c = store.client()
    results = {}
    for locked in (True, False):
        bucket = ("cairn-lock-" if locked else "cairn-vers-") + secrets.token_hex(4)
        if locked:
            c.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
        else:
            c.create_bucket(Bucket=bucket)
            c.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        (tmp_path / bucket).mkdir()
        r = Repo(store.url(bucket, "repo"), tmp_path / bucket, store.credentials(tmp_path / f"{bucket}.cred"))
        r.ok("init")
        old, new = tmp_path / bucket / "old", tmp_path / bucket / "new"
        old.mkdir()
        new.mkdir()
        write_random(old / "gone.bin", 6 << 20)
        write_random(new / "kept.bin", 3 << 20)
        old_id = summary_of(r.ok("backup", "--json", old)[0])["snapshot_id"]
        r.ok("backup", new)
        until = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=20)
        if locked:
            for key in bucket_keys(store, bucket, "repo/data/"):
                c.put_object_retention(Bucket=bucket, Key=key,
                                       Retention={"Mode": "GOVERNANCE", "RetainUntilDate": until})
        r.ok("forget", old_id)
        rc, out, err = r.run("prune", "--json")
        assert rc == 0, (rc, out, err)
        first = summary_of(out)
        versions = versions_of(store, bucket, "repo/data/")
        gone = deleted_keys(versions)
        assert gone, f"prune deleted no pack: {versions}\n{out}\n{err}"
        results[locked] = (r, bucket, first, err, gone, until, new)

    # Object Lock on: the deleted packs' bytes are retained, reported with their date.
    r, bucket, first, err, gone, until, new = results[True]
    assert int(first["versions_retained"]["objects"]) == len(gone), (first, gone)
    assert int(first["versions_retained"]["bytes"]) >= 6 << 20
    assert first["versions_retained"]["until"].startswith(until.strftime("%Y-%m-%dT%H:%M")), first
    assert "retained by the store's Object Lock" in err and "a prune after that removes them" in err, err
    assert all(any(not marker for _, marker, _ in versions_of(store, bucket, k)[k]) for k in gone)
    out, _ = r.ok("check", "--read-data")
    assert "no errors were found" in out
    # After the date: removed, markers too; nothing left of the deleted packs.
    wait = (until - datetime.datetime.now(datetime.timezone.utc)).total_seconds() + 2
    if wait > 0:
        threading.Event().wait(wait)
    rc, out, err = r.run("prune", "--json")
    assert rc == 0, (rc, out, err)
    second = summary_of(out)
    # (and the versions of the locks and index files deleted since, under no retention)
    assert int(second["versions_removed"]["objects"]) >= len(gone), second
    assert int(second["versions_retained"]["objects"]) == 0, second
    left = versions_of(store, bucket, "repo/data/")
    assert not (set(left) & gone), {k: left[k] for k in set(left) & gone}
    assert not deleted_keys(left), left
    # The kept snapshot restores. (Every command's lock file leaves a version
    # too: each prune removes those of the commands before it.)
    r.ok("restore", "latest", "--target", tmp_path / "out-lock")
    assert_same_tree(new, restored_path(tmp_path / "out-lock", new))
    out, _ = r.ok("check", "--read-data")
    assert "no errors were found" in out

    # Versioning without Object Lock: the old versions are kept, and none is listed as prune's.
    r, bucket, first, err, gone, _, new = results[False]
    assert int(first["versions_removed"]["objects"]) == 0 and int(first["versions_retained"]["objects"]) == 0, first
    left = versions_of(store, bucket, "repo/data/")
    assert all(any(not marker for _, marker, _ in left[k]) for k in gone), left


def test_a_policy_copies_each_set_offsite_to_s3_retries_a_failed_copy_and_retention_removes_the_copies(store, proxy, tmp_path):
    """A policy with copy_to: each set it takes in the local repository is
    copied by the controller into an S3 repository with its own passphrase
    (every blob re-encrypted); the copy restores byte for byte from the bucket
    alone. A copy the store refuses shows as COPY FAILED (backup show,
    /metrics, the status page) and is retried until it lands. Retention
    removes the copies of the sets it lets go, from the bucket too."""
    import urllib.request
    from cluster import Cluster, set_state
    from test_policies import run_now_and_wait, sets_of

    bucket = "cairn-" + secrets.token_hex(4)
    offsite = Repo(store.url(bucket, "repo", endpoint=proxy.endpoint), tmp_path, store.credentials(tmp_path / "offsite.cred"))
    offsite.ok("init")
    c = Cluster(tmp_path / "cluster")
    c.base.mkdir(parents=True)
    c.init()
    c.start_controller()
    c.controller.env = {"CAIRN_COPY_RETRY_SECONDS_FOR_TESTS": "2", "CAIRN_STORAGE_RETRY_FOR_TESTS": "2,10,50"}
    (c.controller_cfg).write_text(c.controller_cfg.read_text() + f"""
[[repository]]
name = "offsite"
path = "{offsite.url}"
password_file = "{offsite.pw}"
credentials_file = "{offsite.creds}"
""")
    c.declare_repository()
    try:
        files = {f"d{i}/f{j}.bin": os.urandom(20_000 + 1000 * j) for i in range(3) for j in range(10)}
        # The agent declares the copy's repository too (under the controller's name), to restore from it;
        # its 'data' component (the table the text continues) backs up into "main".
        c.add_agent("node-a", files, components=f"""repository = "main"
[[repository]]
name = "offsite"
path = "{offsite.url}"
password_file = "{offsite.pw}"
credentials_file = "{offsite.creds}"
""")
        c.enrol("node-a")
        data = c.agent_dirs["node-a"]["data"]
        rc, out, err = c.ctl("policy", "add", "nightly", "--schedule", "0 0 1 1 *", "--component", "data",
                             "--copy-to", "nowhere")
        assert rc != 0 and "not a repository the controller declares" in err, out + err
        rc, out, err = c.ctl("policy", "add", "nightly", "--schedule", "0 0 1 1 *", "--component", "data",
                             "--copy-to", "main", "--repository", "main")
        assert rc != 0 and "own repository" in err, out + err
        c.ok("policy", "add", "nightly", "--schedule", "0 0 1 1 *", "--component", "data", "--copy-to", "offsite",
             "--keep-last", "1")
        assert "copies to  offsite" in c.ok("policy", "show", "nightly")

        def copy_of(sid):
            shown = c.json("backup", "show", sid)
            return next((x for x in shown.get("copies", []) if x["repository"] == "offsite"), None)

        s1 = run_now_and_wait(c, "nightly")
        assert set_state(s1) == "complete", s1
        sid1 = s1["backup_set_id"]
        cp = c.wait_for("the first set copied", lambda: (lambda x: x if x and x["state"] == "copied" else None)(copy_of(sid1)),
                        timeout=60)
        assert int(cp["snapshots"]) == 1 and int(cp["blobs_new"]) > 0, cp
        assert "copy to 'offsite': copied at" in c.ok("backup", "show", sid1)
        # The copy alone, read with its own passphrase from the bucket: the bytes come back.
        out, _ = offsite.ok("snapshots", "--json")
        snaps = [s for s in json.loads(out) if f"set:{sid1}" in s.get("tags", [])]
        assert len(snaps) == 1, out
        target = tmp_path / "from-offsite"
        offsite.ok("restore", snaps[0]["id"], "--target", target)
        restored = {os.path.relpath(os.path.join(r, f), target / os.fspath(data).lstrip("/")): open(os.path.join(r, f), "rb").read()
                    for r, _, fs in os.walk(target) for f in fs}
        assert restored == files
        out, _ = offsite.ok("check", "--read-data")
        assert "no errors were found" in out
        # The set's signed record, naming the copy, went there too: a catalog
        # rebuilt from the copy alone (the site and its repository lost)
        # takes the set as attested, on the copy's snapshot.
        c.wait_signed(sid1, repository="offsite")
        cfg = c.controller_cfg.read_text()
        lost = tmp_path / "rebuilt"
        cfg = cfg.replace(f'data_dir = "{c.base / "controller"}"', f'data_dir = "{lost}"', 1)
        cfg = re.sub(r'\[\[repository\]\]\nname = "main"\n(?:[a-z_]+ = "[^"]*"\n)+', "", cfg)
        assert 'name = "main"' not in cfg and 'name = "offsite"' in cfg, cfg
        (tmp_path / "dr.toml").write_text(cfg)
        out = c.ok("catalog", "rebuild", "--config", tmp_path / "dr.toml", "--trusted-key", c.signing_pub())
        assert "1 set(s) attested by a signed set record, 0 unattested" in out, out

        # The store refuses the copy's uploads: COPY FAILED, then retried once it accepts them.
        proxy.add("deny", method="PUT")
        (data / "d0" / "new.bin").write_bytes(os.urandom(50_000))
        s2 = run_now_and_wait(c, "nightly")
        sid2 = s2["backup_set_id"]
        failed = c.wait_for("the copy failing", lambda: (lambda x: x if x and x["state"] == "failed" else None)(copy_of(sid2)),
                            timeout=60)
        assert "AccessDenied" in failed["reason"] or "403" in failed["reason"], failed
        assert "COPY FAILED" in c.ok("backup", "show", sid2)
        # keep_last 1 would let the first set go; its copy is the only one offsite, so it stays.
        first = next(s for s in sets_of(c, "nightly") if s["backup_set_id"] == sid1)
        assert not int(first.get("expired_at", 0)), first
        assert "copy to offsite FAILED" in c.ok("backup", "list")
        # The controller renders /metrics and the status page every 2 s.
        c.wait_for("the failed copy in /metrics", lambda: re.search(
            r'^cairn_set_copies\{repository="offsite",state="failed"\} 1$',
            urllib.request.urlopen(c.http_url() + "metrics", timeout=10).read().decode(), re.M), timeout=15)
        page = urllib.request.urlopen(c.http_url(), timeout=10).read().decode()
        assert "Offsite copies" in page and "AccessDenied" in page, page[-3000:]
        proxy.clear()
        # Let through again, slowly: while the retried copy runs, backup show,
        # backup list and the status page say how far it got.
        proxy.add("stall", method="PUT", seconds=2.5)
        copying = c.wait_for("the retried copy shown running",
                             lambda: (lambda x: x if x and x["state"] == "copying" else None)(copy_of(sid2)), timeout=90)
        assert int(copying["snapshots_total"]) == 1 and 0 < int(copying["bytes_total"]), copying
        assert 0 <= int(copying["bytes"]) <= int(copying["bytes_total"]) and int(copying["started_at"]) > 0, copying
        shown = c.ok("backup", "show", sid2)
        assert re.search(r"copy to 'offsite': copying since [-0-9]+ [0-9:]+: [01] of 1 snapshot\(s\), .+ of .+", shown) or \
            "copied at" in shown, shown
        c.wait_for("the running copy on the status page", lambda: f"(copying {sid2}: " in
                   urllib.request.urlopen(c.http_url(), timeout=10).read().decode(), timeout=15)
        proxy.clear()
        c.wait_for("the failed copy retried and landed",
                   lambda: (lambda x: x if x and x["state"] == "copied" else None)(copy_of(sid2)), timeout=90)
        assert set_state(s2) == "complete"

        # keep_last 1: the older sets expire, their copies leave the bucket too.
        c.wait_for("the first set forgotten, copy included",
                   lambda: next((s for s in sets_of(c, "nightly") if s["backup_set_id"] == sid1 and int(s.get("forgotten_at", 0))),
                                None), timeout=90)
        assert copy_of(sid1)["removed"], copy_of(sid1)
        out, _ = offsite.ok("snapshots", "--json")
        tags = [t for s in json.loads(out) for t in s.get("tags", [])]
        assert f"set:{sid1}" not in tags and f"set:{sid2}" in tags, tags
        assert "removed by retention" in c.ok("backup", "show", sid1)

        # The first repository lost (its packs gone): the set restores from its copy.
        expected = {os.path.relpath(os.path.join(r, f), data): open(os.path.join(r, f), "rb").read()
                    for r, _, fs in os.walk(data) for f in fs}
        shutil.rmtree(c.repo / "data")
        (data / "d1" / "f1.bin").write_bytes(b"damaged")
        (data / "d0" / "new.bin").unlink()
        rc, out, err = c.ctl("restore", sid2, "--from-copy", "elsewhere", "--skip-safety-backup")
        assert rc != 0 and "no copy in repository 'elsewhere'" in err, out + err
        rc, out, err = c.ctl("restore", sid2, "--from-copy", "offsite", "--skip-safety-backup", "--wait", timeout=300)
        assert rc == 0, f"{out}\n{err}\n{c.logs()}"
        after = {os.path.relpath(os.path.join(r, f), data): open(os.path.join(r, f), "rb").read()
                 for r, _, fs in os.walk(data) for f in fs}
        assert after == expected
    finally:
        proxy.clear()
        c.stop_all()


def test_an_export_goes_to_the_store_read_back_and_is_imported_from_it(store, proxy, tmp_path):
    """`cairnctl export SET -o <store URL>` makes and verifies the archive in a
    staging directory, uploads it as <URL>/exports/cairn-<cluster>-<time>.tar.gz
    (in parts: it is larger than one PUT) and reads it back before it says
    so; a store that refuses the upload leaves no object and no staging
    behind. `cairnctl import <that URL>` downloads it (in ranges) into a
    controller that lost its catalog and repository, and the restore brings
    the bytes back."""
    import hashlib
    from cluster import Cluster, backup_set_id, set_state
    from test_export_import import approved_again_and_restored

    bucket = "cairn-" + secrets.token_hex(4)
    store.client().create_bucket(Bucket=bucket)
    creds = store.credentials(tmp_path / "exports.cred")
    c = Cluster(tmp_path / "cluster")
    c.base.mkdir(parents=True)
    c.init()
    c.start_controller()
    try:
        c.declare_repository("prod east")
        big = os.urandom(40 << 20)
        c.add_agent("node-a", {"a.txt": b"alpha version 1\n", "big.bin": big})
        c.enrol("node-a")
        data = c.agent_dirs["node-a"]["data"]
        set_id = backup_set_id(c.ok("backup", "create", "--wait"))
        staging = tmp_path / "staging"

        # The store refuses every upload: the export fails, nothing is published, no staging is left.
        proxy.add("deny", method="PUT")
        rc, out, err = c.ctl("export", set_id, "-o", store.url(bucket, "offsite", endpoint=proxy.endpoint), "--config", c.controller_cfg,
                             "--output-credentials", creds, "--tmp-dir", staging)
        assert rc != 0 and "AccessDenied" in err + out, out + err
        assert "cairn-prod-east-" not in out, out
        assert not [k for k in bucket_keys(store, bucket) if "/exports/" in k], bucket_keys(store, bucket)
        assert not list(staging.iterdir()), list(staging.iterdir())
        proxy.clear()

        out = c.ok("export", set_id, "-o", store.url(bucket, "offsite", endpoint=proxy.endpoint), "--config", c.controller_cfg,
                   "--output-credentials", creds, "--tmp-dir", staging)
        m = re.search(r"to (s3:\S+/offsite/exports/(cairn-prod-east-\d{8}T\d{6}Z\.tar\.gz))", out)
        assert m, out
        url, name = m.group(1), m.group(2)
        assert "uploaded and read back from the store: the same sha256" in out, out
        sha = re.search(r"sha256 ([0-9a-f]{64})", out).group(1)
        assert not list(staging.iterdir()), list(staging.iterdir())
        # What the store holds, read with botocore: the archive the export checked.
        keys = bucket_keys(store, bucket)
        assert list(keys) == [f"offsite/exports/{name}"], keys
        body = store.client().get_object(Bucket=bucket, Key=f"offsite/exports/{name}")["Body"].read()
        assert hashlib.sha256(body).hexdigest() == sha and len(body) > (32 << 20), len(body)
        # Uploaded in parts (larger than one PUT takes here), read back in ranges.
        assert any(meth == "POST" and path.endswith(name) for meth, path, _ in proxy.requests), proxy.requests[:20]

        # A URL that names no export, and an export the store does not hold: refused, naming them.
        rc, out, err = c.ctl("import", store.url(bucket, "offsite"), "--config", c.controller_cfg, "--input-credentials", creds)
        assert rc != 0 and "names no export in an object store" in err, err
        rc, out, err = c.ctl("import", store.url(bucket, "offsite/exports/cairn-nothing.tar.gz"), "--config", c.controller_cfg,
                             "--input-credentials", creds)
        assert rc != 0 and "no export 'cairn-nothing.tar.gz'" in err, err

        # The controller's disk and the repository are lost; a new controller, a new repository.
        c.controller.stop()
        shutil.rmtree(c.base / "controller")
        shutil.rmtree(c.repo)
        c.ok("repo", "init", "--repo", c.repo, "--password-file", c.repo_pass)
        c.start_controller()
        out = c.ok("import", url, "--config", c.controller_cfg, "--input-credentials", creds, "--tmp-dir", staging)
        assert f"imported backup set {set_id} (complete, 1 snapshot(s)" in out, out
        assert not list(staging.iterdir()), list(staging.iterdir())
        shown = c.json("backup", "show", set_id)
        assert set_state(shown) == "complete" and f"import of {url}" in shown["requested_by"], shown

        approved_again_and_restored(c, set_id, data, big)
    finally:
        proxy.clear()
        c.stop_all()
