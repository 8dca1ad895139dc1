"""The repository tells the truth and survives a stolen agent credential
(docs/configuration.md § Protecting the repository from its writers, § The
local cache), against real stores: SeaweedFS (S3, authentication on) and
Azurite. Where SeaweedFS has no policy language for it, the agent's
documented AWS policy (no delete outside locks/, no write without
If-None-Match: *) is played by s3_proxy.py in front of the store: a
substitute for the store's policy engine, named as such there.
"""
import json
import os
import re
import secrets
import urllib.error
import urllib.request

import pytest

from conftest import assert_same_tree, restored_path, write_random
from object_store_repo import S3Repo as _S3Repo, StoreRepo, azurite, bucket_keys as keys_under, s3, s3_proxy  # noqa: F401 (fixtures)
from servers_azurite import write_credentials as azure_credentials


class S3Repo(_S3Repo):
    def __init__(self, url, tmp, creds):
        super().__init__(url, tmp, creds, env={"CAIRN_STORAGE_RETRY_FOR_TESTS": "2,10,50"})


@pytest.fixture
def proxy(s3_proxy):
    return s3_proxy


def s3_repo(s3, tmp_path, versioned=False, endpoint=None, role_creds=None):
    bucket = "cairn-" + secrets.token_hex(4)
    admin = s3.credentials(tmp_path / f"admin-{bucket}.cred")
    if versioned:
        c = s3.client()
        c.create_bucket(Bucket=bucket)
        c.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    r = S3Repo(s3.url(bucket, "repo"), tmp_path, admin)
    r.bucket = bucket
    out, _ = r.ok("init", "--json")
    r.init = json.loads(out.strip().splitlines()[-1])
    if endpoint:
        a = S3Repo(s3.url(bucket, "repo", endpoint=endpoint), tmp_path, role_creds or admin)
        a.pw, a.bucket, a.init = r.pw, bucket, r.init
        return r, a
    return r


def source(tmp_path, big=False):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        (src / f"f{i}.txt").write_text(f"file {i}\n" * (1000 + i))
    write_random(src / "blob.bin", 3 << 20)
    if big:
        write_random(src / "big.bin", 40 << 20)  # one pack above 32 MiB: a multipart upload / a block list
    return src


def restore_into(r, tmp_path, name, **kw):
    target = tmp_path / name
    target.mkdir()
    return r.run("restore", "latest", "--target", target, **kw), target


# ---- 1. no check believes the cache over the store -------------------------------

@pytest.mark.parametrize("size", ["same", "100"])
def test_garbage_written_behind_the_cache_fails_check_and_restore_naming_the_object(s3, tmp_path, size):
    r = s3_repo(s3, tmp_path)
    src = source(tmp_path)
    r.ok("backup", src)
    # The host that made the backup reads it: its cache now holds the snapshot, the index and the trees.
    r.ok("snapshots")
    (rc, _, err), target = restore_into(r, tmp_path, "first")
    assert rc == 0, err
    assert_same_tree(src, restored_path(target, src))
    c = s3.client()
    keys = keys_under(s3, r.bucket, "repo/")
    damaged = [k for k in keys if k.startswith(("repo/snapshots/", "repo/index/"))]
    assert len(damaged) >= 2, keys
    for k in damaged:
        n = keys[k] if size == "same" else 100
        c.put_object(Bucket=r.bucket, Key=k, Body=os.urandom(n))
    for args in (["check"], ["check", "--read-data"]):
        rc, out, err = r.run(*args)
        assert rc == 1, (args, rc, out, err)
        assert "no errors were found" not in out
        for k in damaged:
            assert k.split("/", 1)[1] in out + err, (k, out, err)
    rc, out, err = restore_into(r, tmp_path, "second")[0]
    assert rc != 0, (out, err)
    assert re.search(r"(snapshots|index)/[0-9a-f]{64}", out + err), (out, err)
    rc, out, err = r.run("snapshots")
    assert rc != 0 or out.strip() == "" or "damaged" in err or "does not match" in err, (rc, out, err)


# ---- 2. the documented agent role can neither replace nor delete -------------------

