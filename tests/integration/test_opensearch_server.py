"""The OpenSearch test server itself (servers_opensearch.py), not cairn: that the
nodes the search-cluster tests will run start from the cached jars, form a
cluster, index with custom analysers, snapshot to the shared filesystem
repository and restore from it, and lose a node as a real cluster does. No
cairn binary runs here."""
import servers_opensearch
from servers_opensearch import OpenSearch, OpenSearchCluster

PRODUCTS = {
    "settings": {
        "number_of_shards": 3,
        "number_of_replicas": 1,
        "analysis": {
            "filter": {
                "english_stem": {"type": "stemmer", "language": "english"},
                "shop_synonyms": {"type": "synonym", "synonyms": ["tee, t-shirt", "hoodie, sweatshirt"]},
            },
            "analyzer": {
                "shop_text": {"type": "custom", "tokenizer": "standard",
                              "filter": ["lowercase", "asciifolding", "shop_synonyms", "english_stem"]},
            },
        },
    },
    "mappings": {
        "dynamic": "strict",
        "properties": {
            "name": {"type": "text", "analyzer": "shop_text", "fields": {"raw": {"type": "keyword"}}},
            "sku": {"type": "keyword"},
            "price": {"type": "scaled_float", "scaling_factor": 100},
            "in_stock": {"type": "boolean"},
            "created": {"type": "date"},
        },
    },
}

LOGS_TEMPLATE = {
    "index_patterns": ["logs-*"],
    "priority": 10,
    "template": {
        "settings": {"number_of_shards": 2, "number_of_replicas": 1},
        "mappings": {"properties": {"@timestamp": {"type": "date"}, "level": {"type": "keyword"},
                                    "msg": {"type": "text"}}},
        "aliases": {"logs": {}},
    },
}


def _analyze(c, index, text):
    r = c.http("POST", f"/{index}/_analyze", {"analyzer": "shop_text", "text": text})
    return [t["token"] for t in r["tokens"]]


def _template_names(c):
    return {t["name"] for t in c.http("GET", "/_index_template")["index_templates"]}


def test_the_test_server_three_nodes_snapshot_to_the_shared_repo_and_restore(tmp_path):
    with OpenSearchCluster(tmp_path / "os", n=3) as c:
        assert c.health()["number_of_nodes"] == 3
        c.http("PUT", "/products", PRODUCTS)
        c.http("POST", "/_aliases", {"actions": [
            {"add": {"index": "products", "alias": "shop"}},
            {"add": {"index": "products", "alias": "shop-in-stock", "filter": {"term": {"in_stock": True}}}}]})
        c.http("PUT", "/_index_template/logs", LOGS_TEMPLATE)
        c.http("PUT", "/_scripts/double_price", {"script": {"lang": "painless", "source": "doc['price'].value * 2"}})
        c.http("PUT", "/_cluster/settings", {"persistent": {"cluster.max_shards_per_node": 1234}})

        # Indices of several sizes: 3000, 800 (created by the template) and 3 documents.
        names = ["Café crème tee", "Running hoodie", "Blue T-Shirt", "Walking boots"]
        c.bulk("products", ({"_id": i, "name": f"{names[i % 4]} {i}", "sku": f"SKU-{i:05}", "price": i % 97 + 0.99,
                             "in_stock": i % 3 != 0, "created": f"2026-11-{i % 28 + 1:02}"} for i in range(3000)))
        c.bulk("logs-2026.11.29", ({"@timestamp": f"2026-11-29T10:{i // 60 % 60:02}:{i % 60:02}Z",
                                    "level": "INFO" if i % 10 else "ERROR", "msg": f"request {i} done"}
                                   for i in range(800)))
        c.bulk("tiny", [{"k": "a"}, {"k": "b"}, {"k": "c"}])
        c.wait_green()

        assert _analyze(c, "products", "Cafés RUNNING tee") == ["cafe", "run", "tee", "t", "shirt"]
        assert c.http("GET", "/logs-2026.11.29/_settings")["logs-2026.11.29"]["settings"]["index"][
            "number_of_shards"] == "2"  # from the template
        hits = c.http("POST", "/shop/_search", {"query": {"match": {"name": "sweatshirts"}}, "size": 0})
        assert hits["hits"]["total"]["value"] == 750  # hoodie, through the synonym and the stemmer
        before = {i: c.count(i) for i in ("products", "shop", "shop-in-stock", "logs", "logs-2026.11.29", "tiny")}
        assert before["products"] == 3000 and before["shop-in-stock"] == 2000 and before["logs"] == 800
        mapping = c.http("GET", "/products/_mapping")

        # One fs repository on the path every node shares, verified on every node.
        c.http("PUT", "/_snapshot/repo?verify=true", {"type": "fs", "settings": {"location": str(c.repo)}})
        assert len(c.http("POST", "/_snapshot/repo/_verify")["nodes"]) == 3
        snap = c.http("PUT", "/_snapshot/repo/snap1?wait_for_completion=true",
                      {"indices": "products,logs-*,tiny", "include_global_state": True}, timeout=120)["snapshot"]
        assert snap["state"] == "SUCCESS" and snap["shards"]["failed"] == 0, snap
        assert snap["shards"]["successful"] == 3 + 2 + 1
        assert (c.repo / "index.latest").exists()

        # Everything gone: the indices, their aliases, the template, the stored script, the setting.
        c.http("DELETE", "/products,logs-*,tiny")
        c.http("DELETE", "/_index_template/logs")
        c.http("DELETE", "/_scripts/double_price")
        c.http("PUT", "/_cluster/settings", {"persistent": {"cluster.max_shards_per_node": None}})
        assert c.http("GET", "/_cat/indices?format=json") == []
        assert "logs" not in _template_names(c)

        r = c.http("POST", "/_snapshot/repo/snap1/_restore?wait_for_completion=true",
                   {"indices": "products,logs-*,tiny", "include_global_state": True, "include_aliases": True},
                   timeout=120)
        assert r["snapshot"]["shards"]["failed"] == 0, r
        c.wait_green()
        assert {i: c.count(i) for i in before} == before
        assert c.http("GET", "/products/_mapping") == mapping
        assert _analyze(c, "products", "Cafés RUNNING tee") == ["cafe", "run", "tee", "t", "shirt"]
        assert "logs" in _template_names(c)
        assert c.http("GET", "/_scripts/double_price")["found"] is True
        assert c.http("GET", "/_cluster/settings")["persistent"]["cluster"]["max_shards_per_node"] == "1234"


