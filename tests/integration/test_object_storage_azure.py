"""Repositories in Azure Blob Storage, against a real Azurite on loopback
(servers_azurite.py): the backend conformance suite, a cairnctl round trip,
wrong keys, a read-only SAS, and every credential source. No mocks.
"""
import os
import secrets
import subprocess

import pytest

from conftest import BIN, assert_same_tree, restored_path
from object_store_repo import (StoreRepo, a_store_that_stays_down_fails_the_backup_cleanly, azurite,  # noqa: F401 (fixture)
                               faults_mid_transfer_are_retried, no_credentials_or_open_ones_are_refused)
from s3_proxy import S3Proxy
from servers_azurite import DEV_ACCOUNT, write_credentials
from test_roundtrip import make_every_kind

BUILD = BIN.parent.parent
AZURE_ENV = ("AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_CONNECTION_STRING")


@pytest.fixture(scope="module")
def store(azurite):
    return azurite


class Repo(StoreRepo):
    """cairnctl repo against one Azure URL: no AZURE_STORAGE_* of the caller's, few retries."""

    def __init__(self, url, tmp, creds):
        super().__init__(url, tmp, creds, clear=AZURE_ENV, env={"CAIRN_STORAGE_RETRY_FOR_TESTS": "2,10,50"})


def new_repo(store, tmp_path, account=DEV_ACCOUNT, init=True):
    container = "cairn-" + secrets.token_hex(4)
    creds = store.credentials(tmp_path / f"{account}.cred", account=account)
    r = Repo(store.url(container, "repo", account=account), tmp_path, creds)
    r.container, r.account = container, account
    if init:
        r.ok("init")
    return r


