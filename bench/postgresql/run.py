#!/usr/bin/python3
"""cairn's postgresql driver against pgBackRest 2.45 (Debian's pgbackrest), on
the same PostgreSQL 15 and the same pgbench data in the same run (issue 36):

1. full backup: wall time and what each repository grew by;
2. 5 % of pgbench_accounts' rows updated (a contiguous range of aid, then a
   checkpoint), then an incremental backup (pgBackRest --type=incr, file
   level; cairn's next backup of the set's parent, chunk level): growth;
   Then 1 % of the rows chosen at random (`--random-pct`): the incremental
   of each, as a fraction of its full backup, beside two floors measured
   from the data directory itself: every 8 KiB page that changed, compressed
   (what a block-level incremental such as pgBackRest 2.46+'s stores at
   best), and the same pages as deltas against their previous version;
3. point-in-time restore to the end of the archive: the server stopped, the
   data directory replaced, started, recovery replayed and promoted: wall
   time until it answers as a primary.

Both archive every WAL segment (archive_command runs cairn-agent wal-push,
then pgbackrest archive-push); both compress with zstd; pgBackRest gets
process-max = the CPUs, as cairn's archiver uses them. A benchmark, not a
test: it reports ratios (cairn / pgBackRest), lower is better for all four.

Usage: /usr/bin/python3 bench/postgresql/run.py [--scale 140]   (140: about 2.1 GB)
(needs ./build, and `bash scripts/install-deps.sh --bench` for pgbackrest).
"""
import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
os.environ.setdefault("CAIRN_BUILD_DIR", str(ROOT / "build"))

from cluster import AGENT, Cluster, backup_set_id  # noqa: E402
from servers_postgresql import BIN, PASSWORD, Postgres  # noqa: E402


def du(path):
    total = 0
    for dp, _, fns in os.walk(path):
        for f in fns:
            try:
                total += os.lstat(os.path.join(dp, f)).st_size
            except OSError:
                pass
    return total


