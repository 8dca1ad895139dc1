"""Real OpenSearch nodes for the integration tests (the search-cluster driver's).

Debian packages neither OpenSearch nor Elasticsearch: scripts/fetch-opensearch.sh
(run by scripts/install-deps.sh) copies OpenSearch's server and the modules a
node needs from Maven Central into
${CAIRN_OPENSEARCH_CACHE:-/var/cache/cairn/opensearch}/<version>/
(tests/opensearch/pom.xml), and compiles there the launcher
tests/opensearch/CairnOpenSearchNode.java (cairn-opensearch-node.jar). The
launcher starts a node the way OpenSearch's own integration tests do
(org.opensearch.node.MockNode): a Node whose plugins are classes on the
classpath, here the real ones, without the test framework or its mocks:

    java -cp 'CACHE/VERSION/*' CairnOpenSearchNode HOME PLUGIN_CLASS...

with HOME/config/opensearch.yml and log4j2.properties written below. The
modules, as classpath plugins (PLUGINS): transport-netty4 (transport and
HTTP), analysis-common (custom analysers: stemmers, asciifolding, ...),
lang-painless (stored scripts, which live in the cluster's global state) and
mapper-extras (scaled_float, search_as_you_type, ...). The `fs` snapshot
repository type is in the server itself.

Each node runs on free loopback ports (ports.free_port) with its data, logs
and its output (server.log: the node's log at INFO, kept for failure
messages) in the test's temp dir, a modest heap (-Xms256m -Xmx512m), the
serial collector and C1 only, with the class-data archive of § JVM start-up
when there is one, and is stopped by the PID it was started with
(server.pid; SIGTERM closes the node cleanly, SIGKILL kills it), never by
name. Its command is kept in launch.json: `servers_opensearch.py start|stop|kill
DIR` starts it again or stops it by that PID (an agent's service commands).

    node = OpenSearch.single(tmp_path / "os")          # one node, started, green
    with OpenSearchCluster(tmp_path / "os", n=3) as c:  # three nodes, green
        c.http("PUT", "/idx", {"settings": {"number_of_replicas": 1}})
        c.bulk("idx", [{"n": i} for i in range(1000)])
        assert c.count("idx") == 1000
        c.http("PUT", "/_snapshot/repo", {"type": "fs", "settings": {"location": str(c.repo)}})
        c.kill_node(2)                                   # SIGKILL by PID
        c.wait_status("yellow")

A cluster's nodes share ONE path.repo directory (`repo`), as a shared
filesystem repository must be; the nodes are all cluster-manager eligible and
data nodes (cluster.initial_cluster_manager_nodes names them all). Disk
watermarks are off: a busy CI disk must not leave replicas unassigned.

Measured on 2 shared cores at load average 6-9 (test_opensearch_server.py):
a single node is green in 5-8 s (3 s of CPU with the class-data archive, 5-6 s
without; about 250 MB RSS); three nodes are green in 5.5-6 s at load 4 and
about 12 s at load 8, 240-270 MB RSS each. HTTPS with basic auth (the security plugin) is not set up:
Maven Central has org.opensearch.plugin:opensearch-security only as a plugin
zip, and only for 2.19.3.0 and 2.19.4.0 (its plugin descriptor pins
opensearch.version=2.19.4), none for 2.19.6.
"""
import json
import os
import pathlib
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import pytest

import jvm
from ports import free_port

CACHE = os.environ.get("CAIRN_OPENSEARCH_CACHE", "/var/cache/cairn/opensearch")
VERSION = os.environ.get("CAIRN_OPENSEARCH_VERSION", "2.19.6")
LAUNCHER = "CairnOpenSearchNode"
PLUGINS = [
    "org.opensearch.transport.Netty4Plugin",
    "org.opensearch.analysis.common.CommonAnalysisPlugin",
    "org.opensearch.painless.PainlessPlugin",
    "org.opensearch.index.mapper.MapperExtrasPlugin",
]
# What a distribution's jvm.options sets that matters here, and a small,
# quick-starting JVM: short-lived nodes, small heaps, two shared cores.
JVM_FLAGS = ["-Xms256m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
             "-XX:-OmitStackTraceInFastThrow", "-Djava.locale.providers=SPI,COMPAT",
             "-Dlog4j.shutdownHookEnabled=false", "-Dlog4j2.disable.jmx=true",
             "-Dio.netty.noUnsafe=true", "-Dio.netty.noKeySetOptimization=true",
             "-Dio.netty.recycler.maxCapacityPerThread=0", "-Dfile.encoding=UTF-8"]


