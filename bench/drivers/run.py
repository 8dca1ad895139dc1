#!/usr/bin/python3
"""
bench/drivers/run.py -- the drivers' benchmark (issue 10): cairn's etcd,
ZooKeeper and Prometheus drivers against the servers' own tools and restic,
on real servers (Debian's packages), in one invocation on the same data.

Standard library only. See README.md next to this file for method and caveats.

Parts (--parts, any subset; they always run in this order):
  etcd        `etcdctl snapshot save FILE` vs the etcd driver's backup into a
              fresh encrypted repository (cairn-etcd-steps), alternated, --runs
              rounds, medians; plus the repeated backup into the same repository
  size        repository size, cairn vs restic, on the same etcd snapshot file,
              the etcd data directory (bbolt file + WAL) and Prometheus blocks
  dedup       second backup of an unchanged etcd (bytes added, dedup ratio),
              then after 1% of the keys were rewritten, then after compaction
  zookeeper   the driver's in-place snapshot (stage()) at 1x and 10x data
  prometheus  the driver's in-place snapshot (admin API snapshot + what the
              driver does with it) at 1x and 10x data

Progress goes to stderr; the markdown report goes to stdout and to --out.
"""
import argparse
import base64
import importlib.util
import json
import os
import platform
import queue
import random
import re
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import types
import urllib.error
import urllib.request

MiB = 1 << 20
GiB = 1 << 30
HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
INTEGRATION = os.path.join(REPO_ROOT, "tests", "integration")
PARTS = ("etcd", "size", "dedup", "zookeeper", "prometheus")
SEED_DEFAULT = 20240601
ETCD_GEN_VERSION = 2   # bump when the etcd fill changes: the cache is rebuilt
PROM_GEN_VERSION = 1


# ----------------------------------------------------------------------------- shared code
# The repository benchmark's measuring code (Runner: wall, CPU, peak RSS, sync
# before/after), du, markdown and host helpers: imported, not copied.

def _load_repo_bench():
    spec = importlib.util.spec_from_file_location(
        "cairn_bench_repo", os.path.join(REPO_ROOT, "bench", "repo", "run.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


rb = _load_repo_bench()
log, loud, remove, du_bytes, md_table = rb.log, rb.loud, rb.remove, rb.du_bytes, rb.md_table
now_iso, write_secret, tool_version, host_info = rb.now_iso, rb.write_secret, rb.tool_version, rb.host_info


def _import_servers():
    """tests/integration's server helpers. They import pytest for pytest.fail and
    @pytest.fixture only; a stand-in keeps this script standard-library only."""
    if "pytest" not in sys.modules:
        shim = types.ModuleType("pytest")

        class Failed(RuntimeError):
            pass

        def fail(msg="", pytrace=True):
            raise Failed(msg)
        shim.fail, shim.Failed = fail, Failed
        shim.fixture = lambda *a, **k: (a[0] if a and callable(a[0]) else (lambda f: f))
        sys.modules["pytest"] = shim
    sys.path.insert(0, INTEGRATION)
    import servers_etcd
    import servers_prometheus
    return servers_etcd, servers_prometheus


servers_etcd, servers_prometheus = _import_servers()


def parse_size(text):
    m = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]?)(i?B)?\s*", text, re.I)
    if not m:
        raise argparse.ArgumentTypeError("not a size: %r (e.g. 1G, 64M, 512MiB)" % text)
    mult = {"": 1, "K": 1 << 10, "M": MiB, "G": GiB, "T": 1 << 40}[m.group(2).upper()]
    return int(float(m.group(1)) * mult)


def human(n):
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return ("%.0f %s" if unit == "B" else "%.1f %s") % (n, unit)
        n /= 1024


def f_s(v, nd=2):
    return "-" if v is None else ("%." + str(nd) + "f") % v


def f_mib(v, signed=False):
    return "-" if v is None else (("%+.2f" if signed else "%.1f") % (v / MiB))


