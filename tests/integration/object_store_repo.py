"""`cairnctl repo` against one object-store URL (S3 or Azure), with a password
file and a storage credentials file, and nothing of the caller's environment
that names other credentials (test_object_storage.py, test_object_storage_azure.py,
test_store_protection.py); the stores those tests share, as fixtures a test
module imports: `s3` (SeaweedFS), `azurite`, `s3_proxy` (s3_proxy.py in
front of `s3`)."""
import json
import os
import pathlib
import secrets
import subprocess

import pytest

from conftest import BIN, assert_same_tree, restored_path, summary_of, write_random, write_secret
from s3_proxy import S3Proxy
from servers_azurite import Azurite
from servers_s3 import SeaweedFS

PASSWORD = "correct horse battery staple"
TWO_WORD = ("key",)


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    s = SeaweedFS(tmp_path_factory.mktemp("seaweedfs")).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def azurite(tmp_path_factory):
    s = Azurite(tmp_path_factory.mktemp("azurite")).start()
    yield s
    s.stop()


@pytest.fixture
def s3_proxy(s3):
    p = S3Proxy(s3.port)
    yield p
    p.close()


def bucket_keys(s3, bucket, prefix=""):
    """Every object under prefix in the bucket: key -> size."""
    c = s3.client()
    keys = {}
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            keys[o["Key"]] = o["Size"]
    return keys


class StoreRepo:
    def __init__(self, url, tmp, creds, clear=(), env=None):
        """clear: environment variables dropped for every run; env: ones set for every run."""
        self.url, self.tmp, self.creds = url, pathlib.Path(tmp), creds
        self.clear, self.env = tuple(clear), dict(env or {})
        self.pw = write_secret(self.tmp / f"pw-{secrets.token_hex(3)}", PASSWORD)

    def command(self, *args, creds=None, env=None):
        """The argv and environment of `cairnctl repo ARGS` against this store."""
        args = [os.fspath(a) for a in args]
        n = 2 if args[0] in TWO_WORD else 1
        cmd = [os.fspath(BIN), "repo"] + args[:n] + ["--repo", self.url, "--password-file", os.fspath(self.pw)]
        c = self.creds if creds is None else creds
        if c:
            cmd += ["--storage-credentials", os.fspath(c)]
        e = dict(os.environ, HOME=os.fspath(self.tmp))  # no ~/.aws of the machine's
        for k in self.clear:
            e.pop(k, None)
        e.update(self.env)
        e.update(env or {})
        return cmd + args[n:], e

    def run(self, *args, creds=None, env=None, timeout=300):
        cmd, e = self.command(*args, creds=creds, env=env)
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout, env=e)
        return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")

    def popen(self, *args, creds=None, env=None, **kw):
        cmd, e = self.command(*args, creds=creds, env=env)
        return subprocess.Popen(cmd, env=e, **kw)

    def ok(self, *args, **kw):
        rc, out, err = self.run(*args, **kw)
        assert rc == 0, f"cairnctl repo {args[0]} exited {rc}\nstdout: {out[-3000:]}\nstderr: {err[-3000:]}"
        return out, err


# ---- fault cases every store's tests run through s3_proxy.py -----------------


S3_ENV_CLEAR = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")


class S3Repo(StoreRepo):
    """cairnctl repo against one S3 URL: no AWS_* of the caller's, no instance
    metadata service; env: more variables for every run."""

    def __init__(self, url, tmp, creds, env=None):
        super().__init__(url, tmp, creds, clear=S3_ENV_CLEAR, env={"AWS_EC2_METADATA_DISABLED": "true", **(env or {})})


def no_credentials_or_open_ones_are_refused(r, bad, store):
    """No credentials at all: said so, with where they are looked for; a
    credentials file (bad) others can read: refused before it is used."""
    rc, _, err = r.run("snapshots", creds="")
    assert rc == 14 and f"no {store} credentials found" in err, err
    os.chmod(bad, 0o644)
    rc, _, err = r.run("snapshots", creds=bad)
    assert rc != 0 and "readable by group or others" in err, err


def faults_mid_transfer_are_retried(r, proxy, tmp_path, slow_answer):
    """Slow-downs, a 500, requests and responses cut mid-body and a stalled
    request on uploads, reads and listings: the backup and the restore retry
    and succeed (the restore byte-equal), and the repository then checks clean
    with every byte read. slow_answer: the store's word for 503 in messages."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        write_random(src / f"f{i}.bin", 3 << 20)
    env = {"CAIRN_STORAGE_RETRY_FOR_TESTS": "8,20,400", "CAIRN_STORAGE_TIMEOUTS_FOR_TESTS": "3,2"}
    proxy.add("slowdown", method="PUT", count=4)
    proxy.add("error500", method="PUT", path=r"/data/", count=1)
    proxy.add("cut_request", method="PUT", path=r"/data/", count=2)
    proxy.add("cut_response", method="GET", path=r"/index/", count=1)
    proxy.add("stall", method="HEAD", count=1, seconds=5)
    out, err = r.ok("backup", "--json", src, env=env)
    assert "retrying" in err, err
    summary = summary_of(out)
    assert summary["storage"]["retries"] >= 8, summary
    proxy.clear()
    proxy.add("cut_response", method="GET", path=r"/data/", count=2)
    proxy.add("slowdown", method="GET", count=3)
    out, err = r.ok("restore", "latest", "--target", tmp_path / "out", env=env)
    assert "retrying" in err, err
    assert_same_tree(src, restored_path(tmp_path / "out", src))
    proxy.clear()
    out, _ = r.ok("check", "--read-data")
    assert "no errors were found" in out


def a_store_that_stays_down_fails_the_backup_cleanly(r, proxy, tmp_path, slow_answer):
    """Every upload of data and snapshots answered 503: the backup gives up
    after its tries naming the store's answer, reports nothing stored that is
    not, and the repository still checks clean."""
    src = tmp_path / "src"
    src.mkdir()
    write_random(src / "a.bin", 2 << 20)
    r.ok("backup", src)
    write_random(src / "b.bin", 2 << 20)
    proxy.add("slowdown", method="PUT", path=r"/(data|snapshots)/")
    rc, out, err = r.run("backup", src, env={"CAIRN_STORAGE_RETRY_FOR_TESTS": "3,10,50"})
    assert rc == 15, (rc, out, err)
    assert "gave up after 3 tries" in err and slow_answer in err, err
    proxy.clear()
    out, _ = r.ok("snapshots", "--json")
    assert len(json.loads(out)) == 1  # nothing reported stored that is not
    out, _ = r.ok("check", "--read-data")
    assert "no errors were found" in out