# ---- JVM start-up ------------------------------------------------------
#
# As servers_kafka.py's: an application class-data archive of the node's
# classes for this JDK and these jars (`servers_opensearch.py cds VERSION`,
# run by scripts/fetch-opensearch.sh once per machine; about 80 MB) takes a
# node's CPU to green from 5-6 s to about 3 s. A missing or stale archive only
# costs that time back (-Xshare:auto, its warnings off).


def cds_archive(version=VERSION):
    return jvm.archive_in(lib_dir(version))


def jvm_flags(version=VERSION):
    return jvm.flags_with_archive(JVM_FLAGS, cds_archive(version))


LOG4J2 = """status = error
appender.console.type = Console
appender.console.name = console
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d{ISO8601}][%-5p][%-25c{1.}] [%node_name]%marker %m%n
rootLogger.level = info
rootLogger.appenderRef.console.ref = console
logger.deprecation.name = org.opensearch.deprecation
logger.deprecation.level = error
"""


def lib_dir(version=VERSION):
    return os.path.join(CACHE, version)


def available(version=VERSION):
    """Why an OpenSearch node of this version cannot run here, or None."""
    if not shutil.which("java"):
        return "java is not installed"
    d = lib_dir(version)
    if not os.path.exists(os.path.join(d, ".complete")) or not os.path.exists(
            os.path.join(d, "cairn-opensearch-node.jar")):
        return f"OpenSearch {version} is not in {d}: run scripts/fetch-opensearch.sh (needs maven and Maven Central)"
    return None


def require(version=VERSION):
    why = available(version)
    if why:
        pytest.fail(why)  # installed by scripts/install-deps.sh: missing is a defect, not a skip


class OpenSearchError(AssertionError):
    """An HTTP answer with a status the caller did not expect; `status` and `body` (parsed JSON or text)."""

    def __init__(self, method, path, status, body):
        text = body if isinstance(body, str) else json.dumps(body)
        super().__init__(f"{method} {path}: HTTP {status}: {text[:2000]}")
        self.status = status
        self.body = body


def _request(port, method, path, body=None, expect=None, timeout=60):
    """One HTTP request to 127.0.0.1:port; the answer's JSON (or text). body: a dict or list is sent
    as JSON, a str or bytes as is (NDJSON for _bulk). Fails on a status >= 400 not in `expect`."""
    headers = {}
    data = None
    if body is not None:
        if isinstance(body, (dict, list)):
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        else:
            data = body.encode() if isinstance(body, str) else body
            headers["Content-Type"] = "application/x-ndjson"
    if not path.startswith("/"):
        path = "/" + path
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    text = raw.decode(errors="replace")
    try:
        parsed = json.loads(text) if text else None
    except ValueError:
        parsed = text
    if status >= 400 and status not in (expect or ()):
        raise OpenSearchError(method, path, status, parsed)
    return parsed


class _Client:
    """What a node and a cluster both answer: requests go to `_port()`."""

    def _port(self):
        raise NotImplementedError

    def http(self, method, path, body=None, expect=None, timeout=60):
        return _request(self._port(), method, path, body, expect, timeout)

    def health(self, index=None, timeout=30, **params):
        q = "&".join(f"{k}={v}" for k, v in params.items())
        path = "/_cluster/health" + (f"/{index}" if index else "") + (f"?{q}" if q else "")
        return self.http("GET", path, expect=(408,), timeout=timeout)  # 408: wait_for_* timed out

    def wait_status(self, status, index=None, nodes=None, timeout=120):
        """Until the cluster's (or index's) health is exactly `status` (green, yellow or red) with
        `nodes` nodes when given; the last health seen in the failure."""
        deadline, last = time.time() + timeout, None
        while time.time() < deadline:
            self._check_alive()
            try:
                last = self.health(index, timeout=15)
                if last.get("status") == status and (nodes is None or last.get("number_of_nodes") == nodes):
                    return last
            except (OSError, OpenSearchError) as e:
                last = repr(e)
            time.sleep(0.3)
        self._fail(f"health {status!r}{f' with {nodes} nodes' if nodes else ''} not reached in {timeout} s; "
                   f"last: {last}")

    def wait_green(self, index=None, timeout=120):
        """Until every shard (of `index`, or of the cluster) is assigned: status green, all nodes in."""
        return self.wait_status("green", index, nodes=self._expected_nodes(), timeout=timeout)

    def bulk(self, index, docs, chunk=1000, refresh=True):
        """Indexes docs (dicts; an `_id` key becomes the document's id) with _bulk, `chunk` a request;
        fails on any item's error. refresh: the last request waits until they are searchable."""
        docs = list(docs)
        for start in range(0, len(docs), chunk):
            lines = []
            for d in docs[start:start + chunk]:
                d = dict(d)
                meta = {"_index": index}
                if "_id" in d:
                    meta["_id"] = str(d.pop("_id"))
                lines.append(json.dumps({"index": meta}))
                lines.append(json.dumps(d))
            last = start + chunk >= len(docs)
            r = self.http("POST", "/_bulk" + ("?refresh=wait_for" if refresh and last else ""),
                          "\n".join(lines) + "\n")
            if r.get("errors"):
                bad = [i for i in r["items"] if "error" in next(iter(i.values()))][:3]
                self._fail(f"_bulk into {index}: errors, the first: {bad}")
        return len(docs)

    def count(self, index, refresh=True):
        if refresh:
            self.http("POST", f"/{index}/_refresh")
        return self.http("GET", f"/{index}/_count")["count"]