def s3_attack(s3, proxy, bucket):
    """Every replace and delete a holder of the agent's credential can send, through the agent's role."""
    import botocore.exceptions
    import botocore.session
    from botocore.config import Config
    ak, sk = s3.keys["admin"]  # the keys are SeaweedFS's: the role is the proxy's policy in front of it
    c = botocore.session.get_session().create_client(
        "s3", endpoint_url=proxy.endpoint, aws_access_key_id=ak, aws_secret_access_key=sk, region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
    refused, accepted = [], []
    keys = keys_under(s3, bucket, "repo/")
    targets = ["repo/config"] + [next(k for k in keys if k.startswith(f"repo/{d}/")) for d in ("keys", "snapshots", "index", "data")]
    for k in targets:
        for what, call in (("replace", lambda k=k: c.put_object(Bucket=bucket, Key=k, Body=b"garbage")),
                           ("delete", lambda k=k: c.delete_object(Bucket=bucket, Key=k))):
            try:
                call()
                accepted.append((what, k))
            except botocore.exceptions.ClientError as e:
                refused.append((what, k, e.response["Error"]["Code"]))
    try:
        c.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in targets]})
        accepted.append(("delete_objects", ""))
    except botocore.exceptions.ClientError as e:
        refused.append(("delete_objects", "", e.response["Error"]["Code"]))
    return refused, accepted


def test_the_documented_agent_role_backs_up_and_cannot_replace_or_delete_anything(s3, proxy, tmp_path):
    proxy.agent_role()
    r, agent = s3_repo(s3, tmp_path, endpoint=proxy.endpoint)
    src = source(tmp_path, big=True)
    agent.ok("backup", src)
    (src / "f0.txt").write_text("changed\n")
    agent.ok("backup", src)
    # Every write the agent made was a create: the role refused none but the protection probe's replace.
    refused = [(m, p) for m, p, st in proxy.requests if st == 403 and not p.endswith("/claims/.probe-overwrite")]
    assert refused == [], refused
    before = keys_under(s3, r.bucket, "repo/")
    refused, accepted = s3_attack(s3, proxy, r.bucket)
    assert accepted == [], accepted
    assert len(refused) == 11 and all(code == "AccessDenied" for *_, code in refused), refused
    assert keys_under(s3, r.bucket, "repo/") == before
    out, _ = r.ok("check", "--read-data")
    assert "no errors were found" in out
    (rc, _, err), target = restore_into(agent, tmp_path, "out")
    assert rc == 0, err
    assert_same_tree(src, restored_path(target, src))


# ---- 3. a versioning store: nothing is lost, and check puts it back ------------------

def test_on_a_versioned_bucket_every_overwrite_and_delete_is_named_and_recovered(s3, tmp_path):
    r = s3_repo(s3, tmp_path, versioned=True)
    assert r.init["store_protection"]["state"] == "versioning", r.init
    src = source(tmp_path)
    r.ok("backup", src)
    (src / "late.txt").write_text("second snapshot\n")
    r.ok("backup", src)
    c = s3.client()  # a credential that can replace and delete (SeaweedFS's Write): the stolen one
    keys = keys_under(s3, r.bucket, "repo/")
    snaps = sorted(k for k in keys if k.startswith("repo/snapshots/"))
    packs = sorted(k for k in keys if k.startswith("repo/data/"))
    victims = {"repo/config": keys["repo/config"],
               next(k for k in keys if k.startswith("repo/keys/")): 100,
               snaps[0]: 100,
               next(k for k in keys if k.startswith("repo/index/")): None,
               packs[0]: None}
    for k, n in victims.items():
        c.put_object(Bucket=r.bucket, Key=k, Body=os.urandom(n or keys[k]))
    c.delete_object(Bucket=r.bucket, Key=packs[-1])
    # The repository still opens (config and key slot from their earlier versions, with a warning).
    rc, out, err = r.run("check", "--read-data", "--json")  # a pack of the same size: only its bytes tell
    assert rc == 1, (rc, out, err)
    problems = [json.loads(l) for l in out.splitlines() if '"problem"' in l]
    named = {p["object"]: p for p in problems}
    for k in victims:
        obj = k.split("/", 1)[1]
        assert obj in named, (obj, sorted(named))
        assert named[obj].get("recoverable_version"), named[obj]
    # The deleted pack is named, unless the damaged index file was the only one that
    # named it: then the round of --recover that puts that index back finds it.
    deleted = packs[-1].split("/", 1)[1]
    assert deleted in named or len([k for k in keys if k.startswith("repo/index/")]) > 1, sorted(named)
    assert deleted not in named or named[deleted].get("recoverable_version"), named[deleted]
    assert "earlier version" in err, err
    rc, out, err = r.run("check", "--read-data", "--recover")
    assert rc == 0, (rc, out, err)
    assert out.count("recovered '") + err.count("recovered '") == len(victims) + 1, (out, err)
    assert f"recovered '{deleted}'" in out + err, (out, err)
    assert "no errors were found" in out
    rc, out, err = r.run("check", "--read-data", "--no-cache")
    assert rc == 0 and "no errors were found" in out, (out, err)
    assert "earlier version" not in err, err
    (rc, _, err), target = restore_into(r, tmp_path, "out")
    assert rc == 0, err
    assert_same_tree(src, restored_path(target, src))


