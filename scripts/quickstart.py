#!/usr/bin/env python3
"""cairn's main job on this host, end to end through the daemons (run by
scripts/quickstart.sh after it installed and built everything).

A controller and one agent on loopback; real etcd, ZooKeeper, Prometheus and
HAProxy servers from Debian's packages, each on free loopback ports with its
data in a fresh temporary directory; plus a directory of plain files. Each
component is backed up through the controller, damaged, restored through the
controller, and checked with the component's own tools. Every process is
stopped by its PID at the end and the directory removed. Exit 0 = OK.

The servers are started the way the integration tests start them
(tests/integration/servers_*.py): a real deployment declares systemd units in
the agent's configuration instead of the start/stop scripts used here.
"""
import hashlib
import json
import os
import pathlib
import shutil
import sys
import tempfile
import time
import traceback

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, os.fspath(ROOT / "tests" / "integration"))
os.environ.setdefault("CAIRN_BUILD_DIR", os.fspath(ROOT / "build"))

from cluster import Cluster, backup_set_id, lower_enum  # noqa: E402


def step(msg):
    print(f"== {msg}", flush=True)


def info(msg):
    print(f"   {msg}", flush=True)


def manifest(d):
    """sha256 of every regular file below d, by relative path."""
    out = {}
    for root, _, files in os.walk(d):
        for f in files:
            p = os.path.join(root, f)
            if os.path.isfile(p) and not os.path.islink(p):
                out[os.path.relpath(p, d)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


class Quickstart:
    def __init__(self, work):
        self.work = pathlib.Path(work)
        self.c = Cluster(self.work / "cairn")
        self.services = []  # (name, stop function), stopped in reverse order
        self.checks = []

    # ---- the control plane ------------------------------------------------
    def start_control_plane(self, components):
        step("keys, repository and controller (ports chosen by the controller, on loopback)")
        self.c.init()
        self.c.start_controller()
        info(f"controller: fleet tcp://127.0.0.1:{self.c.fleet_port}, operator {self.c.endpoint}")
        step("agent 'quickstart-node' with components: files 'data', " + ", ".join(n for n, _ in components))
        files = {"etc/hosts": open("/etc/hosts", "rb").read(), "member.db": os.urandom(4 << 20)}
        self.c.add_agent("quickstart-node", files, components="".join(t for _, t in components))
        self.c.enrol("quickstart-node")
        info("enrolled: the agent's CURVE key was approved with 'cairnctl agent approve'")

    def backup(self, component):
        rc, out, err = self.c.ctl("backup", "create", "--component", component, "--wait", timeout=600)
        if rc != 0:
            raise RuntimeError(f"backup of '{component}' exited {rc}\n{out}\n{err}")
        set_id = backup_set_id(out)
        shown = self.c.json("backup", "show", set_id)
        task = shown["tasks"][0]
        meta = json.loads(task.get("component_metadata") or "{}")
        info(f"backup set {set_id}: {lower_enum(shown['state'], 'set_state_')}, snapshot {task['snapshot_id'][:12]}")
        if meta:
            info("recorded: " + ", ".join(f"{k}={v}" for k, v in meta.items() if not isinstance(v, (list, dict)))[:300])
        return set_id, meta

    def restore(self, set_id, component):
        rc, out, err = self.c.ctl("restore", set_id, "--component", component, "--wait", timeout=900)
        if rc != 0:
            raise RuntimeError(f"restore of '{component}' from {set_id} exited {rc}\n{out}\n{err}")
        for line in out.splitlines():
            if line.startswith("restore ") and " created" in line:
                info(line.strip())
        info("restore complete (the state it replaced is kept in a safety backup)")

    def ok(self, name, what):
        self.checks.append(name)
        info(f"CHECK {name}: {what}")

    # ---- files --------------------------------------------------------------
    def files_roundtrip(self):
        step("files: a copy of /etc/hosts and a 4 MiB database file")
        data = self.c.agent_dirs["quickstart-node"]["data"]
        before = manifest(data)
        set_id, _ = self.backup("data")
        shutil.rmtree(data / "etc")
        with open(data / "member.db", "r+b") as f:
            f.seek(1 << 20)
            f.write(b"\0" * 65536)
        assert manifest(data) != before
        info("damaged: etc/ deleted, 64 KiB of member.db overwritten")
        self.restore(set_id, "data")
        after = manifest(data)
        if after != before:
            raise RuntimeError(f"files differ after the restore: {sorted(set(before.items()) ^ set(after.items()))[:5]}")
        self.ok("files", f"all {len(before)} files are back byte for byte")


    # ---- Prometheus -----------------------------------------------------------
    def start_prometheus(self):
        from servers_prometheus import Prometheus
        step("prometheus: a server scraping itself every second, admin API on loopback")
        self.prom = Prometheus(self.work / "prometheus")
        self.prom.start()
        self.services.append(("prometheus", self.prom.stop))
        info(f"{self.prom.url}, data {self.prom.data}")
        return ("prometheus", self.prom.component_toml("prometheus"))

    def prometheus_roundtrip(self):
        p = self.prom
        step("prometheus: backup of a few seconds of samples, data dir wiped, restore")
        p.wait_samples('up{job="self"}', 10)
        end = time.time()
        start = end - 600
        before = p.raw_samples('up{job="self"}', start, end)
        n = sum(len(v) for v in before.values())
        info(f"{n} samples of up{{job=\"self\"}} in the window")
        set_id, _ = self.backup("prometheus")
        p.stop()
        shutil.rmtree(p.data)
        p.start()
        if p.raw_samples('up{job="self"}', start, end) == before:
            raise RuntimeError("wiping the data dir left the samples in place")
        info("damaged: the TSDB directory deleted and the server restarted empty")
        self.restore(set_id, "prometheus")
        after = p.raw_samples('up{job="self"}', start, end)
        if after != before:
            raise RuntimeError(f"range query after the restore differs: {len(after)} series vs {len(before)}")
        self.ok("prometheus", f"a range query over the backed-up window returns the same {n} samples")

    # ---- ZooKeeper ----------------------------------------------------------
    # ---- etcd -----------------------------------------------------------------
    def start_etcd(self):
        from servers_etcd import EtcdMember
        step("etcd: a one-member cluster (client and peer URLs on loopback)")
        self.etcd = EtcdMember(self.work / "etcd", "m1")
        self.etcd.start()
        self.services.append(("etcd", self.etcd.stop))
        info(f"{self.etcd.client_url}, data {self.etcd.data_dir}")
        return ("etcd", self.etcd.component_toml("etcd"))

    def etcd_roundtrip(self):
        e = self.etcd
        step("etcd: 2,000 keys; backup through Maintenance.Snapshot; keys deleted and changed; restore")
        keys = {f"/registry/pods/ns-{i % 7}/pod-{i:05d}": f"spec-{i}" for i in range(2000)}
        e.put_many(keys)
        before = e.get_all()
        rev = e.revision()
        info(f"{len(before)} keys at revision {rev}")
        set_id, meta = self.backup("etcd")
        e.delete("/registry/pods/ns-1/", prefix=True)
        e.put_many({k: "changed" for k in list(keys)[:100]})
        if e.get_all() == before:
            raise RuntimeError("damaging etcd changed nothing")
        info(f"damaged: the keys of ns-1 deleted, 100 keys changed (now {len(e.get_all())} keys)")
        self.restore(set_id, "etcd")
        after = e.get_all()
        if after != before:
            raise RuntimeError(f"etcd keys differ after the restore: {len(after)} keys vs {len(before)}")
        st = e.status()
        info(f"endpoint status: revision {st['header']['revision']}, leader {st['leader']:x}, "
             f"a new cluster id {st['header']['cluster_id']:x} (a restore makes a new cluster)")
        self.ok("etcd", f"all {len(before)} keys and values are back, revision {meta.get('revision', '?')} as recorded")

    def start_zookeeper(self):
        from servers_zookeeper import ZooKeeper
        step("zookeeper: a standalone server (four-letter words srvr, mntr, ruok on loopback)")
        self.zk = ZooKeeper(self.work / "zookeeper", "zk")
        self.zk.write_config()
        self.zk.start()
        self.services.append(("zookeeper", self.zk.stop))
        self.zk.wait_serving()
        info(f"client port 127.0.0.1:{self.zk.port}, data {self.zk.data}")
        return ("zookeeper", self.zk.component("zookeeper"))

    def zookeeper_roundtrip(self):
        z = self.zk
        step("zookeeper: a tree of znodes; backup; the tree deleted; restore")
        tree = {"/app": "root", "/app/config": "retries=3"}
        tree.update({f"/app/member-{i}": f"host-{i}:9092" for i in range(20)})
        z.cli([f"create {p} {v}" for p, v in tree.items()])
        before = z.srvr()
        info(f"srvr: zxid {before['Zxid']}, {before['Node count']} znodes, mode {before['Mode']}")
        set_id, _ = self.backup("zookeeper")
        z.cli(["deleteall /app"])
        if z.cli(["get /app"]) != ["Node does not exist: /app"]:
            raise RuntimeError("deleting /app left it in place")
        info("damaged: /app and its 21 children deleted")
        self.restore(set_id, "zookeeper")
        z.wait_serving()
        got = z.cli([f"get {p}" for p in tree])
        if got != list(tree.values()):
            raise RuntimeError(f"znodes differ after the restore: {got[:5]}")
        after = z.srvr()
        kept = sorted(p for p in os.listdir(z.data) if p.startswith("version-2.cairn-old-"))
        info(f"srvr: zxid {after['Zxid']}, {after['Node count']} znodes; the replaced data is kept as {', '.join(kept)}")
        self.ok("zookeeper", f"all {len(tree)} znodes and their data are back (zkCli get)")

    # ---- HAProxy ------------------------------------------------------------
    def start_haproxy(self):
        from servers_haproxy import Haproxy, free_port, make_certificate
        step("haproxy: a configuration with an include directory, a map and a certificate")
        base = self.work / "haproxy"
        etc = base / "etc"
        (etc / "certs").mkdir(parents=True)
        (etc / "conf.d").mkdir()
        self.hap = Haproxy(base, [etc / "haproxy.cfg", etc / "conf.d"])
        make_certificate(etc / "certs" / "site.pem", "quickstart.example")
        (etc / "hosts.map").write_text("www.example.com app\n")
        (etc / "haproxy.cfg").write_text(f"""global
    crt-base {etc}/certs
    stats socket {self.hap.socket} mode 600 level admin
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
frontend web
    bind 127.0.0.1:{free_port()}
    bind 127.0.0.1:{free_port()} ssl crt site.pem
    http-request set-var(txn.be) req.hdr(host),lower,map_str({etc}/hosts.map,app)
    default_backend app
""")
        (etc / "conf.d" / "10-app.cfg").write_text(f"""backend app
    server s1 127.0.0.1:{free_port()} weight 10
    server s2 127.0.0.1:{free_port()} weight 20
""")
        staging = base / "staging"
        staging.mkdir()
        self.hap.start()
        self.hap_etc = etc
        self.services.append(("haproxy", self.hap.stop))
        info(f"pid {self.hap.pid()}, stats socket {self.hap.socket}")
        h = self.hap
        return ("lb", f"""[[component]]
name = "lb"
driver = "haproxy"
config = ["{etc / 'haproxy.cfg'}", "{etc / 'conf.d'}"]
stats_socket = "{h.socket}"
service = {{ reload_command = ["{h.reload_script}"], start_command = ["{h.start_script}"], stop_command = ["{h.stop_script}"] }}
staging_dir = "{staging}"
""")

    def haproxy_roundtrip(self):
        h, etc = self.hap, self.hap_etc
        step("haproxy: s1 put in maintenance and s2's weight set to 7 over the stats socket; backup")
        h.ok("set server app/s1 state maint")
        h.ok("set server app/s2 weight 7")
        servers = h.servers()
        files = manifest(etc)
        set_id, _ = self.backup("lb")
        (etc / "conf.d" / "10-app.cfg").write_text((etc / "conf.d" / "10-app.cfg").read_text().replace("weight 20", "weight 99"))
        (etc / "hosts.map").write_text("www.example.com other\n")
        h.reload()
        h.ok("set server app/s1 state ready")
        if h.servers() == servers:
            raise RuntimeError("resetting the servers' state changed nothing")
        info("damaged: the backend file and the map edited, haproxy reloaded, s1 back in service")
        self.restore(set_id, "lb")
        after = manifest(etc)
        kept = sorted(k for k in after if ".cairn-old-" in k)
        if {k: after.get(k) for k in files} != files:
            raise RuntimeError("haproxy's files differ after the restore")
        if h.servers() != servers:
            raise RuntimeError(f"'show servers state' differs after the restore: {h.servers()} vs {servers}")
        info(f"the replaced files are kept beside them: {', '.join(kept)}")
        self.ok("haproxy", f"{len(files)} files byte for byte, 'show servers state' as backed up (s1 in maintenance, s2 weight 7)")


def main():
    work = tempfile.mkdtemp(prefix="cairn-quickstart.")
    q = Quickstart(work)
    step(f"working in {work}")
    try:
        components = [q.start_etcd(), q.start_zookeeper(), q.start_prometheus(), q.start_haproxy()]
        q.start_control_plane(components)
        q.files_roundtrip()
        q.etcd_roundtrip()
        q.zookeeper_roundtrip()
        q.prometheus_roundtrip()
        q.haproxy_roundtrip()
        step(f"OK: {len(q.checks)} components backed up, damaged, restored and checked: {', '.join(q.checks)}")
        return 0
    except BaseException as e:  # pytest.fail raises outside Exception's tree
        if isinstance(e, KeyboardInterrupt):
            return 130
        print(f"== FAILED: {e}", file=sys.stderr)
        traceback.print_exc()
        print(q.c.logs(), file=sys.stderr)
        return 1
    finally:
        for name, stop in reversed(q.services):
            try:
                stop()
            except BaseException as e:
                print(f"   could not stop {name}: {e}", file=sys.stderr)
        q.c.stop_all()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
