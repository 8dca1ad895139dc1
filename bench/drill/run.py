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
- zookeeper: a standalone server (Debian's ZooKeeper) holding N znodes of
  1 KiB, created with zkCli; its drill replays snapshot and logs in a
  standalone sandbox server;
- prometheus: N series backfilled by promtool (6 hours, one sample a
  minute) into persisted blocks, the server started on them; its drill
  opens the TSDB and queries it;
- haproxy: Debian's haproxy with a backend of N servers (every tenth set
  to maintenance, every seventh reweighted at run time) and a map of N
  entries; its drill starts the restored configuration confined, sets the
  runtime state back and checks every server and map entry;
- postgresql: Debian's PostgreSQL 15 (run as `postgres`, WAL archived
  through the agent) holding pgbench data at scale N (about 15 MB a unit);
  its base backup's drill fetches the WAL to the consistent point, recovers
  it confined and unprivileged, and runs pg_amcheck over every table and
  index;
each backed up through the controller, then drilled with
`cairnctl drill run SET --wait`; the phases are the drill's own report.
A benchmark, not a test: nothing is asserted but that the drill proved the set.

Usage: /usr/bin/python3 bench/drill/run.py [--sizes-mb 100,1000] [--components etcd,files,kafka]
       [--kafka-sizes-mb 1024,4096] [--zookeeper-znodes 10000,100000] [--prometheus-series 1000,10000]
       [--haproxy-entries 100,10000] [--postgresql-scales 10,100]
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
    print(json.dumps({"checks": report["checks"], "restored_bytes": task.get("progress", {}).get("bytes_done")}), flush=True)
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


def fill_zookeeper(zk, n):
    """n znodes of 1 KiB under /bench, created by zkCli in batches."""
    value = "z" * 1024
    zk.cli(["create /bench root"])
    for lo in range(0, n, 20000):
        zk.cli([f"create /bench/n{i:07d} {value}" for i in range(lo, min(n, lo + 20000))], timeout=1800)
    return n


def haproxy_rig(base, n):
    """A live haproxy whose backend has n servers and whose map has n entries,
    with run-time state (servers in maintenance and reweighted) to save."""
    from servers_haproxy import Haproxy, free_port, make_certificate
    from test_haproxy import component_toml, write_config
    etc = base / "haproxy" / "etc"
    (etc / "certs").mkdir(parents=True)
    h = Haproxy(base / "haproxy", [etc / "haproxy.cfg", etc / "conf.d"])
    make_certificate(etc / "certs" / "site.pem", "site.example")
    write_config(etc, free_port(), free_port(), h.socket)
    with open(etc / "conf.d" / "10-app.cfg", "a") as f:
        for i in range(n):
            f.write(f"    server b{i:05d} 127.0.0.1:9 weight 10\n")
    with open(etc / "hosts.map", "a") as f:
        for i in range(n):
            f.write(f"host{i:05d}.example.com app\n")
    staging = base / "staging"
    staging.mkdir()
    h.start()
    for i in range(0, n, 10):
        h.ok(f"set server app/b{i:05d} state maint")
    for i in range(3, n, 7):
        h.ok(f"set server app/b{i:05d} weight {i % 50 + 1}")
    return h, component_toml(h, etc, staging)


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
    ap.add_argument("--zookeeper-znodes", default="10000,100000")
    ap.add_argument("--prometheus-series", default="1000,10000")
    ap.add_argument("--haproxy-entries", default="100,10000")
    ap.add_argument("--postgresql-scales", default="10,100")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes_mb.split(",")]
    rows = []
    for component in args.components.split(","):
        sizes_of = {"kafka": args.kafka_sizes_mb, "zookeeper": args.zookeeper_znodes, "prometheus": args.prometheus_series,
                    "haproxy": args.haproxy_entries, "postgresql": args.postgresql_scales}
        for mb in ([int(s) for s in sizes_of[component].split(",")] if component in sizes_of else sizes):
            with tempfile.TemporaryDirectory(prefix="cairn-drill-bench-", dir="/var/tmp") as tmp:
                base = pathlib.Path(tmp)
                c = Cluster(base / "cluster")
                member = broker = zk = prom = lb = pg = None
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
                    elif component == "zookeeper":
                        from servers_zookeeper import ZooKeeper
                        zk = ZooKeeper(base, "zk")
                        zk.write_config()
                        zk.start()
                        zk.wait_serving()
                        fill_zookeeper(zk, mb)
                        c.add_agent("node-a", components=zk.component() + drill)
                    elif component == "prometheus":
                        from servers_prometheus import Prometheus
                        prom = Prometheus(base / "prometheus")
                        prom.backfill(series=mb, start=time.time() - 8 * 3600, seconds=6 * 3600, step=60)
                        prom.start()
                        c.add_agent("node-a", components=prom.component_toml() + drill)
                    elif component == "haproxy":
                        lb, toml = haproxy_rig(base, mb)
                        c.add_agent("node-a", components=toml + drill)
                    elif component == "postgresql":
                        from cluster import AGENT
                        from servers_postgresql import Postgres
                        pg = Postgres(AGENT)
                        pg.start()
                        c.add_agent("node-a", components=pg.component_toml() + drill)
                        c.enrol("node-a")
                        pg.pgbench("-i", "-s", str(mb), "-q")
                        print(f"postgresql: pgbench scale {mb}, database "
                              f"{int(pg.value('SELECT pg_database_size(current_database())')) / 2**20:.0f} MiB", flush=True)
                    else:
                        c.add_agent("node-a", components=drill)
                        fill_files(c.agent_dirs["node-a"]["data"], mb)
                    if component != "postgresql":
                        c.enrol("node-a")
                    name = {"files": "data", "haproxy": "lb", "postgresql": "pg"}.get(component, component)
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
                    if zk:
                        zk.stop()
                    if prom:
                        prom.stop()
                    if lb:
                        lb.stop()
                    if pg:
                        pg.cleanup()
                    c.stop_all()
    units = {"kafka": "MiB", "zookeeper": "znodes", "prometheus": "series", "haproxy": "servers and map entries",
             "postgresql": "pgbench scale"}
    print("\n| component | data | restore s | start s | check s | RTO s | drill wall s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['component']} | {r['size_mb']} {units.get(r['component'], 'MB')} | {r.get('restore', 0)} | {r.get('start', '-')} | {r.get('check', 0)} | "
              f"{r['rto_s']} | {r['drill_wall_s']} |")


if __name__ == "__main__":
    main()