def test_recover_goes_a_second_round_for_a_pack_only_damaged_index_files_named(s3, tmp_path):
    """Every index file overwritten and a pack deleted: the first check
    cannot name the pack (no readable index knows it); --recover puts the
    index files back, checks again, finds the pack missing, and puts it back
    in a second round. The backups restore."""
    r = s3_repo(s3, tmp_path, versioned=True)
    src = source(tmp_path)
    r.ok("backup", src)
    (src / "late.txt").write_text("second snapshot\n" * 1000)
    r.ok("backup", src)
    c = s3.client()
    keys = keys_under(s3, r.bucket, "repo/")
    indexes = sorted(k for k in keys if k.startswith("repo/index/"))
    packs = sorted(k for k in keys if k.startswith("repo/data/"))
    assert indexes and packs, sorted(keys)
    for k in indexes:
        c.put_object(Bucket=r.bucket, Key=k, Body=os.urandom(keys[k]))
    c.delete_object(Bucket=r.bucket, Key=packs[0])
    deleted = packs[0].split("/", 1)[1]
    rc, out, err = r.run("check", "--json")
    assert rc == 1, (rc, out, err)
    named = {json.loads(l)["object"] for l in out.splitlines() if '"problem"' in l}
    assert {k.split("/", 1)[1] for k in indexes} <= named, sorted(named)
    rc, out, err = r.run("check", "--read-data", "--recover")
    assert rc == 0, (rc, out, err)
    text = out + err
    assert text.count("checking again after") == 2, text
    for k in indexes:
        assert f"recovered '{k.split('/', 1)[1]}'" in text, text
    assert f"recovered '{deleted}'" in text, text
    assert "no errors were found" in out
    rc, out, err = r.run("check", "--read-data", "--no-cache")
    assert rc == 0 and "no errors were found" in out, (out, err)
    (rc, _, err), target = restore_into(r, tmp_path, "out")
    assert rc == 0, err
    assert_same_tree(src, restored_path(target, src))


def backup_refused_as_unprotected(c, node):
    """A new agent's backup, refused because the store does not protect its objects from their writers."""
    from cluster import backup_set_id
    c.add_agent(node, {"a.txt": b"one\n" * 100})
    c.enrol(node)
    rc, out, err = c.ctl("backup", "create", "--component", "data", "--node", node, "--wait")
    assert rc != 0, (out, err)
    shown = c.ok("backup", "show", backup_set_id(out))
    assert "not protected from its writers" in shown and "accept_unprotected_store" in shown, shown


