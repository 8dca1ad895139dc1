#!/usr/bin/python3
"""bench/repo/s3.py -- cairn and restic 0.14 against the same S3 server (issue 34).

One SeaweedFS (`weed server -s3`, built by scripts/fetch-seaweedfs.sh) on
loopback with authentication on; the benchmark corpus (../shared/bench/
make_corpus.py, ~1 GiB) backed up by `cairnctl repo` and by restic into two
buckets of that server, in the same run:

  initial    first backup into an empty repository
  nochange   a second backup of the same, unchanged tree
  restore    the latest snapshot into an empty directory (checked byte-equal)

Wall time and peak RSS (GNU time's %M) of every command, medians over
--runs rounds (each round: fresh buckets). One more round goes through a
counting proxy (tests/integration/s3_proxy.py) for the requests each step
makes: that round is not timed (the proxy is Python). Report: markdown on
stdout and in --out, with every measurement as JSON beside it.

  /usr/bin/python3 bench/repo/s3.py [--runs 3] [--corpus DIR]
"""
import argparse
import datetime
import json
import os
import pathlib
import secrets
import shutil
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, os.fspath(ROOT / "tests" / "integration"))
from servers_s3 import SeaweedFS  # noqa: E402
from s3_proxy import S3Proxy  # noqa: E402


def log(m):
    print(f"[{datetime.datetime.now():%H:%M:%S}] {m}", file=sys.stderr, flush=True)


def tail(path, n=1500):
    with open(path, "rb") as f:
        return f.read()[-n:].decode(errors="replace")


def tree_bytes(root):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs
               if not os.path.islink(os.path.join(d, f)))


def same_tree(a, b):
    for d, _, fs in os.walk(a):
        for f in fs:
            p = os.path.join(d, f)
            q = os.path.join(b, os.path.relpath(p, a))
            if os.path.islink(p):
                continue
            if os.path.getsize(p) != os.path.getsize(q):
                return False
            with open(p, "rb") as x, open(q, "rb") as y:
                while True:
                    u, v = x.read(1 << 20), y.read(1 << 20)
                    if u != v:
                        return False
                    if not u:
                        break
    return True


def timed(argv, env, log_path):
    """Wall time and peak RSS (the child's own, from wait4) of one command."""
    t0 = time.monotonic()
    with open(log_path, "ab") as lf:
        p = subprocess.Popen(argv, env=env, stdout=lf, stderr=lf)
        _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    rc = os.waitstatus_to_exitcode(status)
    p.returncode = rc
    if rc != 0:
        raise SystemExit(f"{' '.join(map(str, argv[:3]))} exited {rc}; see {log_path}:\n{tail(log_path)}")
    return wall, ru.ru_maxrss * 1024


class Tool:
    def __init__(self, name, store, endpoint, bucket, work, args):
        self.name, self.store, self.work, self.args = name, store, work, args
        ak, sk = store.keys["admin"]
        self.env = dict(os.environ, AWS_ACCESS_KEY_ID=ak, AWS_SECRET_ACCESS_KEY=sk, AWS_DEFAULT_REGION="us-east-1",
                        RESTIC_PASSWORD_FILE=os.fspath(work / "pw"), CAIRN_PASSWORD_FILE=os.fspath(work / "pw"),
                        CAIRN_CACHE_DIR=os.fspath(work / f"cache-{name}"), RESTIC_CACHE_DIR=os.fspath(work / f"cache-{name}"),
                        AWS_EC2_METADATA_DISABLED="true")
        if name == "cairn":
            self.env["CAIRN_REPOSITORY"] = f"s3:{endpoint}/{bucket}/repo"
        else:
            self.env["RESTIC_REPOSITORY"] = f"s3:{endpoint}/{bucket}/repo"

    def argv(self, step, src=None, target=None):
        if self.name == "cairn":
            c = [self.args.cairnctl, "repo"]
            return {"init": c + ["init", "--quiet"], "backup": c + ["backup", "--quiet", src],
                    "restore": c + ["restore", "latest", "--target", target, "--quiet"]}[step]
        r = [self.args.restic, "--no-lock"] if False else [self.args.restic]
        return {"init": r + ["init"], "backup": r + ["backup", "--quiet", src],
                "restore": r + ["restore", "latest", "--target", target]}[step]


