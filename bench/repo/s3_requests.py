#!/usr/bin/python3
"""bench/repo/s3_requests.py -- where a cairn restore's requests to an S3 store go.

One SeaweedFS on loopback (as bench/repo/s3.py starts it), a repository backed
up from CORPUS directly, then `cairnctl repo restore latest` through the
counting proxy (tests/integration/s3_proxy.py): the requests grouped by the
kind of object, and how many each pack took.

  /usr/bin/python3 bench/repo/s3_requests.py [--cairnctl PATH] [--corpus DIR]
"""
import argparse
import collections
import os
import pathlib
import secrets
import shutil
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, os.fspath(ROOT / "bench" / "repo"))
sys.path.insert(0, os.fspath(ROOT / "tests" / "integration"))
import s3  # noqa: E402
from servers_s3 import SeaweedFS  # noqa: E402
from s3_proxy import S3Proxy  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cairnctl", default=os.fspath(ROOT / "build" / "cairnctl" / "cairnctl"))
    ap.add_argument("--corpus", default="/var/tmp/cairn-bench-s3/corpus", help="made by s3.py's first run")
    ap.add_argument("--workdir", default="/var/tmp/cairn-bench-s3-requests")
    args = ap.parse_args()
    args.restic = "/usr/bin/restic"
    work = pathlib.Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "pw").write_text("benchmark passphrase\n")
    os.chmod(work / "pw", 0o600)
    store = SeaweedFS(work / "seaweedfs").start()
    proxy = S3Proxy(store.port)
    try:
        t = s3.Tool("cairn", store, proxy.endpoint, "b" + secrets.token_hex(3), work, args)
        s3.timed(t.argv("init"), t.env, work / "log")
        s3.timed(t.argv("backup", os.fspath(args.corpus)), t.env, work / "log")
        n0 = len(proxy.requests)
        wall, _ = s3.timed(t.argv("restore", None, os.fspath(work / "restore")), t.env, work / "log")
        reqs = proxy.requests[n0:]
        print(f"restore: {wall:.2f} s, {len(reqs)} requests")
        kinds = collections.Counter(p.split("/")[3] if p.count("/") > 3 else "(bucket)" for _, p, _ in reqs)
        print("by kind:", dict(kinds))
        packs = collections.Counter(p for _, p, _ in reqs if "/data/" in p)
        if packs:
            print(f"{len(packs)} packs, {sum(packs.values())} requests: {sum(packs.values()) / len(packs):.1f} a pack, "
                  f"at most {max(packs.values())}")
    finally:
        proxy.close()
        store.stop()


if __name__ == "__main__":
    main()