def test_an_unversioned_store_with_overwrite_rights_is_refused_for_agents_unless_accepted(s3, proxy, tmp_path):
    from cluster import Cluster
    bucket = "cairn-" + secrets.token_hex(4)
    c = Cluster(tmp_path / "cluster")
    c.base.mkdir(parents=True)
    c.repo = s3.url(bucket, "repo")
    c.repo_credentials = s3.credentials(tmp_path / "controller.cred")
    c.agent_repo = s3.url(bucket, "repo", endpoint=proxy.endpoint)
    c.agent_repo_credentials = s3.credentials(tmp_path / "agent.cred")
    proxy.agent_role(create_only=False)  # SeaweedFS's Write action: replaces allowed, no versioning
    c.init()
    c.start_controller()
    c.declare_repository()
    try:
        backup_refused_as_unprotected(c, "node-a")
        assert not [k for k in keys_under(s3, bucket, "repo/snapshots/")]
        # An agent whose operator accepted the risk: its backups go on, each one warned in its log.
        c.agent_repo_extra = "accept_unprotected_store = true\n"
        c.add_agent("node-b", {"b.txt": b"two\n" * 100})
        c.enrol("node-b")
        rc, out, err = c.ctl("backup", "create", "--component", "data", "--node", "node-b", "--wait")
        assert rc == 0, f"{out}\n{err}\n{c.logs()}"
        assert "backing up anyway (accept_unprotected_store = true)" in c.logs(), c.logs()[-3000:]
        assert keys_under(s3, bucket, "repo/snapshots/")
    finally:
        c.stop_all()


# ---- Azure: the agent's SAS creates and never replaces --------------------------------

class AzureRepo(StoreRepo):
    def __init__(self, url, tmp, creds):
        super().__init__(url, tmp, creds, clear=("AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_CONNECTION_STRING"),
                         env={"CAIRN_STORAGE_RETRY_FOR_TESTS": "2,10,50"})


def azure_request(az, method, container, key, sas, body=None):
    url = f"{az.endpoint}/cairntest/{container}/{key}?{sas}"
    req = urllib.request.Request(url, data=body, method=method, headers={"x-ms-blob-type": "BlockBlob", "x-ms-version": "2021-08-06"})
    try:
        return urllib.request.urlopen(req, timeout=30).status
    except urllib.error.HTTPError as e:
        return e.code


def test_azure_agent_sas_rcl_backs_up_and_the_store_refuses_every_replace_and_delete(azurite, tmp_path):
    container = "cairn-" + secrets.token_hex(4)
    admin = AzureRepo(azurite.url(container, "repo", account="cairntest"), tmp_path, azurite.credentials(tmp_path / "key.cred", account="cairntest"))
    out, _ = admin.ok("init", "--json")
    init = json.loads(out.strip().splitlines()[-1])
    assert init["store_protection"]["state"] == "none", init  # the account key replaces, Azurite keeps no versions
    sas = azurite.account_sas("cairntest", "rcl")
    agent = AzureRepo(admin.url, tmp_path, azure_credentials(tmp_path / "agent.cred", sas_token=sas))
    agent.pw = admin.pw
    src = source(tmp_path, big=True)
    agent.ok("backup", src)
    (src / "f1.txt").write_text("changed\n")
    agent.ok("backup", src)
    blobs = azurite.blobs(container, "repo/", account="cairntest")
    targets = ["repo/config"] + [next(k for k in blobs if k.startswith(f"repo/{d}/")) for d in ("keys", "snapshots", "index", "data")]
    for k in targets:
        assert azure_request(azurite, "PUT", container, k, sas, body=b"garbage") == 403, k
        assert azure_request(azurite, "DELETE", container, k, sas) == 403, k
    assert azurite.blobs(container, "repo/", account="cairntest") == blobs
    out, _ = admin.ok("check", "--read-data")
    assert "no errors were found" in out
    (rc, _, err), target = restore_into(agent, tmp_path, "out")
    assert rc == 0, err
    assert_same_tree(src, restored_path(target, src))
    # The same agent with the SAS the docs used to give (w: replace) would be refused by agents:
    wide = AzureRepo(azurite.url("cairn-" + secrets.token_hex(4), "repo", account="cairntest"), tmp_path,
                     azure_credentials(tmp_path / "wide.cred", sas_token=azurite.account_sas("cairntest", "racwdl")))
    out, _ = wide.ok("init", "--json")
    assert json.loads(out.strip().splitlines()[-1])["store_protection"]["state"] == "none"
    narrow = AzureRepo(azurite.url("cairn-" + secrets.token_hex(4), "repo", account="cairntest"), tmp_path,
                       azure_credentials(tmp_path / "narrow.cred", sas_token=azurite.account_sas("cairntest", "rcl")))
    rc, out, err = narrow.run("init", "--json")
    if rc == 0:  # an account SAS with c may create the container too
        assert json.loads(out.strip().splitlines()[-1])["store_protection"]["state"] == "create_only", out


