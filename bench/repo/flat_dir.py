#!/usr/bin/python3
"""bench/repo/flat_dir.py -- peak memory on a metadata-heavy tree.

--files small files (200,000 by default) in one directory (one tree blob of
tens of MB: the case where a repository's memory is its index and its
trees'), or spread over --dirs directories, backed up by `cairnctl repo` and
by restic 0.14 into local repositories, in the same run: first backup,
unchanged backup, check, check --read-data, ls of the latest snapshot. Wall
time and peak RSS (wait4) of every command, and cairn's peak over restic's.
With --budget, cairn's commands get `--memory-budget` (all of them take it);
one that refuses the budget (below what the repository needs) is reported
with what it asked for, and the run goes on without the budget for it.

  /usr/bin/python3 bench/repo/flat_dir.py [--files 200000] [--dirs 1] [--budget 128M]
"""
import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]

STEPS = ("first backup", "unchanged backup", "check", "check --read-data", "ls")


def run(argv, env, log_path):
    """(rc, wall seconds, peak RSS bytes) of one command; its output is appended to log_path."""
    t0 = time.monotonic()
    with open(log_path, "ab") as lf:
        lf.write(("$ " + " ".join(map(str, argv)) + "\n").encode())
        lf.flush()
        p = subprocess.Popen(argv, env=env, stdout=lf, stderr=lf)
        _, status, ru = os.wait4(p.pid, 0)
    return os.waitstatus_to_exitcode(status), time.monotonic() - t0, ru.ru_maxrss * 1024


def last_error(log_path):
    lines = [l for l in pathlib.Path(log_path).read_text(errors="replace").splitlines() if "error:" in l]
    return lines[-1] if lines else "(no message)"


def make_data(data, files, dirs):
    marker = data / f".made-{files}-{dirs}"
    if marker.exists():
        return
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    per = -(-files // dirs)
    for i in range(files):
        d = data if dirs == 1 else data / f"dir-{i // per:04d}"
        if dirs > 1 and i % per == 0:
            d.mkdir()
        (d / f"file-{i:07d}.txt").write_text(str(i))
    marker.touch()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=200_000)
    ap.add_argument("--dirs", type=int, default=1, help="directories the files are spread over")
    ap.add_argument("--workdir", default="/var/tmp/cairn-bench-flat")
    ap.add_argument("--cairnctl", default=os.fspath(ROOT / "build" / "cairnctl" / "cairnctl"))
    ap.add_argument("--restic", default="/usr/bin/restic")
    ap.add_argument("--budget", help="cairn's --memory-budget for every command")
    args = ap.parse_args()
    work = pathlib.Path(args.workdir)
    data = work / f"data-{args.files}-{args.dirs}"
    make_data(data, args.files, args.dirs)
    (work / "pw").write_text("benchmark passphrase\n")
    os.chmod(work / "pw", 0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RESTIC_", "CAIRN_"))}
    env.update(CAIRN_PASSWORD_FILE=os.fspath(work / "pw"), RESTIC_PASSWORD_FILE=os.fspath(work / "pw"),
               RESTIC_CACHE_DIR=os.fspath(work / "restic-cache"))
    c = [args.cairnctl, "repo"]
    cr = ["--repo", os.fspath(work / "cairn")]
    rr = ["--repo", os.fspath(work / "restic")]
    budget = ["--memory-budget", args.budget] if args.budget else []
    steps = {
        "cairn": [("init", c + ["init", "--quiet"] + cr), ("first backup", c + ["backup", "--quiet"] + cr + [data]),
                  ("unchanged backup", c + ["backup", "--quiet"] + cr + [data]), ("check", c + ["check"] + cr),
                  ("check --read-data", c + ["check", "--read-data"] + cr), ("ls", c + ["ls"] + cr + ["latest"])],
        "restic": [("init", [args.restic, "init", "-q"] + rr), ("first backup", [args.restic, "backup", "-q"] + rr + [data]),
                   ("unchanged backup", [args.restic, "backup", "-q"] + rr + [data]), ("check", [args.restic, "check", "-q"] + rr),
                   ("check --read-data", [args.restic, "check", "-q", "--read-data"] + rr),
                   ("ls", [args.restic, "ls"] + rr + ["latest"])],
    }
    res, refused = {}, {}
    for tool, cmds in steps.items():
        shutil.rmtree(work / tool, ignore_errors=True)
        log = work / f"{tool}.log"
        log.unlink(missing_ok=True)
        for name, argv in cmds:
            argv = [os.fspath(a) for a in argv]
            if tool == "cairn" and budget and name != "init":
                rc, wall, rss = run(argv + budget, env, log)
                if rc == 1 and "below what this repository needs" in last_error(log):
                    refused[name] = last_error(log).split("error: ", 1)[1]
                    rc, wall, rss = run(argv, env, log)
            else:
                rc, wall, rss = run(argv, env, log)
            if rc != 0:
                raise SystemExit(f"{tool} {name} exited {rc}; see {log}")
            res[(tool, name)] = (wall, rss)
    where = "one directory" if args.dirs == 1 else f"{args.dirs:,} directories"
    print(f"{args.files:,} files in {where}; cairn{' --memory-budget ' + args.budget if args.budget else ''}\n")
    print("| step | cairn | restic | cairn / restic (RSS) |\n|---|---|---|---|")
    for name in STEPS:
        (cw, cm), (rw, rm) = res[("cairn", name)], res[("restic", name)]
        note = " (budget refused)" if name in refused else ""
        print(f"| {name} | {cw:.2f} s, {cm / 2**20:.0f} MiB{note} | {rw:.2f} s, {rm / 2**20:.0f} MiB | {cm / rm:.2f}× |")
    for name, why in refused.items():
        print(f"\n{name}: {why}")


if __name__ == "__main__":
    main()
