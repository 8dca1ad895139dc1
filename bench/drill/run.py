#!/usr/bin/python3
"""Restore drills' phases at two sizes (issue 35, docs/drills.md): how the
measured RTO (restore + start + check) grows with the data.

Real components, started with the integration tests' helpers on free
loopback ports in a temp dir: a cairn-controller, one agent with a [drill]
section, and per component
- etcd: one member (Debian's etcd 3.4) filled with N keys of 1 KiB values;
- files: a tree of files of random bytes (incompressible);
- kafka: one KRaft broker (Kafka 4.x from the tests' cache) holding a topic
  of 4 partitions filled with 1 KiB records of random bytes; its drill
  restores the log dir, starts the broker in the sandbox and reads every
  record back (docs/drills.md § Kafka);
each backed up through the controller, then drilled with
`cairnctl drill run SET --wait`; the phases are the drill's own report.
A benchmark, not a test: nothing is asserted but that the drill proved the set.

Usage: /usr/bin/python3 bench/drill/run.py [--sizes-mb 100,1000] [--components etcd,files,kafka]
       [--kafka-sizes-mb 1024,4096]
(needs ./build with cairn-controller, cairn-agent and cairnctl).
"""
import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
os.environ.setdefault("CAIRN_BUILD_DIR", str(ROOT / "build"))

from cluster import Cluster, backup_set_id  # noqa: E402
from servers_etcd import EtcdMember  # noqa: E402


def drill_once(c, sid, component):
    t = time.monotonic()
    rc, out, err = c.ctl("drill", "run", sid, "--component", component, "--wait", timeout=7200)
    wall = time.monotonic() - t
    if rc != 0:
        raise SystemExit(f"drill of {component} exited {rc}\n{out}\n{err}")
    did = [w[1] for w in (l.split() for l in out.splitlines()) if len(w) > 1 and w[0] == "drill" and w[1].startswith("dr-")][0]
    shown = c.json("drill", "show", did)
    (task,) = shown["tasks"]
    report = json.loads(task["component_metadata"])["drill"]
    return report["phases"], wall


def backup(c, component):
    t = time.monotonic()
    rc, out, err = c.ctl("backup", "create", "--component", component, "--wait", timeout=7200)
    if rc != 0:
        raise SystemExit(f"backup of {component} exited {rc}\n{out}\n{err}")
    return backup_set_id(out), time.monotonic() - t


def fill_etcd(member, mb):
    value = "x" * 1024
    n = mb * 1024  # 1 KiB values: about mb MiB of data (the db is larger)
    batch = {}
    for i in range(n):
        batch[f"/bench/k{i:08d}"] = value
        if len(batch) == 1000:
            member.put_many(batch, batch=1000)
            batch = {}
    if batch:
        member.put_many(batch, batch=1000)
    return n


def fill_kafka(k, mb):
    """mb MiB of 1 KiB records (slices of a random pool: incompressible) in 4 partitions."""
    from confluent_kafka import Producer
    k.create_topic("bench", partitions=4, rf=1)
    p = Producer({"bootstrap.servers": k.bootstrap, "linger.ms": 50, "batch.size": 1 << 20, "compression.type": "none",
                  "acks": "1", "queue.buffering.max.kbytes": 1 << 20})
    pool = os.urandom(8 << 20)
    n = mb * 1024
    for i in range(n):
        off = (i * 1031) % ((8 << 20) - 1024)
        while True:
            try:
                p.produce("bench", value=pool[off:off + 1024], partition=i % 4)
                break
            except BufferError:
                p.poll(0.1)
        if i % 10000 == 0:
            p.poll(0)
    if p.flush(900) != 0:
        raise SystemExit("kafka: records left undelivered")
    return n


def fill_files(data, mb):
    data.mkdir(parents=True, exist_ok=True)
    per = 4 << 20
    for i in range(max(1, (mb << 20) // per)):
        d = data / f"d{i % 16:02d}"
        d.mkdir(exist_ok=True)
        with open(d / f"f{i:05d}.bin", "wb") as f:
            f.write(os.urandom(per))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes-mb", default="100,1000")
    ap.add_argument("--components", default="etcd,files,kafka")
    ap.add_argument("--kafka-sizes-mb", default="1024,4096")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes_mb.split(",")]
    rows = []
    for component in args.components.split(","):
        for mb in ([int(s) for s in args.kafka_sizes_mb.split(",")] if component == "kafka" else sizes):
            with tempfile.TemporaryDirectory(prefix="cairn-drill-bench-", dir="/var/tmp") as tmp:
                base = pathlib.Path(tmp)
                c = Cluster(base / "cluster")
                member = broker = None
                try:
                    c.init()
                    c.start_controller()
                    drill = f'[drill]\nroot = "{base / "drills"}"\nmemory_max = "4G"\nstart_timeout_seconds = 600\n'
                    if component == "etcd":
                        member = EtcdMember(base, "etcd-a")
                        member.start()
                        fill_etcd(member, mb)
                        c.add_agent("node-a", components=member.component_toml() + drill)
                    elif component == "kafka":
                        from servers_kafka import KRAFT_VERSION, Kafka, lib_dir, require
                        require(KRAFT_VERSION)
                        broker = Kafka.kraft(base / "kafka")
                        # The tests flush every record; a benchmark's broker does not.
                        broker.config.write_text("".join(l for l in broker.config.read_text().splitlines(True)
                                                         if not l.startswith("log.flush.interval.messages")))
                        broker.start()
                        fill_kafka(broker, mb)
                        c.add_agent("node-a", components=broker.component_toml() + drill +
                                    f'kafka_libs_dir = "{lib_dir(KRAFT_VERSION)}"\njava_heap_mb = 1024\ncpus = 2\n')
                    else:
                        c.add_agent("node-a", components=drill)
                        fill_files(c.agent_dirs["node-a"]["data"], mb)
                    c.enrol("node-a")
                    name = component if component in ("etcd", "kafka") else "data"
                    sid, backup_s = backup(c, name)
                    phases, wall = drill_once(c, sid, name)
                    row = {"component": component, "size_mb": mb, "backup_s": round(backup_s, 1),
                           **{k: round(v, 2) for k, v in phases.items()},
                           "rto_s": round(sum(phases.values()), 2), "drill_wall_s": round(wall, 1)}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                finally:
                    if member:
                        member.stop()
                    if broker:
                        broker.stop()
                    c.stop_all()
    print("\n| component | data | restore s | start s | check s | RTO s | drill wall s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['component']} | {r['size_mb']} MB | {r.get('restore', 0)} | {r.get('start', '-')} | {r.get('check', 0)} | "
              f"{r['rto_s']} | {r['drill_wall_s']} |")


if __name__ == "__main__":
    main()
