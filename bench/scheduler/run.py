#!/usr/bin/env python3
"""The controller's policy work at fleet scale (issue 12's benchmark, not a test).

Runs build/tests/cairn-bench-scheduler: a real catalog on disk, simulated
agents (default 1,000 with 3 components each), 200 policies selecting them by
label, 10,000 backup sets ordered through the controller's Orders (plans
signed) and ended; it times next-run computation, an idle scheduler tick,
ordering and ending a run, and retention over every policy, and reports the
catalog's size. Results go to bench/scheduler/results/<host>-<date>.json.

    python3 bench/scheduler/run.py [--agents 1000] [--policies 200] [--sets 10000]
"""
import argparse
import datetime
import json
import os
import pathlib
import platform
import subprocess
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.environ.get("CAIRN_BUILD_DIR", ROOT / "build"))
    ap.add_argument("--agents", type=int, default=1000)
    ap.add_argument("--policies", type=int, default=200)
    ap.add_argument("--sets", type=int, default=10000)
    a = ap.parse_args()
    tool = pathlib.Path(a.build) / "tests" / "cairn-bench-scheduler"
    with tempfile.TemporaryDirectory(prefix="cairn-bench-sched-") as d:
        p = subprocess.run([tool, "--dir", d, "--agents", str(a.agents), "--policies", str(a.policies),
                            "--sets", str(a.sets)], stdout=subprocess.PIPE, check=True)
    r = json.loads(p.stdout)
    r["host"] = platform.node()
    r["cpus"] = os.cpu_count()
    r["date"] = datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")
    out = ROOT / "bench" / "scheduler" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{r['cpus']}cpu-{r['date'][:10]}.json").write_text(json.dumps(r, indent=2) + "\n")
    print(json.dumps(r, indent=2))
    print(f"\n{a.policies} policies over {a.agents} agents' {3 * a.agents} components, {a.sets} sets:")
    print(f"  next run of every policy      {r['next_runs_all_policies_ms']:.2f} ms")
    print(f"  scheduler tick, nothing due   {r['tick_nothing_due_ms']:.2f} ms "
          f"({r['tick_after_retention_ms']:.2f} ms with {r['sets_expired']} expired sets waiting)")
    print(f"  ordering one run (signed)     {r['order_one_run_ms_mean']:.2f} ms")
    print(f"  retention, every policy       {r['retention_apply_all_policies_ms']:.0f} ms "
          f"(dry run {r['retention_dry_run_all_policies_ms']:.0f} ms), {r['sets_expired']} sets expired")
    print(f"  catalog after {a.sets} sets   {r['catalog_bytes'] / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
