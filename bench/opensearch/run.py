#!/usr/bin/python3
"""
bench/opensearch/run.py -- the search-cluster driver's benchmark, on a real
OpenSearch 2.19 node, through a real controller and agent.

One node holding --gib GiB of generated documents (an index store of about
that size), measured in one run on the same data:

  floor    the server's own snapshot into a fresh filesystem repository
           (`PUT _snapshot/floor/<name>?wait_for_completion=true`), and its
           restore from there (the indices deleted, `_restore`, green)
  cairn    `cairnctl backup create --component search --wait` into a fresh
           cairn repository; then 1 % of the documents rewritten and backed
           up again (repository growth against the first backup's); then
           `cairnctl restore SET --component search --wait` with its safety
           backup, and again with --skip-safety-backup, each checked
           (document counts per index as backed up)

Rounds (--runs) alternate floor and cairn; medians are reported, with the
ratios the targets name: backup <= 1.3x the server's own snapshot, the 1 %
backup storing <= 0.1x of the first, restore <= 1.3x the server's own.

Standard library plus what tests/integration's helpers use; run it with
/usr/bin/python3. Progress goes to stderr; the markdown report to stdout and
--out (default bench/opensearch/results/, ignored by git).
"""
import argparse
import importlib.util
import json
import os
import random
import re
import shutil
import sys
import time

MiB = 1 << 20
GiB = 1 << 30
HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))


