"""The opensearch driver against REAL OpenSearch 2.19.6 nodes (servers_opensearch.py),
through the controller: a three-node cluster with a shared snapshot path is
backed up (the server's snapshot, stored in place), changed, and restored to
what it was (indices, documents, aliases, templates, mappings, analysers and
Dashboards' saved objects); a second backup of an unchanged cluster stores
little; a restore onto another cluster, a red cluster, an agent killed mid-way
and bad credentials are each refused or put right as a user needs."""
import base64
import copy
import http.server
import json
import os
import pathlib
import shutil
import signal
import socketserver
import tempfile
import threading
import urllib.error
import urllib.request

import pytest

import servers_opensearch
from cluster import backup_set_id, cluster, kind, killed_mid_restore, restore_id, set_state, task_state  # noqa: F401
from ports import free_port
from servers_opensearch import OpenSearch, OpenSearchCluster

pytestmark = pytest.mark.skipif(servers_opensearch.available() is not None,
                                reason=str(servers_opensearch.available()))

PRODUCTS = {
    "settings": {
        "number_of_shards": 3,
        "number_of_replicas": 1,
        "analysis": {
            "filter": {"shop_synonyms": {"type": "synonym", "synonyms": ["tee, t-shirt", "hoodie, sweatshirt"]},
                       "english_stem": {"type": "stemmer", "language": "english"}},
            "analyzer": {"shop_text": {"type": "custom", "tokenizer": "standard",
                                       "filter": ["lowercase", "asciifolding", "shop_synonyms", "english_stem"]}},
        },
    },
    "mappings": {
        "dynamic": "strict",
        "properties": {
            "name": {"type": "text", "analyzer": "shop_text", "fields": {"raw": {"type": "keyword"}}},
            "sku": {"type": "keyword"},
            "price": {"type": "scaled_float", "scaling_factor": 100},
            "created": {"type": "date"},
        },
    },
}
LOGS_TEMPLATE = {
    "index_patterns": ["logs-*"],
    "priority": 10,
    "template": {"settings": {"number_of_shards": 2, "number_of_replicas": 1},
                 "mappings": {"properties": {"@timestamp": {"type": "date"}, "level": {"type": "keyword"},
                                             "msg": {"type": "text"}}},
                 "aliases": {"logs": {}}},
}
# As OpenSearch Dashboards writes its saved objects: "<type>:<id>" ids, a `type` field.
SAVED_OBJECTS = [
    {"_id": "index-pattern:5f1c7a52-7a2b-4d43-9a0e-0a9a1a1a1a1a", "type": "index-pattern",
     "index-pattern": {"title": "logs-*", "timeFieldName": "@timestamp"}, "references": [],
     "updated_at": "2026-11-29T10:00:00.000Z"},
    {"_id": "visualization:0c6e6c34-3f0e-4f1d-8d1b-2b2b2b2b2b2b", "type": "visualization",
     "visualization": {"title": "errors per minute", "visState": "{\"type\":\"line\"}"},
     "references": [{"name": "kibanaSavedObjectMeta.searchSourceJSON.index", "type": "index-pattern",
                     "id": "5f1c7a52-7a2b-4d43-9a0e-0a9a1a1a1a1a"}], "updated_at": "2026-11-29T10:01:00.000Z"},
    {"_id": "config:2.19.6", "type": "config", "config": {"buildNum": 8000, "defaultIndex": "5f1c7a52"},
     "references": [], "updated_at": "2026-11-29T10:02:00.000Z"},
]
DASHBOARDS_MAPPING = {"mappings": {"dynamic": "false", "properties": {
    "type": {"type": "keyword"}, "updated_at": {"type": "date"},
    "references": {"type": "nested", "properties": {"name": {"type": "keyword"}, "type": {"type": "keyword"},
                                                     "id": {"type": "keyword"}}}}},
    "settings": {"number_of_shards": 1, "number_of_replicas": 1}}