def relation_pages(data):
    """{(file, page number): 8 KiB page} of every relation file (base/, global/)."""
    pages = {}
    for sub in ("base", "global"):
        for dp, _, fns in os.walk(data / sub):
            for f in fns:
                p = os.path.join(dp, f)
                try:
                    b = open(p, "rb").read()
                except OSError:
                    continue
                for i in range(0, len(b) // 8192):
                    pages[(p, i)] = b[i * 8192:(i + 1) * 8192]
    return pages


def zstd_size(data):
    return len(subprocess.run(["zstd", "-3", "-c", "-q"], input=data, stdout=subprocess.PIPE, check=True).stdout)


def run(args, env=None, timeout=7200):
    r = subprocess.run([os.fspath(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                       timeout=timeout)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, args))} exited {r.returncode}:\n{r.stdout.decode(errors='replace')[-3000:]}")
    return r.stdout.decode(errors="replace")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=int, default=140)
    ap.add_argument("--random-pct", type=float, default=1.0, help="percent of rows updated at random in step 2b")
    a = ap.parse_args()
    if not shutil.which("pgbackrest"):
        raise SystemExit("pgbackrest not installed: bash scripts/install-deps.sh --bench")
    cpus = len(os.sched_getaffinity(0))
    base = pathlib.Path(tempfile.mkdtemp(prefix="cairn-bench-pg-", dir="/var/tmp"))
    c = Cluster(base / "cairn")
    pg = None
    try:
        c.init()
        c.start_controller()
        pg = Postgres(AGENT)
        pgbr_repo = pg.base / "pgbackrest"
        pgbr_repo.mkdir()
        conf = pg.base / "pgbackrest.conf"
        conf.write_text(f"""[global]
repo1-path={pgbr_repo}
repo1-retention-full=10
compress-type=zst
compress-level=3
process-max={cpus}
start-fast=y
log-level-console=warn
log-path={pg.base}
lock-path={pg.base}/pgbr-lock
spool-path={pg.base}

[bench]
pg1-path={pg.data}
pg1-socket-path={pg.sock_dir}
pg1-port={pg.port}
pg1-user=postgres
""")
        for p in (pgbr_repo, conf):
            os.chown(p, pg.pw.pw_uid, pg.pw.pw_gid)
        pgbr = ["runuser", "-u", "postgres", "--", "env", f"PGPASSWORD={PASSWORD}", "pgbackrest", f"--config={conf}",
                "--stanza=bench"]
        with open(pg.data / "postgresql.conf", "a") as f:
            f.write(f"archive_command = '{pg.agent_copy} wal-push --socket {pg.archive_socket} %p && "
                    f"pgbackrest --config={conf} --stanza=bench archive-push %p'\nmax_wal_size = 4GB\n")
        pg.start()
        c.add_agent("node-a", components=pg.component_toml())
        c.enrol("node-a")
        run(pgbr + ["stanza-create"])
        t = time.monotonic()
        pg.pgbench("-i", "-s", str(a.scale), "-q")
        init_s = time.monotonic() - t
        pg.sql("CHECKPOINT")
        pg.switch_and_wait_archived(timeout=1800)
        db_bytes = int(pg.value("SELECT pg_database_size('postgres')"))
        print(f"pgbench scale {a.scale}: database {db_bytes / 2**30:.2f} GiB (initialised in {init_s:.0f} s); "
              f"{cpus} CPUs", flush=True)

        res = {}

        def cairn_backup():
            before = du(c.repo)
            t = time.monotonic()
            rc, out, err = c.ctl("backup", "create", "--component", "pg", "--wait", timeout=7200)
            wall = time.monotonic() - t
            if rc != 0:
                raise SystemExit(f"cairn backup exited {rc}\n{out}\n{err}\n{c.logs()}")
            return wall, du(c.repo) - before, backup_set_id(out)

        def pgbr_backup(kind):
            before = du(pgbr_repo)
            t = time.monotonic()
            run(pgbr + ["backup", f"--type={kind}"])
            return time.monotonic() - t, du(pgbr_repo) - before

        # pgBackRest first, then cairn: each finds the other's checkpoint done.
        res["full_pgbr_s"], res["full_pgbr_bytes"] = pgbr_backup("full")
        res["full_cairn_s"], res["full_cairn_bytes"], set1 = cairn_backup()
        print(f"full backup: cairn {res['full_cairn_s']:.1f} s, {res['full_cairn_bytes'] / 2**20:.0f} MiB; "
              f"pgBackRest {res['full_pgbr_s']:.1f} s, {res['full_pgbr_bytes'] / 2**20:.0f} MiB", flush=True)

        def incremental(key, where, what):
            """Rows updated (`where`), a checkpoint, then an incremental by each."""
            pg.sql(f"UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE {where}")
            pg.sql("CHECKPOINT")
            pg.switch_and_wait_archived(timeout=1800)
            res[f"{key}_pgbr_s"], res[f"{key}_pgbr_bytes"] = pgbr_backup("incr")
            res[f"{key}_cairn_s"], res[f"{key}_cairn_bytes"], _ = cairn_backup()
            print(f"incremental after {what} updated: cairn {res[f'{key}_cairn_s']:.1f} s, "
                  f"+{res[f'{key}_cairn_bytes'] / 2**20:.1f} MiB; pgBackRest {res[f'{key}_pgbr_s']:.1f} s, "
                  f"+{res[f'{key}_pgbr_bytes'] / 2**20:.1f} MiB", flush=True)

        rows = a.scale * 100000
        incremental("incr", f"aid <= {rows // 20}", "5% of rows")
        # Then rows far apart (every 10,000th: one page in about 160): a
        # file-level incremental stores every segment file again; cairn, the
        # small chunks around the pages that changed.
        incremental("scat", "aid % 10000 = 0", "every 10,000th row")

        # Random rows (every row a random one): the pages that changed, as
        # the data directory shows them, are the floor of a page-level
        # incremental.
        n_rand = int(rows * a.random_pct / 100)
        pg.sql("CHECKPOINT")
        before = relation_pages(pg.data)
        incremental("rand", f"aid IN (SELECT 1 + floor(random() * {rows})::int FROM generate_series(1, {n_rand}))",
                    f"{a.random_pct:g} % of rows at random")
        after = relation_pages(pg.data)
        changed = [k for k, v in after.items() if before.get(k) != v]
        res["rand_pages_total"] = len(after)
        res["rand_pages_changed"] = len(changed)
        res["rand_floor_pages_bytes"] = zstd_size(b"".join(after[k] for k in changed))
        res["rand_floor_delta_bytes"] = zstd_size(b"".join(
            bytes(x ^ y for x, y in zip(after[k], before.get(k, bytes(8192)))) for k in changed))
        print(f"  pages changed: {len(changed)} of {len(after)} ({100 * len(changed) / max(1, len(after)):.0f} %); "
              f"compressed {res['rand_floor_pages_bytes'] / 2**20:.1f} MiB as pages, "
              f"{res['rand_floor_delta_bytes'] / 2**20:.1f} MiB as deltas", flush=True)
        del before, after

        pg.sql("CREATE TABLE mark (at timestamptz DEFAULT now())")
        pg.sql("INSERT INTO mark DEFAULT VALUES")
        pg.switch_and_wait_archived(timeout=1800)
        count = pg.value("SELECT count(*) FROM pgbench_accounts")

        # cairn: the set's base backup and the archive, to its end.
        t = time.monotonic()
        rc, out, err = c.ctl("restore", set1, "--component", "pg", "--to-latest", "--skip-safety-backup", "--wait",
                             timeout=7200)
        res["restore_cairn_s"] = time.monotonic() - t
        if rc != 0:
            raise SystemExit(f"cairn restore exited {rc}\n{out}\n{err}\n{c.logs()}{pg.log_tail()}")
        assert pg.value("SELECT count(*) FROM mark") == "1" and pg.value("SELECT count(*) FROM pgbench_accounts") == count
        rid = [w[1] for w in (ln.split() for ln in out.splitlines()) if len(w) > 2 and w[0] == "restore" and w[2] == "created"][0]
        shown = c.json("restore", "show", rid)
        rec = [json.loads(t["component_metadata"]) for t in shown["tasks"] if t.get("component_metadata")]
        res["restore_cairn_phases"] = rec[0].get("recovery", {}).get("seconds") if rec else None
        print(f"cairn restore phases (s): {res['restore_cairn_phases']}", flush=True)
        # pgBackRest: the same steps (stop, data dir aside, restore, start, promoted), from its full backup.
        t = time.monotonic()
        pg.stop()
        aside = pathlib.Path(str(pg.data) + ".bench-aside")
        os.rename(pg.data, aside)
        pg.data.mkdir(mode=0o700)
        os.chown(pg.data, pg.pw.pw_uid, pg.pw.pw_gid)
        run(pgbr + ["restore", "--set=" + json.loads(run(pgbr + ["info", "--output=json"]))[0]["backup"][0]["label"],
                    "--type=default", "--target-timeline=current"])
        pg.start()
        while pg.value("SELECT pg_is_in_recovery()") != "f":
            time.sleep(0.2)
        res["restore_pgbr_s"] = time.monotonic() - t
        assert pg.value("SELECT count(*) FROM pgbench_accounts") == count
        shutil.rmtree(aside, ignore_errors=True)
        print(f"PITR restore to the archive's end: cairn {res['restore_cairn_s']:.1f} s; "
              f"pgBackRest {res['restore_pgbr_s']:.1f} s", flush=True)

        print("\nratios (cairn / pgBackRest; target):")
        print(f"  full backup time       {res['full_cairn_s'] / res['full_pgbr_s']:.2f}  (<= 1.0)")
        print(f"  repository size        {res['full_cairn_bytes'] / res['full_pgbr_bytes']:.2f}  (<= 1.0)")
        print(f"  incremental growth     {res['incr_cairn_bytes'] / max(1, res['incr_pgbr_bytes']):.2f}  (<= 0.3)")
        print(f"  scattered incremental  {res['scat_cairn_bytes'] / max(1, res['scat_pgbr_bytes']):.2f}  (<= 0.3)")
        print(f"  PITR restore time      {res['restore_cairn_s'] / res['restore_pgbr_s']:.2f}  (<= 1.0)")
        print(f"\nrandom {a.random_pct:g} % of rows, incremental / full (target <= 0.1):")
        print(f"  cairn                  {res['rand_cairn_bytes'] / res['full_cairn_bytes']:.2f}")
        print(f"  pgBackRest 2.45        {res['rand_pgbr_bytes'] / res['full_pgbr_bytes']:.2f}  (file level)")
        print(f"  changed pages, zstd    {res['rand_floor_pages_bytes'] / res['full_cairn_bytes']:.2f}  (block-level floor)")
        print(f"  page deltas, zstd      {res['rand_floor_delta_bytes'] / res['full_cairn_bytes']:.2f}  (delta floor)")
        print(json.dumps(res))
    finally:
        if pg:
            pg.cleanup()
        c.stop_all()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