def _load_drivers_bench():
    spec = importlib.util.spec_from_file_location(
        "cairn_bench_drivers", os.path.join(REPO_ROOT, "bench", "drivers", "run.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


db = _load_drivers_bench()  # its pytest stand-in puts tests/integration on sys.path
rb = db.rb
log, loud, remove, du_bytes, md_table = rb.log, rb.loud, rb.remove, rb.du_bytes, rb.md_table
median, ratio, busy_now = db.median, db.ratio, db.busy_now

os.environ.setdefault("CAIRN_BUILD_DIR", os.path.join(REPO_ROOT, "build"))
import cluster as itc  # noqa: E402
import servers_opensearch as sos  # noqa: E402

# The shipped control-plane defaults (docs/configuration.md), not the tests' 1 s liveness.
itc.HEARTBEAT_MS, itc.LIVENESS = 2000, 5

INDICES = ("logs-a", "logs-b", "events")
WORDS = ("cluster node shard replica snapshot restore index segment merge refresh flush query "
         "filter term match range aggregation bucket metric latency error warning request response "
         "timeout retry backoff queue worker thread memory disk network packet socket").split()


def f_s(v, nd=2):
    return "-" if v is None else ("%." + str(nd) + "f") % v


def f_mib(v):
    return "-" if v is None else "%.1f" % (v / MiB)


# ----------------------------------------------------------------------------- data

class Corpus:
    """Generated log-like documents: a pool of messages combined at random (fast to
    make, compressible like real logs), with ids so 1 % can be rewritten later."""

    def __init__(self, seed):
        self.rnd = random.Random(seed)
        self.pool = [" ".join(self.rnd.choice(WORDS) for _ in range(self.rnd.randint(20, 60)))
                     for _ in range(5000)]

    def doc(self, i, gen=0):
        r = self.rnd
        return {"_id": i, "ts": 1_700_000_000_000 + i * 37, "host": "node-%03d" % (i % 200),
                "level": ("info", "warn", "error")[i % 3], "gen": gen,
                "message": r.choice(self.pool) + " " + "%016x" % r.getrandbits(64),
                "detail": r.choice(self.pool), "bytes": r.randint(0, 1 << 20),
                "tags": [r.choice(WORDS) for _ in range(3)]}


def store_bytes(node):
    rows = node.http("GET", "/_cat/indices?format=json&bytes=b")
    return sum(int(r["store.size"]) for r in rows if not r["index"].startswith("."))


def counts(node):
    node.http("POST", "/_refresh")
    return {ix: node.http("GET", f"/{ix}/_count")["count"] for ix in INDICES}


def bulk(node, ix, docs, tries=30):
    """node.bulk, again after a pause when the node pushes back (HTTP 429: a circuit breaker
    while its heap is full of indexing buffers), as a client feeding a real cluster would."""
    for t in range(tries):
        try:
            return node.bulk(ix, docs, chunk=len(docs), refresh=False)
        except sos.OpenSearchError as e:
            if e.status != 429 or t == tries - 1:
                raise
            time.sleep(2)


def load(node, corpus, gib, chunk=4000):
    """Bulk-indexes documents round-robin into INDICES until the stores hold `gib` GiB."""
    for ix in INDICES:
        node.http("PUT", f"/{ix}", {"settings": {"number_of_shards": 2, "number_of_replicas": 0,
                                                 "refresh_interval": "30s"},
                                    "mappings": {"properties": {"message": {"type": "text"},
                                                                "detail": {"type": "text"},
                                                                "host": {"type": "keyword"},
                                                                "level": {"type": "keyword"}}}})
    target, i, t0 = gib * GiB, 0, time.monotonic()
    while True:
        for ix in INDICES:
            bulk(node, ix, [corpus.doc(i + k) for k in range(chunk)])
            i += chunk
        if i % (chunk * 30) < chunk * len(INDICES):
            node.http("POST", "/_flush")
            have = store_bytes(node)
            log("load    %d documents, %.0f MiB of index store (%.0f s)" % (i, have / MiB, time.monotonic() - t0))
            if have >= target:
                break
    node.http("POST", "/_flush")
    node.http("POST", "/_refresh")
    return i


def rewrite(node, corpus, n_docs, fraction, gen):
    """Rewrites `fraction` of the documents (random ids, new content): what a day of updates does."""
    ids = corpus.rnd.sample(range(n_docs), int(n_docs * fraction))
    per = {ix: [] for ix in INDICES}
    for i in ids:
        # load() puts id i into INDICES[(i // chunk) % 3]; an update goes where the doc lives
        per[INDICES[(i // 4000) % len(INDICES)]].append(corpus.doc(i, gen))
    for ix, docs in per.items():
        for k in range(0, len(docs), 4000):
            bulk(node, ix, docs[k:k + 4000])
    node.http("POST", "/_flush")
    node.http("POST", "/_refresh")
    return len(ids)


# ----------------------------------------------------------------------------- the bench

class Bench:
    def __init__(self, args):
        self.args = args
        self.wd = args.workdir
        self.runner = rb.Runner(os.path.join(self.wd, "logs"), args.timeout)
        self.rows = []  # {round, what, wall_s, bytes}
        self.failures = []
        self.node = None
        self.c = None
        self.n_docs, self.store, self.load_s = 0, 0, 0.0

    def timed(self, rnd, what, fn, **extra):
        if self.args.settle:
            time.sleep(self.args.settle)
        os.sync()
        t0 = time.monotonic()
        out = fn()
        wall = time.monotonic() - t0
        os.sync()
        row = dict(round=rnd, what=what, wall_s=round(wall, 3), **extra)
        self.rows.append(row)
        log("%-8s %-38s %7.2f s" % ("r%d" % (rnd + 1), what, wall))
        return out, row

    def ctl(self, rnd, what, *argv, **extra):
        m = self.runner.run([str(itc.CTL), *argv], self.c.env(), None,
                            "r%d-%s" % (rnd, re.sub(r"[^A-Za-z0-9_.-]+", "_", what)[:50]), sync=True)
        row = dict(round=rnd, what=what, wall_s=m["wall_s"], status=m["status"], **extra)
        self.rows.append(row)
        if m["status"] != "ok":
            self.fail("%s: exit %s\n%s\n%s" % (what, m["rc"], m["stdout_tail"][-1500:], m["stderr_tail"][-1500:]))
        log("%-8s %-38s %7.2f s%s" % ("r%d" % (rnd + 1), what, m["wall_s"], "" if m["status"] == "ok" else " FAILED"))
        return m, row

    def fail(self, why):
        self.failures.append(why)
        loud("FAILED: " + why)

    # -- the server's own snapshot and restore: the floor --
    def floor_round(self, rnd, want):
        loc = os.path.join(str(self.node.repo), "floor-%d" % rnd)
        remove(loc)
        self.node.http("PUT", "/_snapshot/floor", {"type": "fs", "settings": {"location": loc}})
        r, row = self.timed(rnd, "floor: server snapshot", lambda: self.node.http(
            "PUT", "/_snapshot/floor/s1?wait_for_completion=true",
            {"indices": ",".join(INDICES), "include_global_state": True}, timeout=3600))
        row["bytes"] = du_bytes(loc)
        if r["snapshot"]["state"] != "SUCCESS":
            self.fail("floor snapshot: %s" % r["snapshot"]["state"])

        def restore():
            self.node.http("DELETE", "/" + ",".join(INDICES))
            self.node.http("POST", "/_snapshot/floor/s1/_restore?wait_for_completion=true",
                           {"indices": ",".join(INDICES), "include_global_state": False}, timeout=3600)
            self.node.wait_status("green", timeout=600)
        self.timed(rnd, "floor: server restore", restore)
        if counts(self.node) != want:
            self.fail("floor restore: counts %s, want %s" % (counts(self.node), want))
        self.node.http("DELETE", "/_snapshot/floor")
        remove(loc)

    # -- cairn --
    def control_plane(self, rnd):
        base = os.path.join(self.wd, "cairn-%d" % rnd)
        remove(base)
        snap_path = os.path.join(str(self.node.repo), "cairn-%d" % rnd)
        c = itc.Cluster(base, liveness=itc.LIVENESS)
        self.c = c
        c.init()
        c.start_controller()
        c.add_agent("search-1", components=(
            '[[component]]\nname = "search"\ndriver = "opensearch"\n'
            'url = "http://127.0.0.1:%d"\nsnapshot_repository = "cairn-bench-%d"\nsnapshot_path = "%s"\n'
            % (self.node.http_port, rnd, snap_path)))
        c.enrol("search-1")
        self.c = c
        return c, snap_path

    def cairn_round(self, rnd, want, n_docs):
        try:
            c, snap_path = self.control_plane(rnd)
        except (AssertionError, Exception) as e:  # noqa: BLE001  (a setup failure is a result too)
            self.fail("cairn: control plane: %s" % str(e)[:1500])
            if self.c:
                self.c.stop_all()
                self.c = None
            return
        try:
            before = du_bytes(str(c.repo))
            m, row = self.ctl(rnd, "cairn: backup", "backup", "create", "--component", "search", "--wait")
            first = du_bytes(str(c.repo)) - before
            row["bytes"] = first
            if m["status"] != "ok":
                return
            set1 = itc.backup_set_id(m["stdout_tail"])
            changed, _ = self.timed(rnd, "rewrite 1 %% of the documents (setup)",
                                    lambda: rewrite(self.node, self.node_corpus, n_docs, self.args.change, rnd + 1),
                                    setup=True)
            want_after = counts(self.node)
            before = du_bytes(str(c.repo))
            m, row = self.ctl(rnd, "cairn: backup after 1 % rewritten", "backup", "create", "--component", "search",
                              "--wait")
            row["bytes"] = du_bytes(str(c.repo)) - before
            row["first_bytes"] = first
            row["changed_docs"] = changed
            if m["status"] != "ok":
                return
            set2 = itc.backup_set_id(m["stdout_tail"])
            for label, extra in (("cairn: restore (with its safety backup)", []),
                                 ("cairn: restore --skip-safety-backup", ["--skip-safety-backup"])):
                self.node.http("DELETE", "/" + INDICES[0])  # something for the restore to do
                m, row = self.ctl(rnd, label, "restore", set2, "--component", "search", *extra, "--wait")
                if m["status"] == "ok" and counts(self.node) != want_after:
                    self.fail("%s: counts %s, want %s" % (label, counts(self.node), want_after))
            _ = set1, want
        finally:
            c.stop_all()
            try:
                self.node.http("DELETE", "/_snapshot/cairn-bench-%d" % rnd)
            except Exception:  # noqa: BLE001  (the driver may not have registered it)
                pass
            remove(snap_path)
            remove(c.base)
            self.c = None

    def run(self):
        a = self.args
        self.node = sos.OpenSearch.single(os.path.join(self.wd, "os"), jvm=["-Xms%dm" % a.heap_mib,
                                                                           "-Xmx%dm" % a.heap_mib])
        try:
            self.node_corpus = Corpus(a.seed)
            t0 = time.monotonic()
            n_docs = load(self.node, self.node_corpus, a.gib)
            self.load_s = time.monotonic() - t0
            self.n_docs = n_docs
            self.store = store_bytes(self.node)
            log("load    %d documents, %.0f MiB of index store in %.0f s" % (n_docs, self.store / MiB, self.load_s))
            for rnd in range(a.runs):
                want = counts(self.node)
                self.floor_round(rnd, want)
                self.cairn_round(rnd, want, n_docs)
                # the next round's floor and cairn see the data the 1 % rewrite left
        finally:
            self.node.stop(kill=False)

    # -- report --
    def med(self, what, key="wall_s"):
        return median([r.get(key) for r in self.rows if r["what"] == what and r.get("status", "ok") == "ok"])

    def render(self):
        a = self.args
        fb, fr = self.med("floor: server snapshot"), self.med("floor: server restore")
        cb, c1 = self.med("cairn: backup"), self.med("cairn: backup after 1 % rewritten")
        cr = self.med("cairn: restore (with its safety backup)")
        crs = self.med("cairn: restore --skip-safety-backup")
        first_b = self.med("cairn: backup", "bytes")
        delta_b = self.med("cairn: backup after 1 % rewritten", "bytes")
        floor_b = self.med("floor: server snapshot", "bytes")
        out = ["# Search-cluster benchmark: cairn's opensearch driver vs the server's own snapshot", "",
               "%s; %s; OpenSearch %s, one node (heap %d MiB); %d documents in %d indices, %.0f MiB of "
               "index store (loaded in %.0f s); %d round(s), medians; busy: %s" % (
                   rb.now_iso(), rb.host_info(a.workdir), sos.VERSION, a.heap_mib, self.n_docs, len(INDICES),
                   self.store / MiB, self.load_s, a.runs, busy_now()), "",
               "| step | wall s | stored MiB |", "|---|---|---|"]
        for label, w, b in (("server's own snapshot (fresh fs repository)", fb, floor_b),
                            ("cairn backup (fresh repository)", cb, first_b),
                            ("cairn backup after 1 % of documents rewritten", c1, delta_b),
                            ("server's own restore (indices deleted, to green)", fr, None),
                            ("cairn restore, with its safety backup", cr, None),
                            ("cairn restore, --skip-safety-backup", crs, None)):
            out.append("| %s | %s | %s |" % (label, f_s(w), f_mib(b)))
        out += ["", "| target | measured | |", "|---|---|---|"]

        def verdict(v, limit):
            return "-" if v is None else ("met" if v <= limit else "**not met**")
        rb_, rb_s = ratio(cb, fb)
        rd_, rd_s = ratio(delta_b, first_b, 3)
        rr_, rr_s = ratio(cr, fr)
        rs_, rs_s = ratio(crs, fr)
        out.append("| backup <= 1.3x the server's own snapshot | %sx | %s |" % (rb_s, verdict(rb_, 1.3)))
        out.append("| 1 %% backup stores <= 0.1x of the first | %sx | %s |" % (rd_s, verdict(rd_, 0.1)))
        out.append("| restore <= 1.3x the server's own | %sx (%sx without the safety backup) | %s |" % (
            rr_s, rs_s, verdict(rr_, 1.3)))
        if self.failures:
            out += ["", "FAILURES:"] + ["- " + f.replace("\n", " ")[:500] for f in self.failures]
        return "\n".join(out) + "\n"


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gib", type=float, default=1.0, help="index store to generate (GiB)")
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--change", type=float, default=0.01, help="fraction of documents rewritten")
    p.add_argument("--heap-mib", type=int, default=2048)
    p.add_argument("--seed", type=int, default=20261129)
    p.add_argument("--settle", type=float, default=2.0)
    p.add_argument("--timeout", type=int, default=3600)
    p.add_argument("--workdir", default=None)
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    return p.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    why = sos.available()
    if why:
        sys.exit(why)
    tmp = a.workdir or os.path.join(REPO_ROOT, "build", "bench-opensearch")
    remove(tmp)
    os.makedirs(tmp)
    a.workdir = tmp
    b = Bench(a)
    try:
        b.run()
    finally:
        report = b.render()
        sys.stdout.write(report)
        os.makedirs(a.out, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        with open(os.path.join(a.out, stamp + "-report.md"), "w") as f:
            f.write(report)
        with open(os.path.join(a.out, stamp + "-raw.json"), "w") as f:
            json.dump({"args": vars(a), "rows": b.rows, "failures": b.failures}, f, indent=1)
    if not b.failures:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if b.failures else 0


if __name__ == "__main__":
    sys.exit(main())
