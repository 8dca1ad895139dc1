#!/usr/bin/python3
"""The audit trail's benchmark (issue 11): events per second from the
controller's outbox to the Kafka topic, and the end-to-end latency from an
operation to `cairn-audit` printing its event.

Real components: a Kafka 4.x broker in KRaft mode (jars from Maven Central,
scripts/fetch-kafka.sh) and a real cairn-controller with [audit.kafka],
started with the integration tests' helpers (tests/integration/servers_kafka.py,
cluster.py) on free loopback ports in a temp dir.

- throughput: N events are appended to the catalog's outbox in one
  transaction, chained exactly as the controller chains them (a stand-in for
  N operations: the controller's own writers would take far longer to make
  them, and what is measured here is the publisher); the clock runs from
  their commit until the controller has marked every one published (Kafka
  acknowledged it, acks=all).
- latency: `cairn-audit` follows the topic; an operation (a refused CURVE
  handshake, which the controller audits) is made at t0 and the time at which
  cairn-audit prints its event is t1. Median and p95 over R operations.

Usage: /usr/bin/python3 bench/audit/run.py [--events 50000] [--ops 30]
(needs ./build with cairn-controller, cairnctl and cairn-audit).
"""
import argparse
import hashlib
import json
import os
import pathlib
import select
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
os.environ.setdefault("CAIRN_BUILD_DIR", str(ROOT / "build"))

import curvezmq  # noqa: E402
import servers_kafka  # noqa: E402
from cluster import BUILD, Cluster  # noqa: E402

AUDIT = BUILD / "audit" / "cairn-audit"


def audit_hash(e):
    """common/audit/chain.h: tag, then each field as a 4-byte big-endian length and its bytes."""
    enc = b"cairn-audit-v1"
    for f in (e["event_id"], str(e["seq"]), str(e["time"]), e["actor"], e["action"], e["target"], e["outcome"],
              e["reason"], e["details"], e["prev_hash"]):
        b = f.encode()
        enc += len(b).to_bytes(4, "big") + b
    return hashlib.sha256(enc).hexdigest()


def append_events(db, n):
    con = sqlite3.connect(db, timeout=60, isolation_level=None)
    con.execute("PRAGMA busy_timeout = 60000")
    con.execute("BEGIN IMMEDIATE")
    seq, prev = con.execute("SELECT seq, hash FROM audit_outbox ORDER BY seq DESC LIMIT 1").fetchone()
    now = int(time.time() * 1000)
    rows = []
    for i in range(n):
        seq += 1
        e = {"event_id": uuid.uuid4().hex, "seq": seq, "time": now, "actor": "operator:bench",
             "action": "bench.event", "target": f"thing:{i}", "outcome": "ok", "reason": "",
             "details": json.dumps({"i": i, "payload": "x" * 200}, separators=(",", ":"), sort_keys=True),
             "prev_hash": prev}
        e["hash"] = prev = audit_hash(e)
        rows.append(e)
    con.executemany("INSERT INTO audit_outbox (seq, event_id, time, actor, action, target, outcome, reason, details,"
                    " prev_hash, hash) VALUES (:seq, :event_id, :time, :actor, :action, :target, :outcome, :reason,"
                    " :details, :prev_hash, :hash)", rows)
    con.execute("COMMIT")
    con.close()
    return seq


def unpublished(db):
    con = sqlite3.connect(db, timeout=30)
    try:
        return con.execute("SELECT count(*) FROM audit_outbox WHERE published_at IS NULL").fetchone()[0]
    finally:
        con.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=50000)
    ap.add_argument("--ops", type=int, default=30)
    args = ap.parse_args()
    servers_kafka.require(servers_kafka.KRAFT_VERSION)
    base = pathlib.Path(tempfile.mkdtemp(prefix="cairn-bench-audit-"))
    kafka = servers_kafka.Kafka.kraft(base / "kafka").start()
    c = Cluster(base / "cluster")
    follower = None
    try:
        kafka.create_topic("cairn.audit")
        c.init()
        with open(c.controller_cfg, "a") as f:
            f.write(f'[audit]\nrefusals_per_minute = 100000\n[audit.kafka]\nbrokers = "{kafka.bootstrap}"\n')
        c.controller_cfg.write_text(c.controller_cfg.read_text().replace('log_level = "debug"', 'log_level = "info"'))
        c.start_controller()
        db = c.base / "controller" / "catalog.db"
        deadline = time.time() + 60
        while unpublished(db) and time.time() < deadline:
            time.sleep(0.1)

        # Throughput.
        t0 = time.monotonic()
        last = append_events(db, args.events)
        t_commit = time.monotonic()
        while unpublished(db):
            time.sleep(0.02)
        t1 = time.monotonic()
        rate = args.events / (t1 - t_commit)

        # Latency: cairn-audit following the topic.
        follower = subprocess.Popen([str(AUDIT), "--brokers", kafka.bootstrap, "--trusted-keys",
                                     str(c.keys / "controller-signing.pub"), "--from-beginning"],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        buf = b""

        def wait_line(pred, timeout=60):
            nonlocal buf
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    e = json.loads(line)
                    if pred(e):
                        return e
                r, _, _ = select.select([follower.stdout], [], [], 0.5)
                if r:
                    buf += os.read(follower.stdout.fileno(), 1 << 20)
            raise SystemExit("cairn-audit did not print the event in time")

        wait_line(lambda e: e["seq"] >= last, timeout=300)  # caught up with the backlog
        server = curvezmq.z85_decode((c.keys / "controller-curve.pub").read_text().strip())
        lat = []
        for _ in range(args.ops):
            t_op = time.monotonic()
            curvezmq.handshake(c.op_port, server)
            wait_line(lambda e: e["action"] == "login.refuse")
            lat.append(time.monotonic() - t_op)
            time.sleep(0.2)
        lat.sort()
        print(f"# audit trail benchmark ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, Kafka "
              f"{servers_kafka.KRAFT_VERSION} KRaft, one broker on loopback)\n")
        print("| what | value |\n|---|---|")
        print(f"| outbox → topic, {args.events} events of ~0.5 KiB (acks=all, acknowledged and marked published) "
              f"| {rate:,.0f} events/s ({t1 - t_commit:.2f} s; appending them took {t_commit - t0:.2f} s) |")
        print(f"| operation → cairn-audit prints its event, {args.ops} operations | median "
              f"{statistics.median(lat) * 1000:.0f} ms, p95 {lat[int(len(lat) * 0.95) - 1] * 1000:.0f} ms, "
              f"max {lat[-1] * 1000:.0f} ms |")
    finally:
        if follower:
            follower.terminate()
            follower.wait(10)
        c.stop_all()
        kafka.stop()


if __name__ == "__main__":
    main()