def round_(args, store, endpoint, work, corpus, counting=None):
    out = {}
    for name in args.tools.split(","):
        bucket = f"{name}-{secrets.token_hex(4)}"  # each tool's init creates it
        t = Tool(name, store, endpoint, bucket, work, args)
        shutil.rmtree(work / f"cache-{name}", ignore_errors=True)
        logp = work / f"{name}.log"
        res = {}
        for step in ("init", "initial", "nochange", "restore"):
            target = work / f"restore-{name}"
            shutil.rmtree(target, ignore_errors=True)
            argv = t.argv({"initial": "backup", "nochange": "backup"}.get(step, step), os.fspath(corpus), os.fspath(target))
            n0 = len(counting.requests) if counting else 0
            b0 = counting.bytes_put if counting else 0
            wall, rss = timed(argv, t.env, logp)
            res[step] = {"wall_s": wall, "rss": rss}
            if counting:
                res[step]["requests"] = len(counting.requests) - n0
                res[step]["bytes_put"] = counting.bytes_put - b0
            if step == "restore":
                restored = target / os.fspath(corpus).lstrip("/")
                if not same_tree(corpus, restored):
                    raise SystemExit(f"{name}: the restored tree differs from the corpus")
                shutil.rmtree(target)
            log(f"{name} {step}: {wall:.1f} s, {rss / 2**20:.0f} MiB" + (f", {res[step]['requests']} requests" if counting else ""))
        if counting:  # what the store accepted (botocore, to list the bucket, is not on every machine)
            res["stored_bytes"] = sum(res[s]["bytes_put"] for s in ("init", "initial", "nochange"))
        out[name] = res
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--corpus", help="an existing corpus directory (default: generate one with make_corpus.py)")
    ap.add_argument("--workdir", default="/var/tmp/cairn-bench-s3")
    ap.add_argument("--cairnctl", default=os.fspath(ROOT / "build" / "cairnctl" / "cairnctl"))
    ap.add_argument("--restic", default="/usr/bin/restic")
    ap.add_argument("--tools", default="cairn,restic")
    ap.add_argument("--out", default=os.fspath(ROOT / "bench" / "repo" / "results"))
    ap.add_argument("--corpus-script", default=os.fspath(ROOT.parent / "shared" / "bench" / "make_corpus.py"))
    args = ap.parse_args()
    work = pathlib.Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    corpus = pathlib.Path(args.corpus) if args.corpus else work / "corpus"
    if not corpus.exists():
        log("generating the corpus")
        subprocess.run([sys.executable, args.corpus_script, "--out",
                        os.fspath(corpus)], check=True, stdout=subprocess.DEVNULL)
    (work / "pw").write_text("benchmark passphrase\n")
    os.chmod(work / "pw", 0o600)
    size = tree_bytes(corpus)
    shutil.rmtree(work / "seaweedfs", ignore_errors=True)
    store = SeaweedFS(work / "seaweedfs").start()
    rounds = []
    try:
        for i in range(args.runs):
            log(f"round {i + 1} of {args.runs}")
            rounds.append(round_(args, store, store.endpoint, work, corpus))
        log("a counting round through the proxy")
        proxy = S3Proxy(store.port)
        counted = round_(args, store, proxy.endpoint, work, corpus, counting=proxy)
        proxy.close()
    finally:
        store.stop()

    def med(tool, step, key):
        return statistics.median(r[tool][step][key] for r in rounds)
    cpus = os.cpu_count()
    lines = [f"## Object store: cairn vs restic 0.14 on SeaweedFS ({datetime.date.today()})", "",
             f"Corpus {size / 2**30:.2f} GiB ({corpus}); {args.runs} rounds, medians; {cpus} CPUs; "
             f"SeaweedFS on loopback, auth on; each round into fresh buckets.", "",
             "| step | cairn | restic | cairn / restic | target |", "|---|---|---|---|---|"]
    targets = {"initial": "≤ 0.5×", "nochange": "≤ 0.3×", "restore": "≤ 0.5×"}
    for step in ("initial", "nochange", "restore"):
        c, r = med("cairn", step, "wall_s"), med("restic", step, "wall_s")
        lines.append(f"| {step} wall | {c:.2f} s | {r:.2f} s | **{c / r:.2f}×** | {targets[step]} |")
    for step in ("initial", "nochange", "restore"):
        c, r = med("cairn", step, "rss"), med("restic", step, "rss")
        lines.append(f"| {step} peak RSS | {c / 2**20:.0f} MiB | {r / 2**20:.0f} MiB | {c / r:.2f}× | |")
    for step in ("initial", "nochange", "restore"):
        c, r = counted["cairn"][step]["requests"], counted["restic"][step]["requests"]
        lines.append(f"| {step} requests | {c} | {r} | | {'≤ 20' if step == 'nochange' else ''} |")
    gib = [counted[t]["stored_bytes"] / 2**30 for t in ("cairn", "restic")]
    lines.append(f"| requests per GiB stored (initial) | {counted['cairn']['initial']['requests'] / gib[0]:.0f} | "
                 f"{counted['restic']['initial']['requests'] / gib[1]:.0f} | | |")
    lines.append(f"| stored | {gib[0]:.3f} GiB | {gib[1]:.3f} GiB | {gib[0] / gib[1]:.2f}× | |")
    report = "\n".join(lines) + "\n"
    print(report)
    outd = pathlib.Path(args.out)
    outd.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    (outd / f"{stamp}-s3-report.md").write_text(report)
    (outd / f"{stamp}-s3-raw.json").write_text(json.dumps({"rounds": rounds, "counted": counted, "corpus_bytes": size,
                                                           "cpus": cpus}, indent=1))


if __name__ == "__main__":
    main()