@pytest.mark.parametrize("account", [DEV_ACCOUNT, "cairntest"])
def test_conformance_suite_against_azurite(store, tmp_path, account):
    """The backend conformance suite (tests/unit/common/storage) against Azurite, with listings cut into
    pages of 300 so that markers are followed. Azurite enforces If-None-Match: *, so exclusive create is
    expected to hold."""
    exe = BUILD / "tests" / "unit" / "common" / "storage" / "unit_storage"
    env = dict(os.environ, CAIRN_CONFORMANCE_URLS=store.url("conformance", account=account),
               CAIRN_CONFORMANCE_CREDENTIALS=os.fspath(store.credentials(tmp_path / "c.cred", account=account)),
               CAIRN_CONFORMANCE_EXPECT_EXCLUSIVE="1", CAIRN_AZURE_MAX_RESULTS_FOR_TESTS="300")
    for k in AZURE_ENV:
        env.pop(k, None)
    p = subprocess.run([os.fspath(exe), "conformance:*"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=600)
    out = p.stdout.decode(errors="replace")
    assert p.returncode == 0, out[-5000:]
    assert "All tests passed" in out


def test_round_trip_every_file_kind(store, tmp_path):
    r = new_repo(store, tmp_path, account="cairntest")
    src = tmp_path / "src"
    make_every_kind(src)
    r.ok("backup", src)
    target = tmp_path / "restore"
    target.mkdir()
    r.ok("restore", "latest", "--target", target)
    assert_same_tree(src, restored_path(target, src))
    out, _ = r.ok("check", "--read-data")
    assert "no errors were found" in out
    # The repository's own objects under its prefix, laid out as on a disk.
    kinds = {k.split("/")[1] for k in store.blobs(r.container, "repo/", account="cairntest")}
    assert kinds <= {"config", "keys", "data", "index", "snapshots", "locks", "claims"}, kinds
    assert {"config", "keys", "data", "index", "snapshots"} <= kinds


def test_wrong_account_key_is_refused_clearly_and_writes_nothing(store, tmp_path):
    r = new_repo(store, tmp_path)
    before = store.blobs(r.container)
    import base64
    key = base64.b64encode(secrets.token_bytes(64)).decode()
    bad = write_credentials(tmp_path / "bad.cred", account_key=key)
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("data\n")
    for args in (("backup", src), ("snapshots",)):
        rc, out, err = r.run(*args, creds=bad)
        assert rc == 14, (rc, err)
        assert r.url.split("/repo")[0] in err and "credentials file" in err and "bad.cred" in err, err
        assert key not in err + out and key[:16] not in err + out
    assert store.blobs(r.container) == before
    no_credentials_or_open_ones_are_refused(r, bad, "Azure")


def test_read_and_list_sas_restores_but_cannot_back_up(store, tmp_path):
    r = new_repo(store, tmp_path, account="cairntest")
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("first\n")
    (src / "b.bin").write_bytes(os.urandom(300_000))
    r.ok("backup", src)
    sas = store.account_sas("cairntest", "rl")
    ro = write_credentials(tmp_path / "ro.cred", sas_token=sas)
    before = store.blobs(r.container, account="cairntest")
    out, _ = r.ok("snapshots", creds=ro)
    target = tmp_path / "out"
    target.mkdir()
    r.ok("restore", "latest", "--target", target, creds=ro)
    assert_same_tree(src, restored_path(target, src))
    (src / "c.txt").write_text("second\n")
    rc, out, err = r.run("backup", src, creds=ro)
    assert rc == 14, (rc, out, err)
    assert "ro.cred" in err and r.url.split("/repo")[0] in err, err
    assert sas.split("sig=")[1] not in err + out and "sig=" not in err + out
    assert store.blobs(r.container, account="cairntest") == before


def test_connection_string_and_environment_key(store, tmp_path):
    r = new_repo(store, tmp_path, account="cairntest")
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x\n")
    cs = write_credentials(tmp_path / "cs.cred", connection_string=store.connection_string("cairntest"))
    r.ok("backup", src, creds=cs)
    out, _ = r.ok("snapshots", creds="", env={"AZURE_STORAGE_KEY": store.keys["cairntest"]})
    out2, _ = r.ok("snapshots", creds="", env={"AZURE_STORAGE_CONNECTION_STRING": store.connection_string("cairntest")})
    assert out == out2
    # A connection string and azure://ACCOUNT/...: its BlobEndpoint says where the account is.
    r2 = Repo(f"azure://cairntest/{r.container}/repo", tmp_path, cs)
    r2.pw = r.pw
    out3, _ = r2.ok("snapshots")
    assert out3.replace(r2.url, r.url) == out
    # A SAS from the environment.
    r.ok("snapshots", creds="", env={"AZURE_STORAGE_SAS_TOKEN": store.account_sas("cairntest", "rl")})
    # The wrong account's key from the environment is refused.
    rc, _, err = r.run("snapshots", creds="", env={"AZURE_STORAGE_KEY": store.keys[DEV_ACCOUNT]})
    assert rc == 14 and "AZURE_STORAGE_KEY" in err, err


def test_agent_sas_without_delete_backs_up_and_leaves_its_locks_to_the_controller(store, tmp_path):
    """An agent's SAS: read, create, list; no write (no replace) and no delete (a SAS cannot limit delete to locks/).
    Backups succeed; each leaves its lock with a warning; a command with the account key removes them
    as stale (their processes are gone)."""
    r = new_repo(store, tmp_path, account="cairntest")
    agent = write_credentials(tmp_path / "agent.cred", sas_token=store.account_sas("cairntest", "rcl"))
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("one\n")
    _, err = r.ok("backup", src, creds=agent)
    assert "could not remove the repository lock" in err and "agent.cred" in err, err
    (src / "b").write_text("two\n")
    r.ok("backup", src, creds=agent)
    locks = [k for k in store.blobs(r.container, "repo/locks/", account="cairntest") if "/locks/." not in k]
    assert len(locks) == 2, locks
    rc, _, err = r.run("forget", "latest", creds=agent)
    assert rc == 14, (rc, err)
    out, _ = r.ok("check")  # the account key: the stale locks go
    assert "no errors were found" in out
    assert [k for k in store.blobs(r.container, "repo/locks/", account="cairntest") if "/locks/." not in k] == []


def test_agent_sas_without_delete_fails_prune_and_forget_even_with_nothing_to_delete(store, tmp_path):
    """docs/configuration.md: with agent credentials (a SAS without d), prune and forget fail with
    exit code 14 and say that maintenance runs where the controller's credentials are, also when
    there is nothing to delete, and before they leave a lock; the account key prunes."""
    r = new_repo(store, tmp_path, account="cairntest")
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(os.urandom(200_000))
    r.ok("backup", src)
    agent = write_credentials(tmp_path / "agent.cred", sas_token=store.account_sas("cairntest", "racwl"))
    before = store.blobs(r.container, account="cairntest")
    for args in (("prune",), ("forget", "--keep-last", "5"), ("forget", "--keep-last", "5", "--prune")):
        rc, out, err = r.run(*args, creds=agent)
        assert rc == 14, (args, rc, out, err)
        assert "cannot prune or forget" in err and "controller's credentials" in err and "agent.cred" in err, (args, err)
        assert store.blobs(r.container, account="cairntest") == before, args  # not even a lock
    out, _ = r.ok("prune")
    assert "nothing to prune" in out


def test_a_sas_in_the_repository_url_is_refused_and_never_printed(store, tmp_path):
    """A SAS token (or an account key as userinfo) written into the URL is refused, and the refusal shows
    the URL with the secret as '***'."""
    sas = store.account_sas("cairntest", "racwdl")
    sig = sas.split("sig=")[1].split("&")[0]
    base = store.url("cairn-" + secrets.token_hex(4), "repo", account="cairntest")
    host = base.split("://", 1)[1]
    key = store.keys["cairntest"]
    for url in (f"{base}?{sas}", base.replace(host, f"cairntest:{key}@{host}"), f"azure://cairntest/c0ntainer/repo?{sas}"):
        r = Repo(url, tmp_path, None)
        rc, out, err = r.run("snapshots")
        assert rc == 1, (url, rc, out, err)
        assert "***" in err and ("carries credentials" in err or "has a query" in err), err
        assert sig not in out + err and key not in out + err, err


def test_missing_container_is_no_repository(store, tmp_path):
    r = new_repo(store, tmp_path, init=False)
    rc, _, err = r.run("snapshots")
    assert rc == 10, (rc, err)  # kExitNoRepo
    assert f"container '{r.container}' does not exist" in err and "cairnctl repo init" in err, err


@pytest.fixture
def proxy(store):
    """The fault proxy (s3_proxy.py: plain HTTP, rules by method and path) in front of Azurite."""
    p = S3Proxy(store.port)
    yield p
    p.close()


def proxied_repo(store, proxy, tmp_path):
    container = "cairn-" + secrets.token_hex(4)
    creds = store.credentials(tmp_path / "proxied.cred")
    r = Repo(f"azure:{proxy.endpoint}/{DEV_ACCOUNT}/{container}/repo", tmp_path, creds)
    r.ok("init")
    return r


def test_faults_mid_transfer_are_retried_and_the_repository_checks_clean(store, proxy, tmp_path):
    """Azure's side of the S3 fault test, through the same proxy in front of Azurite."""
    faults_mid_transfer_are_retried(proxied_repo(store, proxy, tmp_path), proxy, tmp_path, "503")


def test_a_store_that_stays_down_fails_the_backup_cleanly(store, proxy, tmp_path):
    a_store_that_stays_down_fails_the_backup_cleanly(proxied_repo(store, proxy, tmp_path), proxy, tmp_path, "503")
