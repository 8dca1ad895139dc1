#!/usr/bin/python3
"""bench/repo/flat_dir.py -- peak memory on a metadata-heavy tree (issue 32).

One directory of --files small files (200,000 by default: one tree blob of
tens of MB, the case where a repository's memory is its trees'), backed up by
`cairnctl repo` and by restic 0.14 into local repositories, in the same run:
first backup, unchanged backup, check, ls of the latest snapshot. Wall time
and peak RSS (wait4) of every command; `--memory-budget` is passed to cairn's
commands that take it when --budget is given.

  /usr/bin/python3 bench/repo/flat_dir.py [--files 200000] [--budget 128M]
"""
import argparse
import os
import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, os.fspath(ROOT / "bench" / "repo"))
sys.path.insert(0, os.fspath(ROOT / "tests" / "integration"))
from s3 import timed  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=200_000)
    ap.add_argument("--workdir", default="/var/tmp/cairn-bench-flat")
    ap.add_argument("--cairnctl", default=os.fspath(ROOT / "build" / "cairnctl" / "cairnctl"))
    ap.add_argument("--restic", default="/usr/bin/restic")
    ap.add_argument("--budget", help="cairn's --memory-budget for backup and check")
    args = ap.parse_args()
    work = pathlib.Path(args.workdir)
    data = work / "data"
    if not data.exists() or sum(1 for _ in os.scandir(data)) != args.files:
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        for i in range(args.files):
            (data / f"file-{i:07d}.txt").write_text(str(i))
    (work / "pw").write_text("benchmark passphrase\n")
    os.chmod(work / "pw", 0o600)
    env = dict(os.environ, CAIRN_PASSWORD_FILE=os.fspath(work / "pw"), RESTIC_PASSWORD_FILE=os.fspath(work / "pw"),
               RESTIC_CACHE_DIR=os.fspath(work / "restic-cache"))
    budget = ["--memory-budget", args.budget] if args.budget else []
    c = [args.cairnctl, "repo"]
    cr = ["--repo", os.fspath(work / "cairn")]
    rr = ["--repo", os.fspath(work / "restic")]
    steps = {
        "cairn": [("init", c + ["init", "--quiet"] + cr), ("first backup", c + ["backup", "--quiet"] + cr + budget + [data]),
                  ("unchanged backup", c + ["backup", "--quiet"] + cr + budget + [data]),
                  ("check", c + ["check"] + cr + budget), ("ls", c + ["ls"] + cr + ["latest"])],
        "restic": [("init", [args.restic, "init", "-q"] + rr), ("first backup", [args.restic, "backup", "-q"] + rr + [data]),
                   ("unchanged backup", [args.restic, "backup", "-q"] + rr + [data]),
                   ("check", [args.restic, "check", "-q"] + rr), ("ls", [args.restic, "ls"] + rr + ["latest"])],
    }
    res = {}
    for tool, cmds in steps.items():
        shutil.rmtree(work / tool, ignore_errors=True)
        for name, argv in cmds:
            wall, rss = timed([os.fspath(a) for a in argv], env, work / f"{tool}.log")
            res[(tool, name)] = (wall, rss)
    print(f"{args.files:,} files in one directory; cairn{' --memory-budget ' + args.budget if args.budget else ''}\n")
    print("| step | cairn | restic | cairn / restic (RSS) |\n|---|---|---|---|")
    for name in ("first backup", "unchanged backup", "check", "ls"):
        (cw, cm), (rw, rm) = res[("cairn", name)], res[("restic", name)]
        print(f"| {name} | {cw:.2f} s, {cm / 2**20:.0f} MiB | {rw:.2f} s, {rm / 2**20:.0f} MiB | {cm / rm:.2f}× |")


if __name__ == "__main__":
    main()