def component_toml(url, snapshot_path, **extra):
    lines = ["[[component]]", 'name = "search"', 'driver = "opensearch"', f"url = {json.dumps(url)}",
             f"snapshot_path = {json.dumps(str(snapshot_path))}"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def populate(c, products=3000, logs=800, replicas=1):
    """Indices of several sizes, an alias, an index template, a custom analyser, saved objects.
    replicas: 0 on a single node (green)."""
    products_body, template, dashboards = copy.deepcopy((PRODUCTS, LOGS_TEMPLATE, DASHBOARDS_MAPPING))
    products_body["settings"]["number_of_replicas"] = replicas
    template["template"]["settings"]["number_of_replicas"] = replicas
    dashboards["settings"]["number_of_replicas"] = replicas
    c.http("PUT", "/products", products_body)
    c.http("PUT", "/_index_template/logs", template)
    c.http("POST", "/_aliases", {"actions": [{"add": {"index": "products", "alias": "shop"}}]})
    names = ["Café crème tee", "Running hoodie", "Blue T-Shirt", "Walking boots"]
    c.bulk("products", ({"_id": i, "name": f"{names[i % 4]} {i}", "sku": f"SKU-{i:05}", "price": i % 97 + 0.99,
                         "created": f"2026-11-{i % 28 + 1:02}"} for i in range(products)))
    c.bulk("logs-2026.11.29", ({"@timestamp": f"2026-11-29T10:{i // 60 % 60:02}:{i % 60:02}Z",
                                "level": "INFO" if i % 10 else "ERROR", "msg": f"request {i} done"} for i in range(logs)))
    c.bulk("tiny", [{"_id": k, "k": k} for k in "abc"])
    c.http("PUT", "/.opensearch_dashboards", dashboards)
    c.bulk(".opensearch_dashboards", SAVED_OBJECTS)


def state(c):
    """What a user of the cluster sees: per index its documents (by id), mapping and settings
    that matter; aliases; template names; the analyser's output."""
    out = {"indices": {}}
    c.http("POST", "/_refresh?expand_wildcards=all")
    for row in c.http("GET", "/_cat/indices?format=json&expand_wildcards=all&h=index"):
        i = row["index"]
        docs = c.http("POST", f"/{i}/_search?expand_wildcards=all",
                      {"size": 10000, "sort": ["_doc"], "track_total_hits": True})["hits"]
        settings = c.http("GET", f"/{i}/_settings?expand_wildcards=all")[i]["settings"]["index"]
        out["indices"][i] = {
            "docs": {h["_id"]: h["_source"] for h in docs["hits"]},
            "total": docs["total"]["value"],
            "mapping": c.http("GET", f"/{i}/_mapping?expand_wildcards=all")[i],
            "shards": settings["number_of_shards"],
            "analysis": settings.get("analysis"),
        }
    out["aliases"] = sorted((i, a) for i, v in c.http("GET", "/_alias?expand_wildcards=all").items()
                            for a in v.get("aliases", {}))
    out["templates"] = sorted(t["name"] for t in c.http("GET", "/_index_template")["index_templates"])
    if "products" in out["indices"]:
        out["analysed"] = [t["token"] for t in c.http("POST", "/products/_analyze",
                                                      {"analyzer": "shop_text", "text": "Cafés RUNNING tee"})["tokens"]]
    return out


def backup(c, *extra, expect=0):
    rc, out, err = c.ctl("backup", "create", "--component", "search", "--wait", *extra, timeout=400)
    assert rc == expect, f"backup exited {rc}, expected {expect}\n{out}\n{err}\n{c.logs()}"
    set_id = backup_set_id(out)
    return set_id, c.json("backup", "show", set_id)


def snapshot_summary(c, snap_id):
    snaps = json.loads(c.ok("repo", "snapshots", "--json", "--repo", c.repo, "--password-file", c.repo_pass))
    return [s for s in snaps if s["id"] == snap_id][0]


def reasons(shown):
    return " ".join(x.get("detail", "") for t in shown["tasks"] for x in t.get("reasons", []))


def test_a_three_node_cluster_is_backed_up_changed_and_restored_to_what_it_was(cluster, tmp_path):
    c = cluster
    with OpenSearchCluster(tmp_path / "os", n=3) as os_:
        populate(os_)
        os_.wait_green()
        snapshot_path = os_.repo / "cairn"
        c.add_agent("node-a", components=component_toml(f"http://127.0.0.1:{os_.node(1).http_port}", snapshot_path))
        c.enrol("node-a")
        before = state(os_)
        assert before["indices"]["products"]["total"] == 3000 and before["indices"][".opensearch_dashboards"]["total"] == 3

        set_id, shown = backup(c)
        assert set_state(shown) == "complete", shown
        meta = json.loads(shown["tasks"][0]["component_metadata"])
        health = os_.http("GET", "/")
        assert meta["cluster_uuid"] == health["cluster_uuid"] and meta["cluster_name"] == os_.cluster_name, meta
        assert meta["version"] == {"number": servers_opensearch.VERSION, "distribution": "opensearch"}, meta
        assert meta["snapshot"]["state"] == "SUCCESS" and meta["snapshot"]["name"].startswith("cairn-"), meta
        assert meta["indices"]["products"]["docs"] == 3000 and meta["indices"]["products"]["primaries"] == 3, meta
        assert meta["indices"]["logs-2026.11.29"]["primaries"] == 2, meta
        assert meta["indices"][".opensearch_dashboards"]["docs"] == 3, meta
        assert meta["saved_object_indices"] == [".opensearch_dashboards"], meta
        assert "logs" in meta["index_templates"], meta
        first = snapshot_summary(c, shown["tasks"][0]["snapshot_id"])
        assert str(snapshot_path) in first["paths"], first
        # The per-run link tree is gone; the server's snapshot stays (the newest).
        assert not list(os_.repo.glob("cairn.cairn-backup-*"))

        # A second backup of the unchanged cluster stores next to nothing, and
        # deletes the older snapshot through the API.
        set2, shown2 = backup(c)
        second = snapshot_summary(c, shown2["tasks"][0]["snapshot_id"])
        print("first backup:", first["summary"], "\nsecond backup:", second["summary"])
        assert second["summary"]["data_added"] < max(64 << 10, first["summary"]["data_added"] // 50), (first["summary"],
                                                                                                       second["summary"])
        names = [s["snapshot"] for s in os_.http("GET", "/_snapshot/cairn/_all")["snapshots"]]
        meta2 = json.loads(shown2["tasks"][0]["component_metadata"])
        assert names == [meta2["snapshot"]["name"]], names

        # Changed: an index deleted, documents updated and deleted, a new index, the template gone,
        # a saved object edited.
        os_.http("DELETE", "/logs-2026.11.29")
        os_.bulk("products", ({"_id": i, "name": "changed", "sku": "X", "price": 1, "created": "2026-01-01"}
                              for i in range(0, 3000, 7)))
        deletes = "".join(json.dumps({"delete": {"_index": "products", "_id": str(i)}}) + "\n" for i in range(1, 3000, 5))
        assert not os_.http("POST", "/_bulk?refresh=wait_for", deletes)["errors"]
        os_.bulk("extra", [{"n": 1}])
        os_.http("DELETE", "/_index_template/logs")
        os_.http("POST", "/.opensearch_dashboards/_update/config:2.19.6?refresh=true",
                 {"doc": {"config": {"defaultIndex": "other"}}})
        assert state(os_) != before

        rc, out, err = c.ctl("restore", set_id, "--component", "search", "--wait", timeout=600)
        assert rc == 0, f"restore exited {rc}\n{out}\n{err}\n{c.logs()}"
        r = c.json("restore", "show", restore_id(out))
        assert set_state(r) == "complete", r
        assert [task_state(t) for t in r["tasks"] if kind(t) == "backup"] == ["succeeded"], r  # the safety backup
        os_.wait_green()
        after = state(os_)
        assert after.keys() == before.keys()
        assert sorted(after["indices"]) == sorted(before["indices"]), (sorted(after["indices"]), sorted(before["indices"]))
        for i in before["indices"]:
            assert after["indices"][i] == before["indices"][i], f"index {i} differs after the restore"
        assert after["aliases"] == before["aliases"] and after["templates"] == before["templates"]
        assert after["analysed"] == ["cafe", "run", "tee", "t", "shirt"]
        # The stored repository put back for the restore, and its registration, are gone.
        assert not list(os_.repo.glob("cairn.cairn-restore-*"))
        assert [n for n in os_.http("GET", "/_snapshot/_all") if n.startswith("cairn-restore")] == []


def test_a_snapshot_path_not_in_every_nodes_path_repo_is_refused_naming_every_node(cluster, tmp_path):
    """node2's path.repo is a directory of its own (as a node that does not mount the shared path
    has): the repository cannot be verified on every node; the backup is refused saying so."""
    c = cluster
    os_ = OpenSearchCluster(tmp_path / "os", n=2)
    elsewhere = tmp_path / "node2-own-repo"
    elsewhere.mkdir()
    conf = os_.node(2).dir / "config" / "opensearch.yml"
    conf.write_text(conf.read_text().replace(json.dumps([str(os_.repo)]), json.dumps([str(elsewhere)])))
    with os_:
        os_.bulk("idx", [{"n": 1}])
        c.add_agent("node-a", components=component_toml(f"http://127.0.0.1:{os_.node(1).http_port}", os_.repo / "cairn"))
        (os_.repo / "cairn").mkdir()
        c.enrol("node-a")
        _, shown = backup(c, expect=1)
        text = reasons(shown)
        assert "shared by every node" in text and "path.repo" in text, text
        assert not list((os_.repo / "cairn").glob("snap-*")), "a snapshot was taken"


def test_a_restore_onto_another_cluster_is_refused_naming_both_unless_forced(cluster, tmp_path):
    c = cluster
    shared = tmp_path / "shared"
    shared.mkdir()
    a = OpenSearch.single(tmp_path / "a", settings={"path.repo": [str(shared)]})
    b = OpenSearch.single(tmp_path / "b", settings={"path.repo": [str(shared)]})
    try:
        a.bulk("orders", ({"_id": i, "n": i} for i in range(500)))
        b.bulk("local", [{"n": 1}])
        snapshot_path = shared / "cairn"
        agent = c.add_agent("node-a", components=component_toml(f"http://127.0.0.1:{a.http_port}", snapshot_path))
        c.enrol("node-a")
        set_id, shown = backup(c)
        assert set_state(shown) == "complete", shown

        # The same agent now declares cluster b at the same snapshot_path.
        agent.stop()
        cfg = c.agent_dirs["node-a"]["config"]
        cfg.write_text(cfg.read_text().replace(f"127.0.0.1:{a.http_port}", f"127.0.0.1:{b.http_port}"))
        agent.start()
        c.wait_for("node-a connected again", lambda: c.connected("node-a"), timeout=30)
        b_before = state(b)
        rc, out, err = c.ctl("restore", set_id, "--component", "search", "--wait", timeout=300)
        assert rc != 0, out
        r = c.json("restore", "show", restore_id(out))
        text = reasons(r)
        a_info, b_info = a.http("GET", "/"), b.http("GET", "/")
        for v in (a_info["cluster_name"], a_info["cluster_uuid"], b_info["cluster_name"], b_info["cluster_uuid"]):
            assert v in text, text
        assert "--force-identity" in text, text
        assert "succeeded" not in [task_state(t) for t in r["tasks"] if kind(t) == "backup"], "a safety backup was taken"
        assert state(b) == b_before, "a refused restore changed the cluster"

        rc, out, err = c.ctl("restore", set_id, "--component", "search", "--force-identity", "--wait", timeout=300)
        assert rc == 0, f"restore exited {rc}\n{out}\n{err}\n{c.logs()}"
        b.wait_status("green")
        assert b.count("orders") == 500
        assert "local" not in [x["index"] for x in b.http("GET", "/_cat/indices?format=json")]  # mirror
    finally:
        a.stop(kill=True)
        b.stop(kill=True)


def test_a_red_cluster_is_refused_before_anything_is_written(cluster, tmp_path):
    c = cluster
    node = OpenSearch.single(tmp_path / "os")
    try:
        node.bulk("orders", ({"_id": i, "n": i} for i in range(300)))
        c.add_agent("node-a", components=component_toml(f"http://127.0.0.1:{node.http_port}", node.repo / "cairn"))
        c.enrol("node-a")
        set_id, shown = backup(c)
        assert set_state(shown) == "complete", shown
        snaps = node.http("GET", "/_snapshot/cairn/_all")["snapshots"]

        # A primary that can be assigned nowhere: red.
        node.http("PUT", "/stuck?wait_for_active_shards=0", {"settings": {"number_of_shards": 1, "number_of_replicas": 0,
                                                 "index.routing.allocation.require._name": "nowhere"}},
                  expect=(200,))
        node.wait_status("red")
        node.bulk("orders", [{"_id": "new", "n": -1}])
        before = state_without(node, "stuck")

        _, shown = backup(c, expect=1)
        assert "is red" in reasons(shown), reasons(shown)
        # Refused by the preflight (the safety backup needs a snapshot, which a red cluster
        # cannot give) and, without a safety backup, by the restore's own preflight.
        rc, out, err = c.ctl("restore", set_id, "--component", "search", "--wait", timeout=300)
        assert rc != 0, out
        r = c.json("restore", "show", restore_id(out))
        assert "is red" in reasons(r), r
        assert "succeeded" not in [task_state(t) for t in r["tasks"] if kind(t) == "backup"], "a safety backup was taken"
        rc, out, err = c.ctl("restore", set_id, "--component", "search", "--skip-safety-backup", "--wait", timeout=300)
        assert rc != 0, out
        r = c.json("restore", "show", restore_id(out))
        assert "is red" in reasons(r) and "nothing was changed" in reasons(r), r
        assert state_without(node, "stuck") == before
        assert node.http("GET", "/_snapshot/cairn/_all")["snapshots"] == snaps, "a snapshot was taken"
        assert not list(node.repo.glob("cairn.cairn-restore-*"))
    finally:
        node.stop(kill=True)


def state_without(node, index):
    """state() of the indices but `index` (a red index cannot be searched)."""
    out = {}
    for row in node.http("GET", "/_cat/indices?format=json&expand_wildcards=all&h=index"):
        if row["index"] != index:
            node.http("POST", f"/{row['index']}/_refresh")
            hits = node.http("POST", f"/{row['index']}/_search", {"size": 10000})["hits"]["hits"]
            out[row["index"]] = {h["_id"]: h["_source"] for h in hits}
    return out


def test_an_agent_killed_mid_restore_puts_the_previous_indices_back_at_its_start(cluster, tmp_path):
    c = cluster
    node = OpenSearch.single(tmp_path / "os")
    fp = tmp_path / "failpoints"
    fp.write_text("")
    try:
        populate(node, products=500, logs=100, replicas=0)
        node.wait_green()
        c.add_agent("node-a", components=component_toml(f"http://127.0.0.1:{node.http_port}", node.repo / "cairn"),
                    env={"CAIRN_FAILPOINTS_FILE": os.fspath(fp)})
        c.enrol("node-a")
        set_id, _ = backup(c)
        node.http("DELETE", "/tiny")
        node.bulk("products", [{"_id": 1, "name": "after the backup", "sku": "Z", "price": 2, "created": "2026-11-30"}])
        node.bulk("extra", [{"n": 1}])
        before = state(node)

        # SIGKILL once the restore has deleted the indices it replaces.
        fp.write_text("restore.opensearch.deleted kill\n")
        seen = {}

        def while_dead():
            names = [x["index"] for x in node.http("GET", "/_cat/indices?format=json&expand_wildcards=all")]
            seen["indices"] = names
            assert list(node.repo.glob("cairn.cairn-restore-*")), "the staged repository was not kept"

        detail = killed_mid_restore(c, "node-a", [set_id, "--component", "search"], while_dead=while_dead,
                                    safety=True)
        assert "products" not in seen["indices"], seen  # the kill came with the indices gone
        assert "back as the safety snapshot" in detail, detail
        node.wait_green()
        assert state(node) == before, "the cluster is not as it was before the restore"
        assert not list(node.repo.glob("cairn.cairn-restore-*"))
    finally:
        node.stop(kill=True)


class AuthProxy:
    """A basic-auth gate in front of a real node, standing in for the security plugin (Maven Central
    has none for 2.19.6): a request without the right Authorization header gets 401 as the plugin
    answers it, any other is forwarded to the node as is."""

    def __init__(self, target_port, user, password):
        want = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        target = f"http://127.0.0.1:{target_port}"

        class Handler(http.server.BaseHTTPRequestHandler):
            def _any(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else None
                if self.headers.get("Authorization") != want:
                    data = json.dumps({"error": {"type": "security_exception",
                                                 "reason": "Unauthorized"}, "status": 401}).encode()
                    status = 401
                else:
                    req = urllib.request.Request(target + self.path, data=body, method=self.command,
                                                 headers={"Content-Type": self.headers.get("Content-Type", "application/json")})
                    try:
                        with urllib.request.urlopen(req, timeout=600) as r:
                            status, data = r.status, r.read()
                    except urllib.error.HTTPError as e:
                        status, data = e.code, e.read()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

            def log_message(self, *a):
                pass

        self.port = free_port()
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_credentials_a_0644_file_and_a_wrong_password_are_refused_without_the_password_shown(cluster, tmp_path):
    c = cluster
    node = OpenSearch.single(tmp_path / "os")
    proxy = AuthProxy(node.http_port, "backup", "s3cret-Pa55")
    try:
        node.bulk("orders", [{"n": 1}])
        cred = tmp_path / "os.cred"
        cred.write_text("backup:wrong-Pa55word\n")
        os.chmod(cred, 0o644)
        c.add_agent("node-a", components=component_toml(f"http://127.0.0.1:{proxy.port}", node.repo / "cairn",
                                                        credentials_file=str(cred)))
        c.enrol("node-a")
        _, shown = backup(c, expect=1)
        text = reasons(shown)
        assert "credentials_file" in text and str(cred) in text, text

        os.chmod(cred, 0o600)
        _, shown = backup(c, expect=1)
        text = reasons(shown)
        assert "refused the credentials of user 'backup'" in text and "401" in text, text
        logs = c.logs()
        assert "wrong-Pa55word" not in text + logs and "wrong-Pa55word" not in json.dumps(shown)

        cred.write_text("backup:s3cret-Pa55\n")
        _, shown = backup(c)
        assert set_state(shown) == "complete", shown
        assert "s3cret-Pa55" not in c.logs()
    finally:
        proxy.close()
        node.stop(kill=True)


# ---- drills -------------------------------------------------------------


def launcher_substitute(d):
    """A SUBSTITUTE for the distribution's bin/opensearch, which the tests do not have (Debian packages
    no OpenSearch; the jars come from Maven Central): a shell script that starts the REAL node the way
    servers_opensearch.py does (CairnOpenSearchNode over the cached jars), reading what the real
    launcher reads: OPENSEARCH_PATH_CONF (its parent is the node's HOME, HOME/config/opensearch.yml)
    and the JVM options in jvm.options. In a directory the drill's user can read."""
    d.mkdir(mode=0o755, parents=True, exist_ok=True)
    flags = [f for f in servers_opensearch.jvm_flags() if not f.startswith(("-Xms", "-Xmx"))]
    script = d / "opensearch-launcher-substitute"
    script.write_text(f"""#!/bin/sh
# SUBSTITUTE of bin/opensearch for the tests (test_opensearch.py: launcher_substitute).
set -e
conf="${{OPENSEARCH_PATH_CONF:?OPENSEARCH_PATH_CONF is not set}}"
home=$(dirname "$conf")
opts=$(grep -v '^#' "$conf/jvm.options" | tr '\\n' ' ')
exec {shutil.which("java")} {" ".join(flags)} $opts -cp '{servers_opensearch.lib_dir()}/*' \\
  {servers_opensearch.LAUNCHER} "$home" {" ".join(servers_opensearch.PLUGINS)}
""")
    script.chmod(0o755)
    return script


def drill_toml(root, launcher, **extra):
    settings = {"root": str(root), "memory_max": "2G", "start_timeout_seconds": 180, "java_heap_mb": 512,
                "opensearch": str(launcher), **extra}
    return "\n".join(["[drill]"] + [f"{k} = {json.dumps(v)}" for k, v in settings.items()]) + "\n"


def run_drill(c, set_id, expect):
    rc, out, err = c.ctl("drill", "run", set_id, "--component", "search", "--wait", timeout=600)
    assert rc == expect, f"drill exited {rc}, expected {expect}\n{out}\n{err}\n{c.logs()}"
    did = next(ln.split()[1] for ln in out.splitlines() if ln.split()[:1] == ["drill"] and ln.split()[1].startswith("dr-"))
    shown = c.json("drill", "show", did)
    (task,) = shown["tasks"]
    report = json.loads(task["component_metadata"])["drill"] if task.get("component_metadata") else {}
    return shown, task, report


@pytest.fixture
def launcher():
    d = pathlib.Path(tempfile.mkdtemp(prefix="cairn-os-launcher-"))
    d.chmod(0o755)
    yield launcher_substitute(d)
    shutil.rmtree(d)


def test_a_drill_starts_one_node_on_the_restored_repository_and_checks_every_index(cluster, tmp_path, launcher):
    c = cluster
    node = OpenSearch.single(tmp_path / "os")
    try:
        populate(node, products=1000, logs=200, replicas=0)
        node.wait_green()
        c.add_agent("node-a", components=component_toml(f"http://127.0.0.1:{node.http_port}", node.repo / "cairn")
                    + drill_toml(tmp_path / "drills", launcher))
        c.enrol("node-a")
        set_id, shown = backup(c)
        meta = json.loads(shown["tasks"][0]["component_metadata"])
        pid = node.pid()

        shown, task, report = run_drill(c, set_id, 0)
        checks = {x["name"]: x for x in report["checks"]}
        for i, want in meta["indices"].items():
            assert checks[f"documents in '{i}'"]["ok"] and checks[f"documents in '{i}'"]["found"] == want["docs"], checks
            assert checks[f"mapping of '{i}'"]["ok"], checks
            assert checks[f"a search over '{i}' answers"]["ok"], checks
        assert checks["saved objects in '.opensearch_dashboards'"]["found"] == 3, checks
        assert checks["restored indices green"]["ok"], checks
        # The live node: the same process, its indices as they were.
        assert node.pid() == pid and node.count("products") == 1000
        assert list((tmp_path / "drills").iterdir()) == []
    finally:
        node.stop(kill=True)


def test_a_drill_of_a_backup_whose_snapshot_repository_lost_a_file_fails_naming_it(cluster, tmp_path, launcher):
    c = cluster
    node = OpenSearch.single(tmp_path / "os")
    try:
        node.bulk("orders", ({"_id": i, "n": i, "text": f"order number {i}"} for i in range(3000)))
        c.add_agent("node-a", components=component_toml(f"http://127.0.0.1:{node.http_port}", node.repo / "cairn")
                    + drill_toml(tmp_path / "drills", launcher))
        c.enrol("node-a")
        backup(c)
        # The biggest blob of the server's repository lost; the next snapshot reuses it (unchanged
        # index), so the second backup stores a repository without it.
        blobs = [p for p in (node.repo / "cairn" / "indices").rglob("__*") if p.is_file()]
        lost = max(blobs, key=os.path.getsize)
        lost.unlink()
        set_id, shown = backup(c)
        assert set_state(shown) == "complete", shown

        shown, task, report = run_drill(c, set_id, 1)
        text = " ".join(r.get("detail", "") for r in task.get("reasons", []))
        assert lost.name in text, text
    finally:
        node.stop(kill=True)


def test_a_merge_restore_keeps_existing_indices_and_names_each_clash(cluster, tmp_path):
    c = cluster
    node = OpenSearch.single(tmp_path / "os")
    try:
        node.bulk("orders", ({"_id": i, "n": i} for i in range(200)))
        node.bulk("customers", ({"_id": i, "name": f"c{i}"} for i in range(50)))
        c.add_agent("node-a", components=component_toml(f"http://127.0.0.1:{node.http_port}", node.repo / "cairn"))
        c.enrol("node-a")
        set_id, _ = backup(c)
        node.http("DELETE", "/customers")
        node.bulk("orders", [{"_id": "added-later", "n": -1}])
        node.bulk("newer", [{"n": 1}])

        rc, out, err = c.ctl("restore", set_id, "--component", "search", "--mode", "merge", "--wait", timeout=300)
        r = c.json("restore", "show", restore_id(out))
        task = next(t for t in r["tasks"] if kind(t) == "restore")
        assert task_state(task) == "partial", (rc, out, err, r)
        text = " ".join(x.get("detail", "") for x in task.get("reasons", []))
        assert "index 'orders' exists in the cluster: kept" in text, text
        # customers back as backed up, orders and newer as they were.
        assert node.count("customers") == 50
        assert node.count("orders") == 201 and node.http("GET", "/orders/_doc/added-later")["found"]
        assert node.count("newer") == 1
    finally:
        node.stop(kill=True)


def test_an_agent_killed_by_pid_mid_restore_without_a_safety_backup_finishes_it_at_its_start(cluster, tmp_path):
    """No safety snapshot to go back to: the agent, stopped by a failpoint with the indices
    deleted and then SIGKILLed by its PID, applies the restore's plan again at its next start."""
    c = cluster
    node = OpenSearch.single(tmp_path / "os")
    fp = tmp_path / "failpoints"
    fp.write_text("")
    try:
        populate(node, products=300, logs=50, replicas=0)
        node.wait_green()
        c.add_agent("node-a", components=component_toml(f"http://127.0.0.1:{node.http_port}", node.repo / "cairn"),
                    env={"CAIRN_FAILPOINTS_FILE": os.fspath(fp)})
        c.enrol("node-a")
        set_id, _ = backup(c)
        backed = state(node)
        node.http("DELETE", "/tiny")
        node.bulk("products", [{"_id": 2, "name": "after the backup", "sku": "Z", "price": 2, "created": "2026-11-30"}])
        node.bulk("extra", [{"n": 1}])

        fp.write_text("restore.opensearch.deleted freeze\n")
        p = c.ctl_popen("restore", set_id, "--component", "search", "--skip-safety-backup", "--wait")
        agent = c.agents["node-a"]
        agent.expect_dead = True

        def stopped():
            with open(f"/proc/{agent.pid}/stat") as f:
                return fp.read_text() == "" and f.read().rsplit(")", 1)[1].split()[0] == "T"
        c.wait_for("the agent stopped with the indices deleted", stopped, timeout=180)
        os.kill(agent.pid, signal.SIGKILL)
        agent.p.wait(timeout=30)
        records = c.agent_dirs["node-a"]["dir"] / "state" / "restores"
        assert list(records.glob("*.json")), "the killed agent left no record of its restore"
        assert list(node.repo.glob("cairn.cairn-restore-*")), "the staged repository was not kept"
        assert "products" not in [x["index"] for x in node.http("GET", "/_cat/indices?format=json")]
        out = p.communicate(timeout=300)[0].decode(errors="replace")
        assert p.returncode != 0, out
        rid = restore_id(out)

        agent.expect_dead = False
        agent.start()

        def told():
            t = next(x for x in c.json("restore", "show", rid)["tasks"] if kind(x) == "restore")
            d = " ".join(x.get("detail", "") for x in t.get("reasons", []))
            return d if "was finished instead" in d else None
        detail = c.wait_for("node-a's account of the interrupted restore", told, timeout=180)
        assert "no safety backup had been taken" in detail, detail
        node.wait_green()
        assert state(node) == backed, "the restore was not finished as the backup had it"
        assert not list(records.glob("*.json")) and not list(node.repo.glob("cairn.cairn-restore-*"))
        assert [n for n in node.http("GET", "/_snapshot/_all") if n.startswith("cairn-restore")] == []
    finally:
        node.stop(kill=True)