def test_azure_garbage_behind_the_cache_fails_check_and_restore(azurite, tmp_path):
    container = "cairn-" + secrets.token_hex(4)
    r = AzureRepo(azurite.url(container, "repo", account="cairntest"), tmp_path, azurite.credentials(tmp_path / "key.cred", account="cairntest"))
    r.ok("init")
    src = source(tmp_path)
    r.ok("backup", src)
    r.ok("snapshots")
    (rc, _, err), _ = restore_into(r, tmp_path, "first")
    assert rc == 0, err
    sas = azurite.account_sas("cairntest", "racwdl")
    blobs = azurite.blobs(container, "repo/", account="cairntest")
    damaged = [k for k in blobs if k.startswith(("repo/snapshots/", "repo/index/"))]
    for k in damaged:
        assert azure_request(azurite, "PUT", container, k, sas, body=os.urandom(blobs[k])) == 201
    rc, out, err = r.run("check")
    assert rc == 1 and all(k.split("/", 1)[1] in out + err for k in damaged), (out, err)
    rc, out, err = restore_into(r, tmp_path, "second")[0]
    assert rc != 0 and re.search(r"(snapshots|index)/[0-9a-f]{64}", out + err), (out, err)


def test_packs_overwritten_behind_the_cache_fail_check_and_ls_even_without_read_data(s3, tmp_path):
    """The cached trees are believed only while their pack is the one the store holds."""
    r = s3_repo(s3, tmp_path)
    src = source(tmp_path)
    r.ok("backup", src)
    r.ok("ls", "latest")  # the trees are now in this host's cache
    c = s3.client()
    packs = {k: n for k, n in keys_under(s3, r.bucket, "repo/data/").items()}
    assert packs
    for k, n in packs.items():
        c.put_object(Bucket=r.bucket, Key=k, Body=os.urandom(n))  # same size: only the bytes tell
    rc, out, err = r.run("check")
    assert rc == 1 and "no errors were found" not in out, (rc, out, err)
    assert any(k.rsplit("/", 1)[1] in out + err for k in packs), (out, err)
    rc, out, err = r.run("ls", "latest")
    assert rc != 0, (out, err)
    assert str(src.name) not in out, out


def test_an_agent_with_the_old_azure_sas_racwl_is_refused_unless_accepted(azurite, tmp_path):
    from cluster import Cluster
    container = "cairn-" + secrets.token_hex(4)
    c = Cluster(tmp_path / "cluster")
    c.base.mkdir(parents=True)
    c.repo = azurite.url(container, "repo", account="cairntest")
    c.repo_credentials = azurite.credentials(tmp_path / "controller.cred", account="cairntest")
    c.agent_repo_credentials = azure_credentials(tmp_path / "agent.cred", sas_token=azurite.account_sas("cairntest", "racwl"))
    c.init()
    c.start_controller()
    c.declare_repository()
    try:
        backup_refused_as_unprotected(c, "node-a")
        assert not [k for k in azurite.blobs(container, "repo/snapshots/", account="cairntest")]
        # The documented SAS (rcl): the store itself refuses replaces, and the backup goes on.
        c.agent_repo_credentials = azure_credentials(tmp_path / "agent-rcl.cred", sas_token=azurite.account_sas("cairntest", "rcl"))
        c.add_agent("node-b", {"b.txt": b"two\n" * 100})
        c.enrol("node-b")
        rc, out, err = c.ctl("backup", "create", "--component", "data", "--node", "node-b", "--wait")
        assert rc == 0, f"{out}\n{err}\n{c.logs()}"
        assert "backing up anyway" not in c.logs()
        assert azurite.blobs(container, "repo/snapshots/", account="cairntest")
    finally:
        c.stop_all()