class OpenSearch(_Client):
    """One node: its dir holds config/, data/, logs/, server.log and server.pid."""

    def __init__(self, d, name, settings, version=VERSION, plugins=None, jvm=()):
        self.dir = pathlib.Path(d)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.version = version
        self.plugins = list(PLUGINS if plugins is None else plugins)
        self.jvm = list(jvm)
        self.http_port = settings["http.port"]
        self.transport_port = settings["transport.port"]
        self.log = self.dir / "server.log"
        self.proc = None
        self._stopped = False  # stopped on purpose: a cluster does not fail for its exit
        self.single_node = settings.get("discovery.type") == "single-node"
        conf = self.dir / "config"
        conf.mkdir(exist_ok=True)
        (conf / "opensearch.yml").write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in settings.items()))
        (conf / "log4j2.properties").write_text(LOG4J2)
        (self.dir / "version").write_text(version)

    @staticmethod
    def settings(d, name, cluster_name, repo, http_port=None, transport_port=None):
        """The settings every node of the tests has (a dict: the node's opensearch.yml)."""
        d = pathlib.Path(d)
        return {
            "cluster.name": cluster_name,
            "node.name": name,
            "path.data": str(d / "data"),
            "path.logs": str(d / "logs"),
            "path.repo": [str(repo)],
            "network.host": "127.0.0.1",
            "http.port": http_port or free_port(),
            "transport.port": transport_port or free_port(),
            "cluster.routing.allocation.disk.threshold_enabled": False,
            "action.destructive_requires_name": False,  # tests delete with wildcards
        }

    @classmethod
    def single(cls, d, version=VERSION, start=True, settings=None, plugins=None, jvm=()):
        """A one-node cluster (discovery.type single-node) in d/node1, its snapshot repository
        path d/repo (`repo`); started and green unless start=False. settings: more of opensearch.yml."""
        require(version)
        d = pathlib.Path(d)
        repo = d / "repo"
        repo.mkdir(parents=True, exist_ok=True)
        s = cls.settings(d / "node1", "node1", "cairn-test-" + uuid.uuid4().hex[:8], repo)
        s["discovery.type"] = "single-node"
        s.update(settings or {})
        node = cls(d / "node1", "node1", s, version=version, plugins=plugins, jvm=jvm)
        node.repo = repo
        if start:
            node.start()
            node.wait_green()
        return node

    def start(self, timeout=120):
        """Starts the node and waits until its HTTP port answers; a single node's new indices then
        get no replica (a transient cluster setting: not in a snapshot's global state), so green.
        A start by the service command (`servers_opensearch.py start DIR`) does not set it again."""
        self.launch()
        self.wait_answering(timeout)
        if self.single_node:
            self.http("PUT", "/_cluster/settings", {"transient": {"cluster.default_number_of_replicas": 0}})
        return self

    # -- process --

    def _port(self):
        return self.http_port

    def _expected_nodes(self):
        return 1 if self.single_node else None

    def launch(self):
        """Starts the JVM without waiting (a cluster's nodes are launched together)."""
        if self.running():
            return self
        cmd = ["java", *jvm_flags(self.version), *self.jvm, f"-Djava.io.tmpdir={self.dir / 'tmp'}",
               "-cp", os.path.join(lib_dir(self.version), "*"), LAUNCHER, str(self.dir), *self.plugins]
        (self.dir / "launch.json").write_text(json.dumps(cmd))  # for `servers_opensearch.py start DIR`
        self.proc = _launch(self.dir)
        return self

    def wait_answering(self, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            self._check_alive()
            try:
                _request(self.http_port, "GET", "/", timeout=2)
                return self
            except (OSError, OpenSearchError):
                time.sleep(0.3)
        self._fail(f"did not answer HTTP on 127.0.0.1:{self.http_port} within {timeout} s")

    def pid(self):
        """The node's PID while it runs: the process this object started, or the one in server.pid
        when its command line names this node's dir."""
        if self.proc is not None and self.proc.poll() is None:
            return self.proc.pid
        return _running_pid(self.dir)

    def running(self):
        return self.pid() is not None

    def stop(self, kill=False, timeout=60):
        """Stops the node by its PID: SIGTERM (the node closes cleanly) or SIGKILL; its data stays."""
        pid = self.pid()
        if pid is None:
            return
        try:
            os.killpg(pid, signal.SIGKILL if kill else signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.time() + timeout
        while self.running():
            if time.time() > deadline:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                deadline = time.time() + 30
            if self.proc is not None and self.proc.pid == pid:
                try:
                    self.proc.wait(timeout=0.2)
                except subprocess.TimeoutExpired:
                    pass
            else:
                time.sleep(0.2)

    def log_tail(self, chars=3000):
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no server log)"

    def _check_alive(self):
        if self.proc is not None and self.proc.poll() is not None:
            pytest.fail(f"OpenSearch {self.version} node {self.name} exited with {self.proc.returncode}; "
                        f"log {self.log}:\n{self.log_tail()}")

    def _fail(self, what):
        pytest.fail(f"OpenSearch node {self.name}: {what}; log {self.log}:\n{self.log_tail()}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop(kill=True)


def _launch(d):
    """Starts the node of dir d with the command its launch.json holds, output to d/server.log,
    its PID in d/server.pid; does not wait."""
    d = pathlib.Path(d)
    cmd = json.loads((d / "launch.json").read_text())
    (d / "tmp").mkdir(exist_ok=True)
    with open(d / "server.log", "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    (d / "server.pid").write_text(str(proc.pid))
    return proc


def _stop_pid(d, kill=False, timeout=60):
    """Stops the node whose PID d/server.pid holds (SIGTERM, SIGKILL after timeout), by that PID."""
    jvm.stop_pid(_running_pid, d, kill, timeout)


def _running_pid(d):
    """The PID in d/server.pid when that process is this node's JVM (its command line names d), else None."""
    d = pathlib.Path(d)
    try:
        pid = int((d / "server.pid").read_text().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().split(b"\0")
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return None
    except (OSError, ValueError, IndexError):
        return None
    return pid if LAUNCHER.encode() in cmd and str(d).encode() in cmd else None


class OpenSearchCluster(_Client):
    """n nodes (node1..noden) of one cluster on loopback, every one cluster-manager eligible and a
    data node, sharing one path.repo directory (`repo`). A context manager: started and green on
    entry, every node SIGKILLed on exit (their data dies with the test's temp dir)."""

    def __init__(self, base, n=3, version=VERSION, settings=None, plugins=None, jvm=()):
        require(version)
        self.base = pathlib.Path(base)
        self.version = version
        self.repo = self.base / "repo"
        self.repo.mkdir(parents=True, exist_ok=True)
        self.cluster_name = "cairn-test-" + uuid.uuid4().hex[:8]
        ports = [(free_port(), free_port()) for _ in range(n)]
        names = [f"node{i}" for i in range(1, n + 1)]
        self.nodes = []
        for name, (hp, tp) in zip(names, ports):
            d = self.base / name
            s = OpenSearch.settings(d, name, self.cluster_name, self.repo, hp, tp)
            s["discovery.seed_hosts"] = [f"127.0.0.1:{p}" for _, p in ports]
            s["cluster.initial_cluster_manager_nodes"] = names
            s.update(settings or {})
            self.nodes.append(OpenSearch(d, name, s, version=version, plugins=plugins, jvm=jvm))

    def node(self, i):
        """Node i (1-based) or by name."""
        if isinstance(i, str):
            return next(n for n in self.nodes if n.name == i)
        return self.nodes[i - 1]

    def live(self):
        return [n for n in self.nodes if n.running()]

    def _port(self):
        live = self.live()
        if not live:
            pytest.fail(f"OpenSearch cluster {self.cluster_name}: no node runs")
        return live[0].http_port

    def _expected_nodes(self):
        return len(self.live())

    def _check_alive(self):
        for n in self.nodes:
            if n.proc is not None and n.proc.poll() is not None and not n._stopped:
                n._check_alive()

    def _fail(self, what):
        tails = "\n".join(f"---- {n.name} ({n.log}):\n{n.log_tail(1500)}" for n in self.nodes)
        pytest.fail(f"OpenSearch cluster {self.cluster_name}: {what}\n{tails}")

    def start(self, timeout=180):
        """Launches every node, waits until each answers HTTP and the cluster is green with all of them."""
        deadline = time.time() + timeout
        try:
            for n in self.nodes:
                n._stopped = False
                n.launch()
            for n in self.nodes:
                n.wait_answering(timeout=max(1, deadline - time.time()))
            self.wait_status("green", nodes=len(self.nodes), timeout=max(1, deadline - time.time()))
        except BaseException:
            self.stop(kill=True)
            raise
        return self

    def stop(self, kill=False, timeout=60):
        """Stops every node by its PID, all at once (SIGTERM, SIGKILL for one still there after timeout)."""
        live = [(n, n.pid()) for n in self.nodes]
        for n, pid in live:
            n._stopped = True
            if pid is not None:
                try:
                    os.killpg(pid, signal.SIGKILL if kill else signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for n, pid in live:
            if pid is not None:
                n.stop(kill=kill, timeout=timeout)

    def kill_node(self, i):
        """SIGKILL to node i by its PID; its data stays. The cluster's requests go to the others."""
        n = self.node(i)
        n._stopped = True
        n.stop(kill=True)
        return n

    def start_node(self, i, timeout=120):
        """Starts a stopped node again on its data, ports and config; waits until the cluster has it."""
        n = self.node(i)
        n._stopped = False
        n.start(timeout=timeout)
        deadline = time.time() + timeout
        while time.time() < deadline:
            h = self.health(timeout=10)
            if h.get("number_of_nodes") == len(self.live()):
                return n
            time.sleep(0.3)
        self._fail(f"node {n.name} did not join within {timeout} s")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop(kill=True)


def make_cds_archive(version, work):
    """Writes cds_archive(version): a single node of that version started in `work` with
    -XX:ArchiveClassesAtExit, made to do what the tests do (an index with a custom analyser and
    mappings, _bulk, a search, a stored script, an fs snapshot with the global state, a restore),
    and stopped with SIGTERM (the JVM writes the archive as it exits). Written under a temporary
    name and renamed, so a run that dies leaves no half archive. Returns its path."""
    archive = cds_archive(version)
    tmp = f"{archive}.tmp{os.getpid()}"
    n = OpenSearch.single(pathlib.Path(work) / "cds", version=version, start=False,
                          jvm=[f"-XX:ArchiveClassesAtExit={tmp}"])
    try:
        n.start()
        n.wait_green()
        n.http("PUT", "/cds", {
            "settings": {"analysis": {"analyzer": {"a": {"type": "custom", "tokenizer": "standard",
                                                         "filter": ["lowercase", "asciifolding", "porter_stem"]}}}},
            "mappings": {"properties": {"t": {"type": "text", "analyzer": "a"}, "k": {"type": "keyword"},
                                        "f": {"type": "scaled_float", "scaling_factor": 10}, "d": {"type": "date"}}}})
        n.http("POST", "/_aliases", {"actions": [{"add": {"index": "cds", "alias": "cds-alias"}}]})
        n.bulk("cds", ({"t": f"Cafés {i}", "k": str(i), "f": i / 10, "d": "2026-11-29"} for i in range(200)))
        n.http("POST", "/cds-alias/_search", {"query": {"match": {"t": "cafe"}}})
        n.http("PUT", "/_scripts/cds", {"script": {"lang": "painless", "source": "doc['f'].value * 2"}})
        n.http("PUT", "/_snapshot/r", {"type": "fs", "settings": {"location": str(n.repo)}})
        n.http("PUT", "/_snapshot/r/s?wait_for_completion=true", {"include_global_state": True})
        n.http("POST", "/_snapshot/r/s/_restore?wait_for_completion=true",
               {"indices": "cds", "rename_pattern": "cds", "rename_replacement": "cds2"})
        n.wait_green()
    finally:
        n.stop()
    return jvm.keep_archive(tmp, archive, n.log)


if __name__ == "__main__":
    # A service command for a test node (the agent starts and stops it the way the
    # tests do, by the PID in DIR/server.pid), or the class-data archive.
    import sys
    if len(sys.argv) == 3 and sys.argv[1] == "cds":
        jvm.archive_command(sys.argv, cds_archive, make_cds_archive, "cairn-opensearch-cds-")
    if len(sys.argv) != 3 or sys.argv[1] not in ("start", "stop", "kill"):
        sys.exit(f"usage: {sys.argv[0]} start|stop|kill DIR | cds VERSION")
    d = pathlib.Path(sys.argv[2])
    if sys.argv[1] == "stop":
        _stop_pid(d)
    elif sys.argv[1] == "kill":
        _stop_pid(d, kill=True)
    elif _running_pid(d) is None:
        _launch(d)
    sys.exit(0)