def median(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def ratio(a, b, nd=2):
    if a is None or b is None or not b:
        return None, "n/a"
    return a / b, ("%." + str(nd) + "f") % (a / b)


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RESTIC_", "BORG_", "CAIRN_", "ETCDCTL_"))}
    env.update(extra)
    return env


def http_json(url, body=None, timeout=120):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        raise RuntimeError("%s: HTTP %d: %s" % (url, e.code, e.read()[:500].decode(errors="replace")))


# ----------------------------------------------------------------------------- etcd data
# Kubernetes-like objects (JSON, as CRDs and `kubectl get -o json` show them):
# random uids, resource versions, timestamps, IPs, image digests and secrets
# next to repetitive structure (managedFields, conditions, labels). Built-in
# objects are protobuf in a real cluster's etcd: somewhat less compressible.

NAMESPACES = ("default", "kube-system", "monitoring", "payments", "checkout", "search", "ingress-nginx",
              "logging", "batch", "data-platform", "auth", "cart", "catalog", "notifications")
APPS = ("api", "web", "worker", "cron", "gateway", "redis", "postgres", "kafka-consumer", "indexer",
        "scheduler", "frontend", "billing", "ledger", "mailer", "exporter", "sidecar-injector")
WORDS = ("backoff", "pulling", "image", "started", "created", "container", "scheduled", "node", "ready",
         "liveness", "probe", "failed", "succeeded", "volume", "mounted", "killing", "unhealthy", "readiness",
         "timeout", "connection", "refused", "successfully", "assigned", "replica", "scaled", "endpoint",
         "service", "config", "reloaded", "evicted", "memory", "pressure", "quota", "exceeded", "restart")
KINDS = (("pods", 0.30), ("events", 0.25), ("configmaps", 0.13), ("secrets", 0.10), ("leases", 0.10),
         ("replicasets", 0.07), ("services", 0.05))


class K8sObjects:
    """Deterministic (per seed) stream of (key, value) Kubernetes-like records."""

    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.rv = 4_000_000
        acc, self.cum = 0.0, []
        for k, w in KINDS:
            acc += w
            self.cum.append((acc, k))

    def uid(self):
        h = "%032x" % self.rng.getrandbits(128)
        return "%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])

    def ts(self):
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1_690_000_000 + self.rng.randrange(40_000_000)))

    def ip(self, a=10):
        r = self.rng
        return "%d.%d.%d.%d" % (a, r.randrange(256), r.randrange(256), r.randrange(1, 255))

    def words(self, lo, hi):
        r = self.rng
        return " ".join(r.choice(WORDS) for _ in range(r.randint(lo, hi)))

    def hexs(self, n):
        return "%0*x" % (n, self.rng.getrandbits(4 * n))

    def meta(self, kind, ns, name, extra=""):
        r = self.rng
        self.rv += r.randint(1, 40)
        app = name.split("-")[0]
        ts = self.ts()
        return ('"metadata":{"name":"%s","namespace":"%s","uid":"%s","resourceVersion":"%d",'
                '"creationTimestamp":"%s","labels":{"app.kubernetes.io/name":"%s",'
                '"app.kubernetes.io/part-of":"%s","app.kubernetes.io/managed-by":"Helm","tier":"%s"}%s,'
                '"managedFields":[{"manager":"kube-controller-manager","operation":"Update","apiVersion":"v1",'
                '"time":"%s","fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{"f:labels":{".":{},'
                '"f:app.kubernetes.io/name":{},"f:tier":{}}},"f:spec":{}}}]}' % (
                    name, ns, self.uid(), self.rv, ts, app, ns, r.choice(("backend", "frontend", "data")),
                    extra, ts))

    def pod(self, ns, name):
        r = self.rng
        containers, statuses = [], []
        for c in range(r.choice((1, 1, 2, 3))):
            cname = r.choice(APPS) + ("" if c == 0 else "-%d" % c)
            env = ",".join('{"name":"%s","value":"%s"}' % (
                r.choice(("LOG_LEVEL", "DB_HOST", "CACHE_TTL", "API_TOKEN", "REGION", "FEATURE_FLAGS",
                          "OTEL_ENDPOINT", "SESSION_KEY", "WORKERS")) + "_%d" % k,
                self.hexs(32) if r.random() < 0.3 else r.choice(("info", "debug", "eu-west-1", "300", "8",
                                                                 "postgres.%s.svc:5432" % ns)))
                for k in range(r.randint(3, 12)))
            containers.append(
                '{"name":"%s","image":"registry.example.com/%s/%s:v%d.%d.%d","ports":[{"containerPort":%d,'
                '"protocol":"TCP"}],"env":[%s],"resources":{"limits":{"cpu":"%dm","memory":"%dMi"},'
                '"requests":{"cpu":"%dm","memory":"%dMi"}},"livenessProbe":{"httpGet":{"path":"/healthz",'
                '"port":%d},"periodSeconds":10},"imagePullPolicy":"IfNotPresent"}' % (
                    cname, ns, cname, r.randint(0, 3), r.randint(0, 40), r.randint(0, 200),
                    r.choice((8080, 9090, 3000, 5432)), env, r.choice((250, 500, 1000, 2000)),
                    r.choice((256, 512, 1024, 4096)), r.choice((50, 100, 250)), r.choice((128, 256, 512)),
                    r.choice((8080, 9090))))
            statuses.append(
                '{"name":"%s","ready":true,"restartCount":%d,"containerID":"containerd://%s",'
                '"imageID":"registry.example.com/%s/%s@sha256:%s","started":true,"state":{"running":'
                '{"startedAt":"%s"}}}' % (cname, r.choice((0, 0, 0, 1, 3)), self.hexs(64), ns, cname,
                                          self.hexs(64), self.ts()))
        owner = ',"ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"%s","uid":"%s",' \
                '"controller":true}]' % (name.rsplit("-", 1)[0], self.uid())
        conds = ",".join('{"type":"%s","status":"True","lastTransitionTime":"%s"}' % (t, self.ts())
                         for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled"))
        return ('{"kind":"Pod","apiVersion":"v1",%s,"spec":{"containers":[%s],"restartPolicy":"Always",'
                '"terminationGracePeriodSeconds":30,"dnsPolicy":"ClusterFirst","serviceAccountName":"%s",'
                '"nodeName":"node-%03d","schedulerName":"default-scheduler","tolerations":[{"key":'
                '"node.kubernetes.io/not-ready","operator":"Exists","effect":"NoExecute","tolerationSeconds":300}]},'
                '"status":{"phase":"Running","conditions":[%s],"hostIP":"%s","podIP":"%s","startTime":"%s",'
                '"containerStatuses":[%s],"qosClass":"Burstable"}}' % (
                    self.meta("Pod", ns, name, owner), ",".join(containers), name.split("-")[0],
                    r.randrange(400), conds, self.ip(172), self.ip(), self.ts(), ",".join(statuses)))

    def event(self, ns, name):
        r = self.rng
        return ('{"kind":"Event","apiVersion":"v1",%s,"involvedObject":{"kind":"Pod","namespace":"%s",'
                '"name":"%s","uid":"%s","apiVersion":"v1","resourceVersion":"%d","fieldPath":"spec.containers{%s}"},'
                '"reason":"%s","message":"%s","source":{"component":"kubelet","host":"node-%03d"},'
                '"firstTimestamp":"%s","lastTimestamp":"%s","count":%d,"type":"%s","reportingComponent":"kubelet",'
                '"reportingInstance":"node-%03d"}' % (
                    self.meta("Event", ns, name), ns, name.rsplit(".", 1)[0], self.uid(), self.rv - 7,
                    r.choice(APPS), r.choice(("Pulled", "Created", "Started", "BackOff", "Unhealthy", "Killing",
                                              "Scheduled", "FailedMount")),
                    self.words(8, 40), r.randrange(400), self.ts(), self.ts(), r.randint(1, 500),
                    r.choice(("Normal", "Normal", "Warning")), r.randrange(400)))

    def configmap(self, ns, name):
        r = self.rng
        lines = []
        for _ in range(r.randint(8, 300)):
            k = ".".join(r.choice(WORDS) for _ in range(r.randint(1, 3)))
            v = r.choice((str(r.randint(0, 100000)), r.choice(WORDS), "true", "false",
                          "https://%s.%s.svc.cluster.local:%d/%s" % (r.choice(APPS), ns, r.choice((80, 443, 8080)),
                                                                     r.choice(WORDS)), self.hexs(16)))
            lines.append("%s = %s" % (k, v))
        body = "\\n".join(lines)
        return '{"kind":"ConfigMap","apiVersion":"v1",%s,"data":{"application.properties":"%s"}}' % (
            self.meta("ConfigMap", ns, name), body)

    def secret(self, ns, name):
        r = self.rng
        data = ",".join('"%s":"%s"' % (k, base64.b64encode(r.randbytes(r.choice((32, 64, 256, 1200, 2400)))).decode())
                        for k in r.sample(("tls.crt", "tls.key", "password", "token", "ca.crt", "api-key"),
                                          r.randint(1, 3)))
        return '{"kind":"Secret","apiVersion":"v1",%s,"data":{%s},"type":"Opaque"}' % (
            self.meta("Secret", ns, name), data)

    def lease(self, ns, name):
        r = self.rng
        return ('{"kind":"Lease","apiVersion":"coordination.k8s.io/v1",%s,"spec":{"holderIdentity":"%s_%s",'
                '"leaseDurationSeconds":15,"acquireTime":"%s.%06dZ","renewTime":"%s.%06dZ","leaseTransitions":%d}}' % (
                    self.meta("Lease", ns, name), name, self.uid(), self.ts()[:-1], r.randrange(10 ** 6),
                    self.ts()[:-1], r.randrange(10 ** 6), r.randint(0, 20)))

    def replicaset(self, ns, name):
        pod = self.pod(ns, name + "-x")
        spec = pod[pod.index('"spec":'):pod.index(',"status":')]
        return ('{"kind":"ReplicaSet","apiVersion":"apps/v1",%s,"spec":{"replicas":%d,"selector":{"matchLabels":'
                '{"app.kubernetes.io/name":"%s"}},"template":{%s}},"status":{"replicas":3,"readyReplicas":3,'
                '"availableReplicas":3,"observedGeneration":%d}}' % (
                    self.meta("ReplicaSet", ns, name), self.rng.randint(1, 12), name.split("-")[0], spec,
                    self.rng.randint(1, 90)))

    def service(self, ns, name):
        r = self.rng
        return ('{"kind":"Service","apiVersion":"v1",%s,"spec":{"ports":[{"name":"http","protocol":"TCP","port":%d,'
                '"targetPort":%d}],"selector":{"app.kubernetes.io/name":"%s"},"clusterIP":"%s","clusterIPs":["%s"],'
                '"type":"ClusterIP","sessionAffinity":"None","ipFamilies":["IPv4"]},"status":{"loadBalancer":{}}}' % (
                    self.meta("Service", ns, name), r.choice((80, 443, 8080)), r.choice((8080, 9090)),
                    name.split("-")[0], self.ip(), self.ip()))

    def key(self, i):
        r = self.rng
        x = r.random()
        kind = next(k for acc, k in self.cum if x <= acc or acc == self.cum[-1][0])
        ns = r.choice(NAMESPACES)
        app = r.choice(APPS)
        if kind == "events":
            name = "%s-%s-%s.%x" % (app, self.hexs(10), self.hexs(5), 0x17a0000000000000 + i)
        else:
            name = "%s-%07d-%s" % (app, i, self.hexs(5))
        return "/registry/%s/%s/%s" % (kind, ns, name)

    def value(self, key):
        kind, ns, name = key.split("/")[2:5]
        return getattr(self, {"pods": "pod", "events": "event", "configmaps": "configmap", "secrets": "secret",
                              "leases": "lease", "replicasets": "replicaset", "services": "service"}[kind])(ns, name)


def b64(s):
    return base64.b64encode(s if isinstance(s, bytes) else s.encode()).decode()


class EtcdLoader:
    """Puts many keys fast through etcd's v3 JSON gateway (POST /v3/kv/txn, 1000
    puts per transaction, <= 3 MiB), two requests in flight."""

    MAX_OPS, MAX_BYTES = 1000, 3 * MiB

    def __init__(self, url, threads=2):
        self.url = url
        self.q = queue.Queue(maxsize=4)
        self.errors = []
        self.threads = [threading.Thread(target=self._worker, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()
        self.ops, self.nbytes, self.sent = [], 0, 0

    def _worker(self):
        while True:
            body = self.q.get()
            if body is None:
                return
            try:
                if not self.errors:
                    http_json(self.url + "/v3/kv/txn", body)
            except Exception as e:  # noqa: BLE001 -- reported by close()
                self.errors.append(str(e))

    def put(self, key, value):
        self.ops.append({"requestPut": {"key": b64(key), "value": b64(value)}})
        self.nbytes += len(key) + len(value)
        if len(self.ops) >= self.MAX_OPS or self.nbytes >= self.MAX_BYTES:
            self.flush()

    def flush(self):
        if self.ops:
            if self.errors:
                raise RuntimeError("etcd put failed: %s" % self.errors[0])
            self.q.put({"success": self.ops})
            self.sent += self.nbytes
            self.ops, self.nbytes = [], 0

    def close(self):
        self.flush()
        for _ in self.threads:
            self.q.put(None)
        for t in self.threads:
            t.join()
        if self.errors:
            raise RuntimeError("etcd put failed: %s" % self.errors[0])


def etcd_status(url):
    return http_json(url + "/v3/maintenance/status", {})


def etcd_heartbeat(url):
    """One write (a node lease renewed), as a live cluster always has."""
    http_json(url + "/v3/kv/put", {"key": b64("/registry/leases/kube-node-lease/node-000"),
                                   "value": b64('{"kind":"Lease","renewTime":"%s"}' % now_iso())})


def etcd_compact(url):
    """Compaction at the current revision (physical), then one write: the member's
    revision stays above the compacted one, as in a live cluster. (Right after a
    compaction at the current revision, etcd refuses HashKV at that revision --
    HashByRev: rev <= compactRev -- and so does the etcd driver's backup.)"""
    rev = int(etcd_status(url)["header"]["revision"])
    http_json(url + "/v3/kv/compaction", {"revision": str(rev), "physical": True}, timeout=600)
    etcd_heartbeat(url)
    return rev


def make_member(base, extra_args=()):
    """An EtcdMember of tests/integration with extra etcd flags (appended: the last one wins)."""
    m = servers_etcd.EtcdMember(base, "bench")
    orig = m.write_scripts

    def write_scripts():
        orig()
        text = m.start_script.read_text()
        i = text.index(" >>'")
        m.start_script.write_text(text[:i] + "".join(" " + shlex.quote(a) for a in extra_args) + text[i:])
    m.write_scripts = write_scripts
    return m


def quota_for(size):
    return max(2 * GiB, 3 * size)


class EtcdData:
    """A stopped etcd data dir of >= size bytes of bbolt database, built once and
    cached in <workdir>/etcd-<size>-seed<N>/ (data/, keys.txt, meta.json)."""

    def __init__(self, workdir, size, seed):
        self.size, self.seed = size, seed
        self.dir = os.path.join(workdir, "etcd-%d-seed%d" % (size, seed))
        self.data = os.path.join(self.dir, "data")
        self.keys_file = os.path.join(self.dir, "keys.txt")
        self.meta_file = os.path.join(self.dir, "meta.json")
        self.meta = {}

    def key(self):
        return {"size": self.size, "seed": self.seed, "version": ETCD_GEN_VERSION,
                "etcd": tool_version(["etcd", "--version"])}

    def ensure(self):
        if os.path.isfile(self.meta_file):
            with open(self.meta_file) as f:
                meta = json.load(f)
            db = os.path.join(self.data, "member", "snap", "db")
            if meta.get("key") == self.key() and os.path.isfile(db) and \
                    os.path.getsize(db) == meta.get("db_file_bytes"):
                self.meta = meta
                log("etcd data: cached %s (db %s, %d keys)" % (self.dir, human(meta["db_file_bytes"]),
                                                               meta["keys"]))
                return self
            log("etcd data: cache %s is stale: rebuilding" % self.dir)
        remove(self.dir)
        os.makedirs(self.dir)
        self._build()
        return self

    def _build(self):
        t0 = time.monotonic()
        log("etcd data: filling a new etcd to a %s database (one-off, cached afterwards)" % human(self.size))
        base = os.path.join(self.dir, "build")
        # --snapshot-count=100: raft snapshots (and WAL purges) as a long-running member has them.
        m = make_member(base, ["--quota-backend-bytes=%d" % quota_for(self.size), "--snapshot-count=100"])
        gen = K8sObjects(self.seed)
        n = 0
        try:
            m.start()
            loader = EtcdLoader(m.client_url)
            with open(self.keys_file, "w") as kf:
                last_check = 0
                while True:
                    k = gen.key(n)
                    loader.put(k, gen.value(k))
                    kf.write(k + "\n")
                    n += 1
                    if loader.sent - last_check >= max(self.size // 50, 2 * MiB):
                        last_check = loader.sent
                        st = etcd_status(m.client_url)
                        db = int(st["dbSize"])
                        log("    %d keys, %s sent, db %s (in use %s)" % (
                            n, human(loader.sent), human(db), human(int(st.get("dbSizeInUse") or 0))))
                        if int(st.get("dbSizeInUse") or db) >= self.size:
                            break
            loader.close()
            # Churn as a live cluster has it: 3% of the objects updated (leases,
            # status), then compacted (kube-apiserver compacts every 5 minutes):
            # the database keeps free pages with old revisions in them.
            rng = random.Random(self.seed + 17)
            with open(self.keys_file) as f:
                keys = f.read().split()
            loader = EtcdLoader(m.client_url)
            for k in rng.sample(keys, len(keys) * 3 // 100):
                loader.put(k, gen.value(k))
            loader.close()
            etcd_compact(m.client_url)
            st = etcd_status(m.client_url)
        finally:
            m.stop()
        os.rename(str(m.data_dir), self.data)
        remove(base)
        db = os.path.join(self.data, "member", "snap", "db")
        wal = os.path.join(self.data, "member", "wal")
        self.meta = {"key": self.key(), "keys": n, "db_size_status": int(st["dbSize"]),
                     "revision": int(st["header"]["revision"]), "db_file_bytes": os.path.getsize(db),
                     "db_in_use": int(st.get("dbSizeInUse") or 0),
                     "wal_bytes": du_bytes(wal), "data_dir_bytes": du_bytes(self.data),
                     "built": now_iso(), "build_seconds": round(time.monotonic() - t0, 1)}
        with open(self.meta_file, "w") as f:
            json.dump(self.meta, f, indent=1)
        log("etcd data: %d keys, db %s, WAL %s, built in %.0f s" % (
            n, human(self.meta["db_file_bytes"]), human(self.meta["wal_bytes"]), self.meta["build_seconds"]))

    def keys(self):
        with open(self.keys_file) as f:
            return f.read().split()


# ----------------------------------------------------------------------------- Prometheus data


class PromData:
    """Persisted TSDB blocks made by `promtool tsdb create-blocks-from openmetrics`
    (2 h blocks), `series` series over `hours` hours at `step` s, random-walk
    values (no two alike: XOR chunks of ~5-9 bytes/sample). Cached in
    <workdir>/prom-<series>x<hours>h-seed<N>/blocks; regenerated when the newest
    sample is older than 10 days (the server's retention would start deleting)."""

    STEP = 30

    def __init__(self, workdir, series, hours, seed):
        self.series, self.hours, self.seed = series, hours, seed
        self.dir = os.path.join(workdir, "prom-%dx%dh-seed%d" % (series, hours, seed))
        self.blocks = os.path.join(self.dir, "blocks")
        self.meta_file = os.path.join(self.dir, "meta.json")
        self.meta = {}

    def key(self):
        return {"series": self.series, "hours": self.hours, "step": self.STEP, "seed": self.seed,
                "version": PROM_GEN_VERSION}

    def ensure(self):
        if os.path.isfile(self.meta_file):
            with open(self.meta_file) as f:
                meta = json.load(f)
            if meta.get("key") == self.key() and os.path.isdir(self.blocks) and \
                    time.time() - meta.get("end", 0) < 10 * 86400:
                self.meta = meta
                return self
        remove(self.dir)
        os.makedirs(self.dir)
        t0 = time.monotonic()
        end = int(time.time()) - 4 * 3600  # clear of the head the server will have
        end -= end % 7200
        start = end - self.hours * 3600
        src = os.path.join(self.dir, "input.om")
        log("prometheus data: %d series x %d h at %d s (promtool backfill, one-off)" % (
            self.series, self.hours, self.STEP))
        rng = random.Random(self.seed)
        fams = ("node_network_receive_bytes", "http_request_duration_seconds", "process_resident_memory",
                "container_cpu_usage", "kafka_consumer_lag", "etcd_disk_wal_fsync_seconds",
                "haproxy_backend_current_sessions", "jvm_gc_pause_seconds")
        per = [self.series // len(fams) + (1 if i < self.series % len(fams) else 0) for i in range(len(fams))]
        with open(src, "w") as f:
            for fam, count in zip(fams, per):
                f.write("# TYPE %s gauge\n" % fam)
                for s in range(count):
                    labels = '{instance="10.%d.%d.%d:9100",job="%s",pod="%s-%05d"}' % (
                        s // 65536 % 256, s // 256 % 256, s % 256, fam.split("_")[0], fam.split("_")[0], s)
                    v = rng.uniform(0, 1000)
                    lines = []
                    for t in range(start, end, self.STEP):
                        v += rng.gauss(0, 3)
                        lines.append("%s%s %.6f %d\n" % (fam, labels, v, t))
                    f.write("".join(lines))
            f.write("# EOF\n")
        os.makedirs(self.blocks)
        p = subprocess.run([shutil.which("promtool") or "/usr/bin/promtool", "tsdb", "create-blocks-from",
                            "openmetrics", src, self.blocks], capture_output=True, text=True)
        remove(src)
        if p.returncode != 0:
            raise RuntimeError("promtool failed: %s" % (p.stdout + p.stderr)[-2000:])
        self.meta = {"key": self.key(), "start": start, "end": end, "bytes": du_bytes(self.blocks),
                     "blocks": len(os.listdir(self.blocks)), "samples": self.series * self.hours * 3600 // self.STEP,
                     "built": now_iso(), "build_seconds": round(time.monotonic() - t0, 1)}
        with open(self.meta_file, "w") as f:
            json.dump(self.meta, f, indent=1)
        log("prometheus data: %d blocks, %s, built in %.0f s" % (
            self.meta["blocks"], human(self.meta["bytes"]), self.meta["build_seconds"]))
        return self


# ----------------------------------------------------------------------------- the bench


class Bench:
    def __init__(self, args):
        self.args = args
        self.workdir = args.workdir
        self.stamp = time.strftime("%Y%m%d-%H%M%S")
        self.run_dir = os.path.join(self.workdir, "run")
        self.runner = rb.Runner(os.path.join(self.workdir, "logs", self.stamp), args.timeout)
        self.secrets = os.path.join(self.workdir, "secrets")
        self.pw = os.path.join(self.secrets, "repo.pw")
        write_secret(self.pw)
        self.measurements = []
        self.failures = []
        self.notes = []
        self.results = {}
        self.member = None
        self.etcd = None

    # -- one measured command --------------------------------------------------------
    def cmd(self, part, label, argv, env=None, measured=True, rnd=None, sync=True, **extra):
        if measured and self.args.settle > 0 and part == "etcd":
            time.sleep(self.args.settle)  # let the disk finish the previous step's write-back (see README)
        tag = "%s-%s%s" % (part, re.sub(r"[^A-Za-z0-9_.-]+", "_", label), "" if rnd is None else "-r%d" % rnd)
        tag = "%03d-%s" % (len(self.measurements), tag)
        log("%-10s %s%s%s" % (part, label, "" if rnd is None else " (round %d)" % (rnd + 1),
                              "" if measured else " (setup)"))
        m = self.runner.run(argv, env or clean_env(), None, tag, sync=sync)
        m.update(part=part, label=label, round=rnd, measured=measured, **extra)
        self.measurements.append(m)
        if m["status"] != "ok":
            m["failure"] = "exit code %d" % m["rc"]
            self.failures.append(m)
            loud("%s: %s FAILED (exit %d)\n$ %s\n--- stderr tail ---\n%s" % (
                part, label, m["rc"], shlex.join(argv), m["stderr_tail"].strip()[-1500:]))
        elif measured:
            log("    wall %.2fs  cpu %.2fs  rss %.1f MiB" % (m["wall_s"], m.get("cpu_s", 0),
                                                             (m["rss_kib"] or 0) / 1024))
        return m

    def record(self, part, label, **fields):
        m = dict(part=part, label=label, status="ok", measured=True, **fields)
        self.measurements.append(m)
        return m

    def fail(self, part, label, why):
        m = {"part": part, "label": label, "status": "FAILED", "failure": why, "argv": [], "stderr_tail": "",
             "measured": True}
        self.measurements.append(m)
        self.failures.append(m)
        loud("%s: %s FAILED: %s" % (part, label, why))

    def etcd_cpu(self):
        """CPU seconds (user+sys) the etcd server has used so far."""
        pid = self.member.pid() if self.member else None
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, TypeError, ValueError, IndexError):
            return None

    def with_server_cpu(self, fn):
        c0 = self.etcd_cpu()
        m = fn()
        c1 = self.etcd_cpu()
        if c0 is not None and c1 is not None:
            m["server_cpu_s"] = round(c1 - c0, 3)
        return m

    # -- tools -------------------------------------------------------------------------
    def cairn_init(self, repo, part):
        remove(repo)
        os.makedirs(os.path.dirname(repo), exist_ok=True)
        return self.cmd(part, "cairnctl repo init", [self.args.cairnctl, "repo", "init", "--repo", repo,
                                                     "--password-file", self.pw], measured=False)

    def cairn_driver_backup(self, repo, part, label, rnd=None):
        settings = os.path.join(self.run_dir, "etcd-settings.toml")
        meta = os.path.join(self.run_dir, "etcd-metadata.json")
        before = du_bytes(repo)
        m = self.with_server_cpu(lambda: self.cmd(
            part, label, [self.args.etcd_steps, "--settings", settings, "--repo", repo, "--password-file", self.pw,
                          "backup", "--metadata-out", meta], rnd=rnd))
        after = du_bytes(repo)
        m.update(repo_bytes=after, repo_growth=after - before)
        if m["status"] == "ok":
            try:
                with open(meta) as f:
                    m["etcd_metadata"] = json.load(f)
                m["input_bytes"] = int(m["etcd_metadata"].get("db_size") or 0) + 32
            except (OSError, ValueError):
                pass
        return m

    def cairn_file_backup(self, repo, src, part, label, profile=None, rnd=None):
        before = du_bytes(repo)
        argv = [self.args.cairnctl, "repo", "backup", "--repo", repo, "--password-file", self.pw, "--json"]
        argv += ["--chunk-profile", profile] if profile else []
        m = self.cmd(part, label, argv + [src], rnd=rnd)
        after = du_bytes(repo)
        m.update(repo_bytes=after, repo_growth=after - before, input_bytes=du_bytes(src))
        return m

    def restic_env(self, cache):
        return clean_env(RESTIC_PASSWORD_FILE=self.pw, RESTIC_CACHE_DIR=cache)

    def restic_init(self, repo, part):
        remove(repo)
        remove(repo + ".cache")
        os.makedirs(os.path.dirname(repo), exist_ok=True)
        m = self.cmd(part, "restic init", [self.args.restic, "-r", repo, "init"],
                     env=self.restic_env(repo + ".cache"), measured=False)
        if m["status"] == "ok" and "restic_config" not in self.results:
            p = subprocess.run([self.args.restic, "-r", repo, "cat", "config"], capture_output=True, text=True,
                               env=self.restic_env(repo + ".cache"))
            try:
                self.results["restic_config"] = json.loads(p.stdout)
            except ValueError:
                self.results["restic_config"] = {"error": p.stderr[-300:]}
        return m

    def restic_backup(self, repo, src, part, label, rnd=None):
        before = du_bytes(repo)
        m = self.cmd(part, label, [self.args.restic, "-r", repo, "backup", "--json", src],
                     env=self.restic_env(repo + ".cache"), rnd=rnd)
        after = du_bytes(repo)
        m.update(repo_bytes=after, repo_growth=after - before, input_bytes=du_bytes(src),
                 cache_bytes=du_bytes(repo + ".cache"))
        return m

    def etcdctl_save(self, path, part, label, rnd=None, measured=True):
        remove(path)
        # etcdctl bounds `snapshot save` by --command-timeout (default 5 s): raised.
        argv = [servers_etcd.ETCDCTL, "--endpoints=" + self.member.client_url, "--command-timeout=%ds" % self.args.timeout,
                "snapshot", "save", path]
        m = self.with_server_cpu(lambda: self.cmd(part, label, argv, env=clean_env(ETCDCTL_API="3"),
                                                  rnd=rnd, measured=measured))
        if m["status"] == "ok":
            m["input_bytes"] = os.path.getsize(path)
        return m

    def cairn_latest_summary(self, repo):
        p = subprocess.run([self.args.cairnctl, "repo", "snapshots", "--repo", repo, "--password-file", self.pw,
                            "--json"], capture_output=True, text=True)
        try:
            snaps = json.loads(p.stdout.strip().splitlines()[-1])
            snaps = [s for s in snaps if isinstance(s, dict) and "summary" in s]
            snaps.sort(key=lambda s: s.get("time", ""))
            return snaps[-1]["summary"] if snaps else {}
        except (ValueError, IndexError, KeyError):
            return {}

    # -- etcd server -------------------------------------------------------------------
    def start_etcd(self):
        data = EtcdData(self.args.cache_dir, self.args.etcd_size, self.args.seed).ensure()
        self.etcd = data
        base = os.path.join(self.run_dir, "etcd")
        m = make_member(base, ["--quota-backend-bytes=%d" % quota_for(self.args.etcd_size)])
        log("etcd: copying the cached data dir (not measured)")
        os.makedirs(m.dir, exist_ok=True)
        rb.run_checked(["cp", "-a", data.data, str(m.data_dir)])
        self.member = m
        m.start()
        etcd_heartbeat(m.client_url)  # caches built before etcd_compact() wrote one: see there
        st = etcd_status(m.client_url)
        with open(os.path.join(self.run_dir, "etcd-settings.toml"), "w") as f:
            f.write(m.settings_toml())
        self.results["etcd_server"] = {
            "version": st.get("version"), "db_size": int(st["dbSize"]), "revision": int(st["header"]["revision"]),
            "keys": data.meta["keys"], "db_file_bytes": data.meta["db_file_bytes"],
            "db_in_use": int(st.get("dbSizeInUse") or 0),
            "wal_bytes": data.meta["wal_bytes"], "data_dir_bytes": data.meta["data_dir_bytes"],
            "cache": data.dir, "fill_seconds": data.meta.get("build_seconds")}
        log("etcd: member at %s, db %s, %d keys" % (m.client_url, human(int(st["dbSize"])), data.meta["keys"]))

    def stop_etcd(self):
        if self.member:
            self.member.stop()
            self.member = None

    # -- part: etcd --------------------------------------------------------------------
    def part_etcd(self):
        d = os.path.join(self.run_dir, "etcd-part")
        rows = {"etcdctl": [], "first": [], "repeat": []}
        for rnd in range(self.args.runs):
            steps = ["etcdctl", "cairn"]
            if rnd % 2:
                steps.reverse()   # alternate which goes first
            for s in steps:
                if s == "etcdctl":
                    path = os.path.join(d, "etcdctl-snapshot.db")
                    os.makedirs(d, exist_ok=True)
                    rows["etcdctl"].append(self.etcdctl_save(path, "etcd", "etcdctl snapshot save", rnd))
                    remove(path)
                else:
                    repo = os.path.join(d, "cairn-repo")
                    if self.cairn_init(repo, "etcd")["status"] != "ok":
                        continue
                    rows["first"].append(self.cairn_driver_backup(repo, "etcd", "cairn driver, fresh repo", rnd))
                    if rnd == 0:
                        self.results["etcd_driver_summary"] = self.cairn_latest_summary(repo)
                    rows["repeat"].append(self.cairn_driver_backup(repo, "etcd", "cairn driver, same repo again", rnd))
                    remove(repo)
        remove(d)
        self.results["etcd"] = rows

    # -- part: size --------------------------------------------------------------------
    def part_size(self):
        d = os.path.join(self.run_dir, "size")
        os.makedirs(d, exist_ok=True)
        out = []
        snapdir = os.path.join(d, "snapshot")
        os.makedirs(snapdir)
        snapfile = os.path.join(snapdir, "etcd-snapshot.db")
        self.etcdctl_save(snapfile, "size", "etcdctl snapshot save (input)", measured=False)
        # restic reads the whole data dir; etcd must not write to it meanwhile: the cached,
        # stopped copy is read.
        datasets = [("etcd snapshot file (`etcdctl snapshot save`, named etcd-snapshot.db)", snapdir,
                     [("cairnctl repo backup (page profile, by name)", None),
                      ("cairnctl repo backup --chunk-profile standard", "standard")]),
                    ("etcd data dir (member/snap/db + WAL, etcd stopped)", self.etcd.data,
                     [("cairnctl repo backup (db: page, WAL: standard)", None)])]
        prom = self.prom_data(10)
        if prom:
            datasets.append(("Prometheus blocks (%d blocks, %d series, promtool)" % (
                prom.meta["blocks"], prom.series), prom.blocks, [("cairnctl repo backup", None)]))
        for name, src, cairn_variants in datasets:
            row = {"dataset": name, "input_bytes": du_bytes(src), "cairn": [], "restic": None}
            for label, profile in cairn_variants:
                repo = os.path.join(d, "cairn-repo")
                if self.cairn_init(repo, "size")["status"] == "ok":
                    m = self.cairn_file_backup(repo, src, "size", "%s: %s" % (name.split(" (")[0], label), profile)
                    m["variant"] = label
                    m["summary"] = self.cairn_latest_summary(repo)
                    row["cairn"].append(m)
                remove(repo)
            repo = os.path.join(d, "restic-repo")
            if self.restic_init(repo, "size")["status"] == "ok":
                row["restic"] = self.restic_backup(repo, src, "size", "%s: restic backup" % name.split(" (")[0])
            remove(repo)
            remove(repo + ".cache")
            out.append(row)
        # The driver's own repository (the stream, as the agent stores it).
        repo = os.path.join(d, "cairn-repo")
        if self.cairn_init(repo, "size")["status"] == "ok":
            m = self.cairn_driver_backup(repo, "size", "etcd snapshot: cairn driver stream")
            m["variant"] = "cairn etcd driver (the Snapshot stream, stdin:etcd-snapshot.db)"
            m["summary"] = self.cairn_latest_summary(repo)
            out[0]["cairn"].append(m)
        remove(d)
        self.results["size"] = out

    # -- part: dedup -------------------------------------------------------------------
    def part_dedup(self):
        d = os.path.join(self.run_dir, "dedup")
        snapdir = os.path.join(d, "snapshot")
        os.makedirs(snapdir)
        snapfile = os.path.join(snapdir, "etcd-snapshot.db")
        drv, fil, res = (os.path.join(d, n) for n in ("cairn-driver-repo", "cairn-file-repo", "restic-repo"))
        ok = all(m["status"] == "ok" for m in (self.cairn_init(drv, "dedup"), self.cairn_init(fil, "dedup"),
                                               self.restic_init(res, "dedup")))
        steps = []
        if not ok:
            self.results["dedup"] = steps
            return

        def step(name):
            row = {"step": name, "driver": self.cairn_driver_backup(drv, "dedup", "%s: cairn driver" % name)}
            save = self.etcdctl_save(snapfile, "dedup", "%s: etcdctl snapshot save" % name)
            row["etcdctl"] = save
            row["file"] = self.cairn_file_backup(fil, snapdir, "dedup", "%s: cairnctl repo backup (file)" % name)
            row["restic"] = self.restic_backup(res, snapdir, "dedup", "%s: restic backup (file)" % name)
            row["db_size"] = int(etcd_status(self.member.client_url)["dbSize"])
            steps.append(row)

        step("first")
        step("unchanged")
        keys = self.etcd.keys()
        rng = random.Random(self.args.seed + 99)
        pick = rng.sample(keys, max(1, len(keys) // 100))
        gen = K8sObjects(self.args.seed + 99)
        loader = EtcdLoader(self.member.client_url)
        t0 = time.monotonic()
        for k in pick:
            loader.put(k, gen.value(k))
        loader.close()
        self.notes.append("dedup: %d of %d keys (1%%) rewritten with new objects in %.1f s" % (
            len(pick), len(keys), time.monotonic() - t0))
        step("1% keys rewritten")
        rev = etcd_compact(self.member.client_url)
        self.notes.append("dedup: then compacted at revision %d (physical), as kube-apiserver does every 5 min" % rev)
        step("then compacted")
        remove(d)
        self.results["dedup"] = steps

    # -- part: zookeeper ---------------------------------------------------------------
    ZK_LINE = re.compile(r"(\d+) znodes of 1 KiB, newest snapshot (\d+) KiB, (\d+) linked, (\d+) copied: "
                         r"stage\(\) best of 5 ([0-9.eE+-]+) ms")

    def part_zookeeper(self):
        exe = self.args.unit_zookeeper
        rows = []
        runs = 1 if self.args.small else self.args.runs
        for rnd in range(runs):
            m = self.cmd("zookeeper", "unit_zookeeper [.bench] (stage() at 2000 and 20000 znodes)",
                         [exe, "[.bench]", "--durations", "yes"], rnd=rnd)
            text = m.get("stdout_tail", "") + m.get("stderr_tail", "")
            try:
                with open(os.path.join(self.runner.logdir, [f for f in os.listdir(self.runner.logdir)
                                                             if f.startswith("%03d-" % (len(self.measurements) - 1))
                                                             and f.endswith(".out")][0])) as f:
                    text = f.read()
            except (OSError, IndexError):
                pass
            text = " ".join(text.split())  # Catch2 wraps its warnings
            found = [dict(zip(("znodes", "snapshot_kib", "linked", "copied", "stage_ms"),
                              (int(a), int(b), int(c), int(dd), float(e))))
                     for a, b, c, dd, e in self.ZK_LINE.findall(text)]
            m["zk"] = found
            if m["status"] == "ok" and len(found) != 2:
                m["status"] = "FAILED"
                m["failure"] = "expected 2 result lines from the [.bench] case, found %d" % len(found)
                self.failures.append(m)
                loud("zookeeper: %s" % m["failure"])
            rows.append(m)
        self.results["zookeeper"] = rows

    # -- part: prometheus --------------------------------------------------------------
    def prom_data(self, scale):
        if not shutil.which("promtool") and not os.path.exists("/usr/bin/promtool"):
            return None
        series, hours = (40, 6) if self.args.small else (400, 12)
        return PromData(self.args.cache_dir, series * scale, hours, self.args.seed).ensure()

    def part_prometheus(self):
        out = []
        runs = max(3, self.args.runs) if not self.args.small else 2
        for scale in (1, 10):
            data = self.prom_data(scale)
            base = os.path.join(self.run_dir, "prometheus-%dx" % scale)
            remove(base)
            p = servers_prometheus.Prometheus(base)
            # Freeze the block layout (no level compaction during the measurement) and keep
            # every backfilled block (retention).
            text = p.start_sh.read_text()
            assert "--storage.tsdb.path=" in text
            p.start_sh.write_text(text.replace(
                "--storage.tsdb.path=", "--storage.tsdb.retention.time=60d --storage.tsdb.min-block-duration=2h "
                "--storage.tsdb.max-block-duration=2h --storage.tsdb.path="))
            rb.run_checked(["cp", "-a", data.blocks, str(p.data)])
            row = {"scale": scale, "series": data.series, "blocks_input": data.meta["blocks"],
                   "input_bytes": data.meta["bytes"], "samples": data.meta["samples"], "runs": []}
            try:
                p.start()
                time.sleep(3 if self.args.small else 10)  # let it scrape itself: a small live head, as in life
                for rnd in range(runs):
                    for skip_head in (False, True):
                        r = self.prom_snapshot(p, skip_head)
                        r.update(round=rnd, skip_head=skip_head, scale=scale)
                        self.measurements.append(dict(part="prometheus", label="snapshot %dx%s" % (
                            scale, " skip_head" if skip_head else ""), status="ok", measured=True, **r))
                        row["runs"].append(r)
                        log("prometheus %2dx%s round %d: api %.3fs, read_blocks %.3fs, remove %.3fs "
                            "(%d blocks, %s)" % (scale, " skip_head" if skip_head else "", rnd + 1, r["api_s"],
                                                 r["read_s"], r["remove_s"], r["blocks"], human(r["bytes"])))
                # What a copy would cost (the contrast to links): cp -a of the blocks.
                cp_dst = os.path.join(base, "copy")
                m = self.cmd("prometheus", "cp -a of the persisted blocks (%dx, for contrast)" % scale,
                             ["cp", "-a", data.blocks, cp_dst])
                m["scale"] = scale
                row["cp"] = m
                remove(cp_dst)
            except Exception as e:  # noqa: BLE001 -- reported
                self.fail("prometheus", "%dx" % scale, "%s\n%s" % (e, p.log_tail()))
            finally:
                try:
                    p.stop()
                except Exception:  # noqa: BLE001
                    pid = p.pid()
                    if pid:
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except OSError:
                            pass
                remove(base)
            out.append(row)
        self.results["prometheus"] = out

    @staticmethod
    def prom_snapshot(p, skip_head):
        """What the driver's snapshot() does: POST the admin snapshot, read every
        block's meta.json and sum its bytes (tsdb.cc read_blocks); what on_done does:
        remove the snapshot directory."""
        t0 = time.monotonic()
        j = http_json(p.url + "/api/v1/admin/tsdb/snapshot" + ("?skip_head=true" if skip_head else ""), {})
        t1 = time.monotonic()
        snap = os.path.join(str(p.data), "snapshots", j["data"]["name"])
        blocks, nbytes, files, samples = 0, 0, 0, 0
        for e in os.scandir(snap):
            meta = os.path.join(e.path, "meta.json")
            if e.is_dir(follow_symlinks=False) and os.path.isfile(meta):
                with open(meta) as f:
                    mj = json.load(f)
                blocks += 1
                samples += int(mj.get("stats", {}).get("numSamples", 0))
                for dp, _, fns in os.walk(e.path):
                    for fn in fns:
                        nbytes += os.path.getsize(os.path.join(dp, fn))
                        files += 1
        t2 = time.monotonic()
        # hard links? (the driver relies on it: immutable_links)
        linked = sum(1 for dp, _, fns in os.walk(snap) for fn in fns
                     if os.stat(os.path.join(dp, fn)).st_nlink > 1)
        t3 = time.monotonic()
        shutil.rmtree(snap)
        t4 = time.monotonic()
        return {"api_s": round(t1 - t0, 4), "read_s": round(t2 - t1, 4), "remove_s": round(t4 - t3, 4),
                "total_s": round((t1 - t0) + (t2 - t1) + (t4 - t3), 4), "blocks": blocks, "bytes": nbytes,
                "files": files, "files_linked": linked, "samples": samples}

    # -- all ---------------------------------------------------------------------------
    def run(self):
        parts = self.args.parts
        remove(self.run_dir)
        os.makedirs(self.run_dir)
        try:
            if {"etcd", "size", "dedup"} & set(parts):
                self.start_etcd()
            for part in PARTS:
                if part in parts:
                    log("=== part %s" % part)
                    busy = busy_now(exclude=[self.member.pid() if self.member else None])
                    self.notes.append("other processes using CPU as part %s started: %s" % (part, busy))
                    try:
                        getattr(self, "part_" + part)()
                    except Exception as e:  # noqa: BLE001 -- one part failing does not stop the others
                        import traceback
                        self.fail(part, "part", "%s: %s\n%s" % (type(e).__name__, e, traceback.format_exc()[-1500:]))
        finally:
            self.stop_etcd()
            remove(self.run_dir)


# ----------------------------------------------------------------------------- report


def ok(ms):
    return [m for m in ms if m and m.get("status") == "ok"]


def wall_row(label, ms):
    g = ok(ms)
    walls = [m["wall_s"] for m in g]
    inp = median([m.get("input_bytes") for m in g])
    w = median(walls)
    thr = (inp / MiB / w) if inp and w else None
    status = "%d/%d ok" % (len(g), len(ms)) + ("" if len(g) == len(ms) else " **FAILED %d**" % (len(ms) - len(g)))
    return [label, status, f_s(w), "%s–%s" % (f_s(min(walls)), f_s(max(walls))) if walls else "-",
            f_s(median([m["wall_s"] + m["flush_s"] for m in g])), "-" if thr is None else "%.0f" % thr,
            f_s(median([m.get("cpu_s") for m in g])),
            "-" if not g or median([m.get("rss_kib") for m in g]) is None else
            "%.0f" % (median([m.get("rss_kib") for m in g]) / 1024),
            f_s(median([m.get("server_cpu_s") for m in g])),
            f_mib(median([m.get("repo_bytes") for m in g])), f_mib(median([m.get("repo_growth") for m in g]), True)]


def avg_chunk(summary):
    if not summary or not summary.get("blobs_new"):
        return None
    return summary.get("data_added_raw", 0) / summary["blobs_new"]


def render(bench, header):
    a, R = bench.args, bench.results
    L = ["# cairn driver benchmark", ""] + ["- %s: %s" % (k, v) for k, v in header.items()] + [""]
    ratios = []
    if bench.failures:
        L += ["## FAILURES", ""]
        for m in bench.failures:
            err = (m.get("stderr_tail") or "").strip().splitlines()[-12:]
            L += ["- **%s: %s: %s**" % (m["part"], m["label"], m.get("failure"))]
            if m.get("argv"):
                L += ["  `$ %s`" % shlex.join(m["argv"])]
            L += (["  ```"] + ["  " + x for x in err] + ["  ```"]) if err else []
            L += [""]
    es = R.get("etcd_server")
    if es:
        L += ["etcd member: %s, bbolt db %s (%d bytes, %s in use), %d keys, revision %d; WAL %s; data dir %s "
              "(cached fill: %s, built in %s s)." % (
                  es["version"], human(es["db_size"]), es["db_size"], human(es["db_in_use"]), es["keys"], es["revision"],
                  human(es["wal_bytes"]), human(es["data_dir_bytes"]), es["cache"], es["fill_seconds"]), ""]
    if "etcd" in R:
        rows = R["etcd"]
        L += ["## 1. etcd: driver backup vs `etcdctl snapshot save` (same member, alternated, %d rounds)" % a.runs, "",
              md_table(["what", "runs", "wall s (median)", "wall min–max", "wall+sync s", "MiB/s", "CPU s",
                        "peak RSS MiB", "etcd server CPU s", "repo MiB after", "repo growth MiB"],
                       [wall_row("`etcdctl snapshot save FILE` (fsyncs the file)", rows["etcdctl"]),
                        wall_row("cairn etcd driver → fresh encrypted repository", rows["first"]),
                        wall_row("cairn etcd driver → same repository again", rows["repeat"])]), ""]
        e = median([m["wall_s"] for m in ok(rows["etcdctl"])])
        es_ = median([m["wall_s"] + m["flush_s"] for m in ok(rows["etcdctl"])])
        for key, lab in (("first", "first backup"), ("repeat", "repeated backup")):
            c = median([m["wall_s"] for m in ok(rows[key])])
            cs = median([m["wall_s"] + m["flush_s"] for m in ok(rows[key])])
            ratios.append(("etcd %s / etcdctl snapshot save, wall" % lab, ratio(c, e)[1],
                           "≤ 1.1" if key == "first" else ""))
            ratios.append(("etcd %s / etcdctl snapshot save, wall+sync" % lab, ratio(cs, es_)[1], ""))
        s = R.get("etcd_driver_summary") or {}
        if s:
            ac = avg_chunk(s)
            L += ["The driver's first backup (round 1): `data_added_raw` %s in %d new blobs, %s on average%s." % (
                human(s.get("data_added_raw", 0)), s.get("blobs_new", 0), human(ac) if ac else "-",
                "" if not ac else " — **the stream was chunked with the 1 MiB `standard` profile, not `page`**"
                if ac > 256 * 1024 else " (page-sized chunks)"), ""]
    if "size" in R:
        L += ["## 2. repository size: cairn vs restic (same input, one backup into a new repository)", ""]
        rows = []
        for ds in R["size"]:
            r = ds["restic"]
            rbytes = r["repo_bytes"] if r and r["status"] == "ok" else None
            for m in ds["cairn"]:
                cb = m["repo_bytes"] if m["status"] == "ok" else None
                ac = avg_chunk(m.get("summary"))
                rv = ratio(cb, rbytes)
                rows.append([ds["dataset"], m["variant"], f_mib(ds["input_bytes"]), f_mib(cb), f_mib(rbytes),
                             rv[1], "-" if ac is None else human(ac), f_s(m.get("wall_s")),
                             f_s(r.get("wall_s") if r else None)])
                if m["variant"].startswith("cairnctl repo backup") and "--chunk-profile" not in m["variant"]:
                    ratios.append(("repo size cairn/restic: %s" % ds["dataset"].split(" (")[0], rv[1], "≤ 1.0"))
                elif "driver" in m["variant"]:
                    ratios.append(("repo size cairn driver stream / restic of the saved file", rv[1], "≤ 1.0"))
        L += [md_table(["input", "cairn variant", "input MiB", "cairn repo MiB", "restic repo MiB",
                        "cairn/restic", "cairn avg new blob", "cairn backup s", "restic backup s"], rows), "",
              "restic repository config: `%s`; restic compresses with zstd `auto` by default in a v2 "
              "repository. cairn: `cairnctl repo init` defaults (zstd level 1). Repository sizes are "
              "apparent bytes (`du -sb`), restic's cache not included. \"avg new blob\" = "
              "`data_added_raw / blobs_new` of the snapshot (trees included): ~32 KiB means the page "
              "profile, ~1 MiB the standard one." % json.dumps(R.get("restic_config")), ""]
    if "dedup" in R and R["dedup"]:
        L += ["## 3. dedup: backups of one etcd into the same repository", ""]
        rows = []
        for st in R["dedup"]:
            cells = [st["step"], human(st["db_size"])]
            for k in ("driver", "file", "restic"):
                m = st[k]
                if m["status"] != "ok":
                    cells += ["FAILED", "-", "-"]
                    continue
                g, inp = m["repo_growth"], m.get("input_bytes") or 0
                cells += ["%s (%.2f%%)" % (f_mib(g, True), 100.0 * g / inp if inp else 0),
                          ("%.0f×" % (inp / g) if g > 0 else "∞") if st["step"] != "first" else "-"]
                cells.append(f_s(m["wall_s"]))
            rows.append(cells)
        L += [md_table(["step", "db size", "cairn driver: growth MiB (% of input)", "dedup ratio", "wall s",
                        "cairnctl file (page profile): growth", "dedup ratio", "wall s",
                        "restic file: growth", "dedup ratio", "wall s"], rows), "",
              "Growth = change of the repository's apparent size (`du -sb`) across the backup; dedup "
              "ratio = input bytes / growth. Input: the driver streams `Maintenance.Snapshot` (db + 32-byte "
              "hash); cairnctl and restic back up the file `etcdctl snapshot save` wrote right after it.", ""]
        for st in R["dedup"][1:]:
            if st["driver"]["status"] == "ok" and st["step"] == "unchanged":
                ratios.append(("dedup ratio, 2nd backup of unchanged etcd (driver)",
                               "%.0f×" % (st["driver"]["input_bytes"] / st["driver"]["repo_growth"])
                               if st["driver"]["repo_growth"] > 0 else "∞", ""))
    if "zookeeper" in R:
        zk = R["zookeeper"]
        found = [m["zk"] for m in zk if m.get("zk") and len(m["zk"]) == 2]
        L += ["## 4. ZooKeeper: in-place snapshot (the driver's `stage()`) as the data grows 10x", ""]
        if found:
            rows = []
            for i in range(2):
                x = [f[i] for f in found]
                rows.append([x[0]["znodes"], x[0]["snapshot_kib"], x[0]["linked"], x[0]["copied"],
                             f_s(median([v["stage_ms"] for v in x]), 3),
                             ", ".join(f_s(v["stage_ms"], 3) for v in x)])
            r10 = ratio(median([f[1]["stage_ms"] for f in found]), median([f[0]["stage_ms"] for f in found]))
            L += [md_table(["znodes (1 KiB each)", "newest snapshot KiB", "files linked", "files copied",
                            "stage() ms (median of best-of-5)", "per invocation"], rows), "",
                  "10x / 1x: **%s** (target: flat). From `%s \"[.bench]\"` (tests/unit/agent/zookeeper/"
                  "real_server_test.cc; snapCount 2000; best of 5 stage() calls per size, %d invocation(s))." % (
                      r10[1], os.path.relpath(a.unit_zookeeper, REPO_ROOT), len(found)), ""]
            ratios.append(("ZooKeeper in-place snapshot, 10x / 1x data", r10[1], "flat (≈ 1)"))
        else:
            L += ["_no result (see FAILURES)_", ""]
    if "prometheus" in R:
        L += ["## 5. Prometheus: in-place snapshot (admin API snapshot + the driver's block scan) as the data "
              "grows 10x", ""]
        rows, tot = [], {}
        for row in R["prometheus"]:
            for skip in (False, True):
                rs = [r for r in row["runs"] if r["skip_head"] == skip]
                if not rs:
                    continue
                t = median([r["total_s"] for r in rs])
                tot[(row["scale"], skip)] = t
                rows.append(["%dx" % row["scale"], row["series"], "%s, %d blocks" % (
                    human(row["input_bytes"]), row["blocks_input"]),
                    "no (`skip_head=true`)" if skip else "yes (driver default)",
                    f_s(median([r["api_s"] for r in rs]), 3), f_s(median([r["read_s"] for r in rs]), 3),
                    f_s(median([r["remove_s"] for r in rs]), 3), f_s(t, 3),
                    "%d/%d" % (rs[0]["files_linked"], rs[0]["files"]), len(rs),
                    f_s(row["cp"]["wall_s"], 3) if row.get("cp") and row["cp"]["status"] == "ok" else "-"])
        L += [md_table(["data", "series", "persisted blocks", "head included", "API s", "block scan s",
                        "remove s", "total s (median)", "files linked/total", "runs", "cp -a of blocks s"],
                       rows), ""]
        for skip in (False, True):
            r10 = ratio(tot.get((10, skip)), tot.get((1, skip)))
            lab = "Prometheus in-place snapshot, 10x / 1x data%s" % (" (skip_head)" if skip else "")
            ratios.append((lab, r10[1], "flat (≈ 1)" if not skip else ""))
        L += ["Data: `promtool tsdb create-blocks-from openmetrics` (2 h blocks, random-walk values, 30 s "
              "step); the 10x server has 10x the series over the same hours. The server runs with level "
              "compaction off (`--storage.tsdb.max-block-duration=2h`) so no compaction runs during the "
              "measurement, and scrapes itself every second (its head: a few hundred live series). API = "
              "`POST /api/v1/admin/tsdb/snapshot` (the head is written out as a new block unless "
              "`skip_head`); block scan = what the driver's `read_blocks` does (each `meta.json`, the "
              "blocks' sizes); remove = `on_done` removing the snapshot dir.", ""]
    if ratios:
        L += ["## Ratios", "", md_table(["what", "value", "target"], [list(r) for r in ratios]), ""]
    if bench.notes:
        L += ["## Notes", ""] + ["- " + n for n in bench.notes] + [""]
    L += ["Columns: wall = elapsed time of the command; wall+sync adds the `sync` right after it (data "
          "left dirty in the page cache); CPU = user+sys of the command and its descendants; peak RSS "
          "(%s); repo = apparent bytes (`du -sb`). Every command's output: %s." % (
              "GNU time" if bench.runner.gnu_time else "wait4, includes the harness's own", bench.runner.logdir), ""]
    return "\n".join(L), ratios


def busy_now(window=1.0, exclude=()):
    """Processes outside this benchmark that used >= 10% of a CPU over `window`
    seconds (a build, a test, another benchmark), by name and PID."""
    def sample():
        out = {}
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % pid) as f:
                    st = f.read()
            except OSError:
                continue
            comm = st[st.index("(") + 1:st.rindex(")")]
            f = st[st.rindex(")") + 2:].split()
            out[int(pid)] = (comm, int(f[1]), int(f[11]) + int(f[12]))  # name, ppid, utime+stime
        return out
    a = sample()
    time.sleep(window)
    b = sample()
    mine = {os.getpid()} | {p for p in exclude if p}
    changed = True
    while changed:  # our descendants (the servers we start are setsid'd but still ours by parentage)
        changed = False
        for pid, (_, ppid, _) in b.items():
            if ppid in mine and pid not in mine:
                mine.add(pid)
                changed = True
    hz = os.sysconf("SC_CLK_TCK")
    busy = []
    for pid, (comm, _, t) in b.items():
        if pid in mine or pid not in a:
            continue
        pct = 100.0 * (t - a[pid][2]) / hz / window
        if pct >= 10:
            busy.append("%s (pid %d, %.0f%% CPU)" % (comm, pid, pct))
    return ", ".join(sorted(busy)) or "none"


# ----------------------------------------------------------------------------- main


def source_state(args):
    """The commit the binaries were built from, as far as git can tell (uncommitted changes counted)."""
    try:
        head = subprocess.run(["git", "-C", REPO_ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=20).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO_ROOT, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=20).stdout.splitlines()
    except (OSError, subprocess.TimeoutExpired):
        return "n/a"
    built = [time.strftime("%Y-%m-%d %H:%M", time.localtime(os.path.getmtime(b)))
             for b in (args.cairnctl, args.etcd_steps) if os.path.exists(b)]
    return "%s%s; binaries built %s" % (head or "?", " + %d modified files" % len(dirty) if dirty else "",
                                       " / ".join(built) or "-")


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--etcd-size", type=parse_size, default=None,
                    help="bbolt database size to fill etcd to (default 1G; --small: 48M)")
    ap.add_argument("--runs", type=int, default=None, help="rounds, medians reported (default 3; --small: 1)")
    ap.add_argument("--parts", default=",".join(PARTS), help="subset of %s" % ",".join(PARTS))
    ap.add_argument("--small", action="store_true", help="a quick smoke run of every part (< 2 minutes)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"),
                    help="report and raw JSON (default bench/drivers/results)")
    ap.add_argument("--workdir", default="/var/tmp/cairn-bench-drivers",
                    help="working copies, repositories, logs (default /var/tmp/cairn-bench-drivers)")
    ap.add_argument("--cache-dir", default=None,
                    help="filled etcd data dirs and Prometheus blocks, kept between runs (default WORKDIR/cache)")
    ap.add_argument("--seed", type=int, default=SEED_DEFAULT)
    ap.add_argument("--cairnctl", default=os.path.join(REPO_ROOT, "build", "cairnctl", "cairnctl"))
    ap.add_argument("--etcd-steps", default=os.path.join(REPO_ROOT, "build", "tests", "cairn-etcd-steps"))
    ap.add_argument("--unit-zookeeper",
                    default=os.path.join(REPO_ROOT, "build", "tests", "unit", "agent", "zookeeper", "unit_zookeeper"))
    ap.add_argument("--restic", default=shutil.which("restic") or "/usr/bin/restic")
    ap.add_argument("--timeout", type=int, default=3600, help="per command, seconds")
    ap.add_argument("--settle", type=float, default=None,
                    help="seconds to wait before each measured command of the etcd part (default 10; --small: 0)")
    a = ap.parse_args(argv)
    a.parts = [p for p in a.parts.split(",") if p]
    for p in a.parts:
        if p not in PARTS:
            ap.error("unknown part %r (choose from %s)" % (p, ",".join(PARTS)))
    if a.etcd_size is None:
        a.etcd_size = 48 * MiB if a.small else GiB
    if a.settle is None:
        a.settle = 0.0 if a.small else 10.0
    if a.runs is None:
        a.runs = 1 if a.small else 3
    if a.runs < 1:
        ap.error("--runs must be >= 1")
    a.workdir = os.path.realpath(a.workdir)
    a.cache_dir = os.path.realpath(a.cache_dir or os.path.join(a.workdir, "cache"))
    return a


def missing_tools(a):
    need = {"etcd": [a.cairnctl, a.etcd_steps, servers_etcd.ETCD, servers_etcd.ETCDCTL],
            "size": [a.cairnctl, a.etcd_steps, a.restic, servers_etcd.ETCDCTL],
            "dedup": [a.cairnctl, a.etcd_steps, a.restic, servers_etcd.ETCDCTL],
            "zookeeper": [a.unit_zookeeper, "/usr/share/java/zookeeper.jar", shutil.which("java")],
            "prometheus": [servers_prometheus.PROMETHEUS, shutil.which("promtool")]}
    out = {}
    for part in a.parts:
        miss = [p or "(not on PATH)" for p in need[part] if not p or not os.path.exists(p)]
        if miss:
            out[part] = miss
    return out


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    os.makedirs(args.workdir, exist_ok=True)
    os.makedirs(args.cache_dir, exist_ok=True)
    t_start = time.monotonic()
    skipped = missing_tools(args)
    for part, miss in skipped.items():
        loud("SKIPPING part %s: missing %s" % (part, ", ".join(miss)))
    args.parts = [p for p in args.parts if p not in skipped]

    def on_term(signum, frame):
        raise SystemExit("terminated by signal %d" % signum)
    signal.signal(signal.SIGTERM, on_term)

    bench = Bench(args)
    header = {
        "command": shlex.join([sys.executable] + (sys.argv if argv is None else ["run.py"] + argv)),
        "date": now_iso(),
        "host": host_info(args.workdir),
        "other processes using CPU at start": busy_now(),
        "versions": "; ".join([
            "cairnctl: " + tool_version([args.cairnctl, "--version"]),
            "etcd: " + tool_version(["etcd", "--version"]).split(" / ")[0],
            "restic: " + tool_version([args.restic, "version"]),
            "prometheus: " + tool_version([servers_prometheus.PROMETHEUS, "--version"]).split(" / ")[0],
            "zookeeper: " + os.path.realpath("/usr/share/java/zookeeper.jar").rsplit("/", 1)[-1],
            "python " + platform.python_version()]),
        "cairn source": source_state(args),
        "parts": ",".join(args.parts) + ("; %d round(s), medians" % args.runs) +
        ("; SMALL smoke run" if args.small else ""),
        "etcd fill target": "%s bbolt database" % human(args.etcd_size),
    }
    if skipped:
        header["SKIPPED parts"] = "**%s**" % "; ".join("%s (missing %s)" % (p, ", ".join(m))
                                                      for p, m in skipped.items())
    try:
        bench.run()
    finally:
        header["other processes using CPU at end"] = busy_now()
        header["load avg at end"] = " ".join("%.2f" % x for x in os.getloadavg())
        header["duration"] = "%.0f s" % (time.monotonic() - t_start)
    report, ratio_rows = render(bench, header)
    print(report)
    os.makedirs(args.out, exist_ok=True)
    base = os.path.join(args.out, "%s%s" % (bench.stamp, "-small" if args.small else ""))
    with open(base + "-report.md", "w") as f:
        f.write(report + "\n")
    with open(base + "-raw.json", "w") as f:
        json.dump({"header": header, "results": bench.results, "measurements": bench.measurements,
                   "ratios": ratio_rows, "notes": bench.notes, "rss_floor_kib": bench.runner.floor,
                   "harness_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss},
                  f, indent=1, default=str)
    log("report: %s-report.md  raw: %s-raw.json" % (base, base))
    return 1 if (bench.failures or skipped) else 0


if __name__ == "__main__":
    sys.exit(main())
