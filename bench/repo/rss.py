#!/usr/bin/env python3
"""bench/repo/rss.py -- peak RSS of cairn's and restic's backup and restore
against the CPUs they may use and cairn's memory budget, on the same data in
one run. See bench/repo/README.md, "Peak RSS".

Usable CPUs are set with `taskset` when this host has them; on a host with
fewer, with cairn's `--threads N` and restic's `GOMAXPROCS=N` (the pool sizes
that N usable CPUs give), which the report says. A memory limit
(`--cgroup-mem`) runs each command in a fresh cgroup with that limit (v2
memory.max, or v1 memory.limit_in_bytes where only v1 is mounted).

Python 3 standard library only.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def run(cmd, env=None, cgroups=(), cwd=None, stdin=None):
    """Runs cmd; returns (wall seconds, peak RSS in KiB of it and its children)."""
    t0 = time.monotonic()

    def enter():
        for d in cgroups:
            with open(os.path.join(d, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))

    # A child inherits the RSS high-water mark of what forked it: GNU time (~1 MB)
    # forks the command, so its %M is the command's own (bench/repo/README.md, Caveats).
    timed = ["/usr/bin/time", "-f", "RSS-KIB %M"] + cmd if os.path.exists("/usr/bin/time") else cmd
    p = subprocess.Popen(timed, env=env, cwd=cwd, stdin=stdin, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, preexec_fn=enter)
    err = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}): {err.decode(errors='replace')[-2000:]}")
    kib = ru.ru_maxrss
    for line in err.decode(errors="replace").splitlines():
        if line.startswith("RSS-KIB "):
            kib = int(line.split()[1])
    return time.monotonic() - t0, kib


class Cgroup:
    """A fresh cgroup with a memory limit and/or a CPU quota, removed on exit:
    what `systemd-run --scope -p MemoryMax=... -p CPUQuota=...` makes, for hosts
    where systemd is not PID 1. v2 where its controllers are enabled, else v1
    (memory and cpu hierarchies)."""

    def __init__(self, mem, cpus):
        self.mem, self.cpus, self.paths = mem, cpus, []

    def __enter__(self):
        if not self.mem and not self.cpus:
            return []
        name = f"cairn-rss-{os.getpid()}-{time.monotonic_ns()}"
        ctl = "/sys/fs/cgroup/cgroup.controllers"
        if os.path.exists(ctl) and "memory" in open(ctl).read().split():
            d = f"/sys/fs/cgroup/{name}"
            os.mkdir(d)
            self.paths.append(d)
            if self.mem:
                self._put(d, "memory.max", self.mem)
            if self.cpus:
                self._put(d, "cpu.max", f"{int(self.cpus * 100000)} 100000")
        else:
            if self.mem:
                d = f"/sys/fs/cgroup/memory/{name}"
                os.mkdir(d)
                self.paths.append(d)
                self._put(d, "memory.limit_in_bytes", self.mem)
            if self.cpus:
                d = f"/sys/fs/cgroup/cpu/{name}"
                os.mkdir(d)
                self.paths.append(d)
                self._put(d, "cpu.cfs_period_us", 100000)
                self._put(d, "cpu.cfs_quota_us", int(self.cpus * 100000))
        return self.paths

    @staticmethod
    def _put(d, f, v):
        with open(os.path.join(d, f), "w") as fh:
            fh.write(str(v))

    def __exit__(self, *a):
        for p in self.paths:
            for _ in range(50):
                try:
                    os.rmdir(p)
                    break
                except OSError:
                    time.sleep(0.1)


def pools(n, budget):
    """The pool sizes cairn picks for n usable CPUs (common/repo/memory.h), for
    emulated rows: backup threads, restore writers."""
    mib = 1 << 20
    b = budget or 512 * mib
    threads = max(1, min(n, (b - 40 * mib - 5 * 8 * mib) // (28 * mib)))
    writers = max(1, min(min(8, max(4, 2 * n)), (b - 24 * mib) // (8 * mib + 384 * 1024)))
    return threads, writers


def parse_size(text):
    if not text:
        return 0
    units = {"K": 10, "M": 20, "G": 30, "T": 40}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    return int(float(t[:-1]) * (1 << units[t[-1]])) if t[-1] in units else int(t)


def cpu_prefix(n, emulate):
    return [] if emulate else ["taskset", "-c", f"0-{n - 1}"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", action="append", required=True,
                    help="a directory to back up (repeat: several side by side, e.g. 1x and 4x)")
    ap.add_argument("--cpus", default="2,4,16", help="usable CPU counts")
    ap.add_argument("--tools", default="cairn,restic")
    ap.add_argument("--budget", default="", help="cairnctl --memory-budget (e.g. 128M); empty: its default")
    ap.add_argument("--cgroup-mem", type=int, default=0, help="run every command under this memory limit (bytes)")
    ap.add_argument("--cgroup-cpus", type=float, default=0, help="run every command under this CPU quota (CPUs, e.g. 1.5)")
    ap.add_argument("--cairnctl", default=os.path.join(ROOT, "build/cairnctl/cairnctl"))
    ap.add_argument("--restic", default="/usr/bin/restic")
    ap.add_argument("--workdir", default="/var/tmp/cairn-rss")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args()

    cpus = [int(x) for x in args.cpus.split(",")]
    have = len(os.sched_getaffinity(0))
    tools = args.tools.split(",")
    os.makedirs(args.workdir, exist_ok=True)
    pw = os.path.join(args.workdir, "password")
    with os.fdopen(os.open(pw, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write("rss-bench-password\n")
    rows = []
    for corpus in args.corpus:
        corpus = os.path.abspath(corpus)
        size = int(subprocess.check_output(["du", "-sb", corpus]).split()[0])
        for n in cpus:
            emulate = n > have
            for tool in tools:
                repo = tempfile.mkdtemp(dir=args.workdir, prefix=f"{tool}-repo-")
                dest = tempfile.mkdtemp(dir=args.workdir, prefix=f"{tool}-dest-")
                shutil.rmtree(dest)
                env = dict(os.environ)
                try:
                    if tool == "cairn":
                        base = [args.cairnctl, "repo"]
                        opts = ["--repo", repo, "--password-file", pw, "--quiet"]
                        run(base + ["init"] + opts)
                        threads, writers = pools(n, parse_size(args.budget))
                        budget = ["--memory-budget", args.budget] if args.budget else []
                        bcmd = cpu_prefix(n, emulate) + base + ["backup", corpus] + opts + budget + \
                            (["--threads", str(threads)] if emulate else [])
                        rcmd = cpu_prefix(n, emulate) + base + ["restore", "latest", "--target", dest] + opts + budget + \
                            (["--threads", str(writers)] if emulate else [])
                    else:
                        env.update(RESTIC_REPOSITORY=repo, RESTIC_PASSWORD_FILE=pw, RESTIC_CACHE_DIR=os.path.join(repo, "..", "restic-cache"))
                        if emulate:
                            env["GOMAXPROCS"] = str(n)
                        run([args.restic, "init"], env=env)
                        bcmd = cpu_prefix(n, emulate) + [args.restic, "backup", "--quiet", corpus]
                        rcmd = cpu_prefix(n, emulate) + [args.restic, "restore", "latest", "--target", dest]
                    with Cgroup(args.cgroup_mem, args.cgroup_cpus) as cg:
                        bw, brss = run(bcmd, env=env, cgroups=cg)
                    subprocess.run(["sync"])
                    with Cgroup(args.cgroup_mem, args.cgroup_cpus) as cg:
                        rw, rrss = run(rcmd, env=env, cgroups=cg)
                    row = dict(corpus=os.path.basename(corpus), bytes=size, cpus=n, emulated=emulate, tool=tool,
                               budget=args.budget, cgroup_mem=args.cgroup_mem, cgroup_cpus=args.cgroup_cpus,
                               backup_s=round(bw, 2), backup_rss_mib=round(brss / 1024, 1),
                               restore_s=round(rw, 2), restore_rss_mib=round(rrss / 1024, 1))
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
                finally:
                    shutil.rmtree(repo, ignore_errors=True)
                    shutil.rmtree(dest, ignore_errors=True)
    print(f"host: {os.cpu_count()} CPUs, {have} usable; budget {args.budget or 'default'}; cgroup memory "
          f"{args.cgroup_mem or 'none'}, CPU quota {args.cgroup_cpus or 'none'}; rows marked * emulate N CPUs: "
          "cairn --threads with the pool sizes N CPUs give, restic GOMAXPROCS=N\n")
    print("| corpus | GiB | CPUs | tool | backup s | backup peak RSS MiB | restore s | restore peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['corpus']} | {r['bytes'] / 2**30:.2f} | {r['cpus']}{'*' if r['emulated'] else ''} | {r['tool']} | "
              f"{r['backup_s']} | {r['backup_rss_mib']} | {r['restore_s']} | {r['restore_rss_mib']} |")
    os.makedirs(args.out, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with open(os.path.join(args.out, f"{stamp}-rss.json"), "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