def test_the_test_server_a_node_killed_by_pid_leaves_yellow_and_red_indices(tmp_path):
    with OpenSearchCluster(tmp_path / "os", n=3) as c:
        c.http("PUT", "/replicated", {"settings": {"number_of_shards": 3, "number_of_replicas": 1}})
        c.http("PUT", "/one_copy", {"settings": {"number_of_shards": 3, "number_of_replicas": 0}})
        c.bulk("replicated", ({"n": i} for i in range(300)))
        c.bulk("one_copy", ({"n": i} for i in range(300)))
        c.wait_green()

        shards = c.http("GET", "/_cat/shards/one_copy?format=json")
        victim = c.node(shards[0]["node"])  # holds one_copy's only copy of a shard
        pid = victim.pid()
        c.kill_node(victim.name)
        assert not victim.running() and pid is not None

        h = c.wait_status("red", nodes=2, timeout=90)
        assert h["unassigned_shards"] >= 1
        assert c.health("replicated")["status"] == "yellow"  # a replica promoted, its copy missing
        assert c.health("one_copy")["status"] == "red"
        assert c.count("replicated") == 300

        c.start_node(victim.name)  # back on its data: the lost copies come back
        c.wait_green(timeout=120)
        assert c.count("one_copy") == 300


def test_the_test_server_a_single_node_snapshots_and_restores_under_another_name(tmp_path):
    node = OpenSearch.single(tmp_path / "os")
    try:
        assert node.http("GET", "/")["version"]["number"] == servers_opensearch.VERSION
        node.bulk("events", ({"n": i} for i in range(500)))
        node.http("PUT", "/_snapshot/repo", {"type": "fs", "settings": {"location": str(node.repo)}})
        snap = node.http("PUT", "/_snapshot/repo/s1?wait_for_completion=true", {"indices": "events"})["snapshot"]
        assert snap["state"] == "SUCCESS"
        node.http("POST", "/_snapshot/repo/s1/_restore?wait_for_completion=true",
                  {"indices": "events", "rename_pattern": "(.+)", "rename_replacement": "restored-$1"})
        node.wait_green()
        assert node.count("restored-events") == node.count("events") == 500
    finally:
        node.stop(kill=True)
