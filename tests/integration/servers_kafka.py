"""Real Kafka brokers for the integration tests.

Debian does not package Kafka: scripts/fetch-kafka.sh (run by
scripts/install-deps.sh) copies the broker's jars from Maven Central into
${CAIRN_KAFKA_CACHE:-/var/cache/cairn/kafka}/<version>/ (tests/kafka/pom.xml),
and the tests start the broker with the JDK on free loopback ports, with its
data in the test's temp dir, and stop it by the PID it was started with.

Two versions, because users run both:
- 4.x in KRaft mode (`Kafka.kraft(dir)`): one process that is broker and
  controller, its storage formatted with a fresh cluster id;
- 3.9 in ZooKeeper mode (`Kafka.zookeeper(dir, zk_port)`), with Debian's
  ZooKeeper (servers_zookeeper.py).

Three-broker clusters (replication, RF 3) of either kind: `KafkaCluster`
below, with produce_keyed / consume_checksums / wait_isr.

Tests talk to the brokers with python3-confluent-kafka (librdkafka, Debian).
"""
import base64
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import time
import uuid

import pytest

import jvm
from ports import free_port

CACHE = os.environ.get("CAIRN_KAFKA_CACHE", "/var/cache/cairn/kafka")
KRAFT_VERSION = os.environ.get("CAIRN_KAFKA_KRAFT_VERSION", "4.1.1")
ZK_VERSION = os.environ.get("CAIRN_KAFKA_ZK_VERSION", "3.9.1")


def lib_dir(version):
    return os.path.join(CACHE, version)


# ---- JVM start-up ------------------------------------------------------
#
# About 90 brokers and 40 tool runs start per CI run; their start-up was
# most of the suite's JVM CPU (docs/testing.md § Time budget). Every JVM runs
# with C1 only and the serial collector (short-lived, small heaps), and with
# an application class-data archive of the broker's classes when one was made
# for this Kafka version and this JDK (`servers_kafka.py cds VERSION`, run by
# scripts/fetch-kafka.sh once per machine): about 40% less CPU to a broker's
# first answer. A missing or stale archive only costs that time back: the
# JVM then loads the classes from the jars (-Xshare:auto, its warning off).
JVM_FLAGS = ["-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]


def cds_archive(version):
    return jvm.archive_in(lib_dir(version))


def jvm_flags(version):
    return jvm.flags_with_archive(JVM_FLAGS, cds_archive(version))


def available(version):
    """Why this Kafka version cannot run here, or None."""
    if not shutil.which("java"):
        return "java is not installed"
    if not os.path.exists(os.path.join(lib_dir(version), ".complete")):
        return f"Kafka {version} is not in {lib_dir(version)}: run scripts/fetch-kafka.sh (needs maven and Maven Central)"
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        return "python3-confluent-kafka is not installed: apt-get install python3-confluent-kafka"
    return None


def require(version):
    why = available(version)
    if why:
        pytest.fail(why)  # installed by scripts/install-deps.sh: missing is a defect, not a skip


def _listening(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class Kafka:
    """One broker; `bootstrap` is its PLAINTEXT address."""

    def __init__(self, d, version, props, node_id):
        self.dir = pathlib.Path(d)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.version = version
        self.node_id = node_id
        self.port = props["_port"]
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.log_dir = self.dir / "logs"
        self.config = self.dir / "server.properties"
        self.log = self.dir / "server.log"
        self.proc = None
        lines = [f"{k}={v}" for k, v in props.items() if not k.startswith("_")]
        self.config.write_text("\n".join(lines) + "\n")
        (self.dir / "version").write_text(version)  # for `servers_kafka.py start DIR` (the agent's service)
        (self.dir / "log4j.properties").write_text(
            "log4j.rootLogger=INFO, stdout\n"
            "log4j.appender.stdout=org.apache.log4j.ConsoleAppender\n"
            "log4j.appender.stdout.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n\n")
        # Kafka 4.x logs through log4j2 (scripts/fetch-kafka.sh adds its SLF4J
        # binding): the broker at INFO into server.log, its tools at WARN on stderr.
        for name, level, target in (("log4j2.properties", "INFO", "SYSTEM_OUT"),
                                    ("log4j2-tools.properties", "WARN", "SYSTEM_ERR")):
            (self.dir / name).write_text(
                "status = warn\n"
                "appender.out.type = Console\n"
                "appender.out.name = OUT\n"
                f"appender.out.target = {target}\n"
                "appender.out.layout.type = PatternLayout\n"
                "appender.out.layout.pattern = [%d] %p %m (%c)%n\n"
                f"rootLogger.level = {level}\n"
                "rootLogger.appenderRef.out.ref = OUT\n"
                "logger.request.name = kafka.request.logger\n"
                "logger.request.level = WARN\n")

    @staticmethod
    def _common(d, port, node_id):
        return {
            "_port": port,
            "listeners": f"PLAINTEXT://127.0.0.1:{port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
            "log.dirs": str(pathlib.Path(d) / "logs"),
            "num.partitions": 1,
            "offsets.topic.replication.factor": 1,
            "transaction.state.log.replication.factor": 1,
            "transaction.state.log.min.isr": 1,
            "group.initial.rebalance.delay.ms": 0,
            "auto.create.topics.enable": "true",
            "log.flush.interval.messages": 1,  # what an acked record is: on disk when the test stops the broker
        }

    @classmethod
    def kraft(cls, d, version=KRAFT_VERSION, node_id=1, secure=None):
        """A single combined broker+controller in KRaft mode, storage formatted.
        secure: {"tls_dir": dir from make_tls(), "user": ..., "password": ...} adds a SASL_SSL
        listener (PLAIN and SCRAM-SHA-512 for that user, client certificates required) at
        `secure_bootstrap`; the PLAINTEXT one stays for the test's own clients."""
        port, cport = free_port(), free_port()
        props = cls._common(d, port, node_id)
        props.update({
            "process.roles": "broker,controller",
            "node.id": node_id,
            "controller.quorum.voters": f"{node_id}@127.0.0.1:{cport}",
            "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
        })
        format_args = []
        if secure:
            sport, t = free_port(), pathlib.Path(secure["tls_dir"])
            props.update({
                "listeners": props["listeners"] + f",SASL_SSL://127.0.0.1:{sport}",
                "advertised.listeners": props["advertised.listeners"] + f",SASL_SSL://127.0.0.1:{sport}",
                "listener.security.protocol.map": props["listener.security.protocol.map"] + ",SASL_SSL:SASL_SSL",
                "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-512",
                "listener.name.sasl_ssl.plain.sasl.jaas.config":
                    f'org.apache.kafka.common.security.plain.PlainLoginModule required user_{secure["user"]}="{secure["password"]}";',
                "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config":
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;",
                "listener.name.sasl_ssl.ssl.keystore.type": "PEM",
                "listener.name.sasl_ssl.ssl.keystore.location": str(t / "broker.pem"),
                "listener.name.sasl_ssl.ssl.truststore.type": "PEM",
                "listener.name.sasl_ssl.ssl.truststore.location": str(t / "ca.pem"),
                "listener.name.sasl_ssl.ssl.client.auth": "required",
            })
            format_args = ["--add-scram", f"SCRAM-SHA-512=[name={secure['user']},password={secure['password']}]"]
        k = cls(d, version, props, node_id)
        if secure:
            k.secure_bootstrap = f"127.0.0.1:{sport}"
        k.cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        k._java("kafka.tools.StorageTool", "format", f"--cluster-id={k.cluster_id}", "-c", str(k.config),
                *format_args, check=True)
        return k

    @classmethod
    def zookeeper(cls, d, zk_port, version=ZK_VERSION, node_id=1, chroot="/kafka"):
        """A broker in ZooKeeper mode against Debian's ZooKeeper at zk_port."""
        port = free_port()
        props = cls._common(d, port, node_id)
        props.update({"broker.id": node_id, "zookeeper.connect": f"127.0.0.1:{zk_port}{chroot}",
                      "zookeeper.connection.timeout.ms": 30000})
        return cls(d, version, props, node_id)

    def _classpath(self):
        return os.path.join(lib_dir(self.version), "*")

    def _java(self, main, *args, check=False, timeout=120, stdin=None):
        cmd = ["java", "-Xmx256m", *jvm_flags(self.version), f"-Dlog4j.configuration=file:{self.dir / 'log4j.properties'}",
               f"-Dlog4j2.configurationFile={self.dir / 'log4j2-tools.properties'}",
               "-cp", self._classpath(), main, *args]
        r = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            pytest.fail(f"{main} {' '.join(args)} exited {r.returncode}: {r.stderr[-2000:]}{r.stdout[-2000:]}")
        return r

    def start(self, timeout=90):
        """Starts the broker and waits until it answers metadata requests."""
        self.launch()
        return self.wait_ready(timeout)

    def launch(self):
        """Starts the JVM without waiting (a KRaft quorum member cannot serve alone: the
        cluster launches every node, then waits for each)."""
        if self.running():
            return self
        self.log_dir.mkdir(exist_ok=True)
        self.proc = _launch(self.dir, self.version)
        return self

    def pid(self):
        """The broker's PID when it runs: started by the test, or by the agent's
        service command (`servers_kafka.py start DIR`), from server.pid."""
        if self.proc is not None and self.proc.poll() is None:
            return self.proc.pid
        return _running_pid(self.dir)

    def running(self):
        return self.pid() is not None

    def stops(self):
        """[(began, ended)] of each stop the agent's stop command made (servers_kafka.py stop DIR)."""
        try:
            lines = (self.dir / "service.log").read_text().splitlines()
        except OSError:
            return []
        return [(float(w[1]), float(w[2])) for w in (ln.split() for ln in lines) if w and w[0] == "stop"]

    def log_tail(self, chars=3000):
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no server log)"

    def _check_alive(self):
        if self.proc is not None and self.proc.poll() is not None and _running_pid(self.dir) is None:
            pytest.fail(f"Kafka {self.version} (node {self.node_id}) exited with {self.proc.returncode} "
                        f"before serving; log {self.log}:\n{self.log_tail()}")

    def wait_ready(self, timeout=90):
        """Waits until the launched broker answers metadata requests listing itself."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            self._check_alive()
            if _listening(self.port) and self.ready():
                return self
            time.sleep(0.3)
        self.stop()
        pytest.fail(f"Kafka {self.version} did not serve on {self.bootstrap} within {timeout} s; "
                    f"log {self.log}:\n{self.log_tail()}")

    def ready(self):
        from confluent_kafka.admin import AdminClient
        try:
            admin = AdminClient({"bootstrap.servers": self.bootstrap})
            md = admin.list_topics(timeout=2)
            return any(b.id == self.node_id for b in md.brokers.values())
        except Exception:
            return False

    def stop(self, kill=False):
        """Stops the broker by its PID: SIGTERM (a clean shutdown) or SIGKILL."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
            return
        _stop_pid(self.dir, kill)  # started by the agent's service command

    def component_toml(self, name="kafka", extra="", bootstrap=None, stop="stop", kill_after=None):
        """The agent's [[component]] table for this broker; the agent stops and
        starts it with this module (`servers_kafka.py start|stop|kill DIR`). A
        dedicated KRaft controller has no broker to ask: no `bootstrap`.
        stop="hang": a stop command that never ends (a controlled shutdown
        waiting for a quorum that is gone), for the agent's escalation to its
        kill_command after kill_after seconds."""
        import sys
        py = sys.executable
        here = pathlib.Path(__file__).resolve()
        bootstrap = "" if getattr(self, "controller_only", False) else f'bootstrap = "{bootstrap or self.bootstrap}"\n'
        kill = f', kill_after_seconds = {kill_after}' if kill_after is not None else ""
        return (f'[[component]]\nname = "{name}"\ndriver = "kafka"\nlog_dirs = ["{self.log_dir}"]\n'
                f'config_file = "{self.config}"\n{bootstrap}'
                f'libs_dir = "{lib_dir(self.version)}"\nready_timeout_seconds = 180\n'
                f'service = {{ start_command = ["{py}", "{here}", "start", "{self.dir}"], '
                f'stop_command = ["{py}", "{here}", "{stop}", "{self.dir}"], '
                f'kill_command = ["{py}", "{here}", "kill", "{self.dir}"], timeout_seconds = 120{kill} }}\n{extra}')

    def create_topic(self, name, partitions=1, rf=1, config=None):
        from confluent_kafka.admin import AdminClient, NewTopic
        admin = AdminClient({"bootstrap.servers": self.bootstrap})  # alive until the futures are done
        fs = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=rf, config=config or {})])
        for f in fs.values():
            f.result(timeout=30)

    def read_all(self, topic, timeout=30):
        """Every record of partition 0 of topic, as (offset, key bytes, value bytes)."""
        from confluent_kafka import Consumer, TopicPartition
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "cairn-test-" + uuid.uuid4().hex,
                      "enable.auto.commit": False, "auto.offset.reset": "earliest"})
        try:
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
            c.assign([TopicPartition(topic, 0, lo)])
            out, deadline = [], time.time() + timeout
            while (not out or out[-1][0] < hi - 1) and hi > lo and time.time() < deadline:
                m = c.poll(1)
                if m is None or m.error():
                    continue
                out.append((m.offset(), m.key(), m.value()))
            return out
        finally:
            c.close()


def make_tls(d):
    """A CA, the broker's certificate (for 127.0.0.1) and a client certificate, with openssl:
    d/ca.pem, d/broker.pem (PKCS#8 key + certificate, Kafka's PEM keystore), d/client.crt,
    d/client.key (0600)."""
    d = pathlib.Path(d)
    d.mkdir(parents=True, exist_ok=True)

    def ossl(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
         "-subj", "/CN=cairn test CA")
    for name, ext in (("broker", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth"),
                      ("client", "extendedKeyUsage=clientAuth")):
        ossl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", f"/CN=cairn test {name}")
        (d / f"{name}.ext").write_text(ext + "\n")
        ossl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext")
        os.chmod(d / f"{name}.key", 0o600)
    (d / "broker.pem").write_text((d / "broker.key").read_text() + (d / "broker.crt").read_text())
    return d


def _launch(d, version, extra_jvm=()):
    """Starts a broker from its directory (server.properties, log4j.properties),
    output to server.log, its PID in server.pid; does not wait."""
    d = pathlib.Path(d)
    with open(d / "server.log", "ab") as out:
        proc = subprocess.Popen(
            ["java", "-Xmx512m", "-Xms128m", *jvm_flags(version), *extra_jvm,
             f"-Dlog4j.configuration=file:{d / 'log4j.properties'}",
             f"-Dlog4j2.configurationFile={d / 'log4j2.properties'}",
             "-cp", os.path.join(lib_dir(version), "*"), "kafka.Kafka", str(d / "server.properties")],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    (d / "server.pid").write_text(str(proc.pid))
    return proc


def _running_pid(d):
    """The PID in d/server.pid when that process is this broker's JVM (its
    command line names d's server.properties), else None."""
    d = pathlib.Path(d)
    try:
        pid = int((d / "server.pid").read_text().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read()
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return None
    except (OSError, ValueError, IndexError):
        return None
    return pid if str(d / "server.properties").encode() in cmd else None


def _stop_pid(d, kill=False, timeout=60):
    jvm.stop_pid(_running_pid, d, kill, timeout)


def kraft_or_fail(tmp_path, name="kafka"):
    require(KRAFT_VERSION)
    return Kafka.kraft(tmp_path / name).start()


# ---- clusters of three brokers (replication) -----------------------------
#
# `KafkaCluster.kraft(base)` starts n nodes of Kafka 4.x that are each broker
# and controller, with an n-voter static quorum (controller.quorum.voters),
# every node's storage formatted with the same cluster id;
# `KafkaCluster.zookeeper(base)` starts n brokers (broker.id 1..n) of Kafka 3.9
# against one Debian ZooKeeper (its own, or the one at zk_port). Each broker is
# a `Kafka` above (its own dir base/broker<id> with logs/, server.properties,
# server.log, server.pid), stopped by its PID; `stop_broker`/`start_broker`
# restart one, keeping its data.
#
#     with KafkaCluster.kraft(tmp_path / "kafka", segment_bytes=1 << 20) as kc:
#         kc.create_topic("t", partitions=6)            # RF 3
#         sent = produce_keyed(kc.bootstrap, "t", 6, 20000, 1000)
#         wait_isr(kc.bootstrap, "t")
#         assert consume_checksums(kc.bootstrap, "t") == sent


def _cluster_props(n):
    isr = min(2, n)
    return {
        "default.replication.factor": n,
        "min.insync.replicas": isr,
        "offsets.topic.replication.factor": n,
        "offsets.topic.num.partitions": 3,  # not 50 x n replicas on two cores
        "transaction.state.log.replication.factor": n,
        "transaction.state.log.min.isr": isr,
        "transaction.state.log.num.partitions": 3,
        "unclean.leader.election.enable": "false",
    }


def _merge(props, segment_bytes, extra):
    if segment_bytes is not None:
        props["log.segment.bytes"] = int(segment_bytes)
    for k, v in (extra or {}).items():
        if v is None:
            props.pop(k, None)  # None removes a default (e.g. log.flush.interval.messages)
        else:
            props[k] = v
    return props


class KafkaCluster:
    """n brokers of one Kafka version; `bootstrap` names all of them."""

    def __init__(self, base, version, mode, brokers, zk=None, own_zk=False, controllers=()):
        self.base = pathlib.Path(base)
        self.version = version
        self.mode = mode  # "kraft" or "zookeeper"
        self.brokers = brokers
        self.controllers = list(controllers)  # dedicated KRaft controllers (process.roles=controller)
        self.zk = zk
        self._own_zk = own_zk
        self.bootstrap = ",".join(b.bootstrap for b in brokers)
        self.cluster_id = None

    @classmethod
    def kraft(cls, base, n=3, version=KRAFT_VERSION, segment_bytes=None, props=None, format_timeout=120):
        """n combined broker+controller nodes (node.id 1..n), configured and formatted, not started."""
        require(version)
        base = pathlib.Path(base)
        ports = {i: (free_port(), free_port()) for i in range(1, n + 1)}
        voters = ",".join(f"{i}@127.0.0.1:{c}" for i, (_, c) in ports.items())
        brokers = []
        for i, (port, cport) in ports.items():
            d = base / f"broker{i}"
            p = Kafka._common(d, port, i)
            p.update(_cluster_props(n))
            p.update({
                "process.roles": "broker,controller",
                "node.id": i,
                "controller.quorum.voters": voters,
                "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
                "controller.listener.names": "CONTROLLER",
                "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "inter.broker.listener.name": "PLAINTEXT",
            })
            k = Kafka(d, version, _merge(p, segment_bytes, props), i)
            k.controller_port = cport
            brokers.append(k)
        kc = cls(base, version, "kraft", brokers)
        kc._format(format_timeout)
        return kc

    @classmethod
    def kraft_split(cls, base, controllers=1, brokers=2, version=KRAFT_VERSION, segment_bytes=None, props=None,
                    format_timeout=120):
        """Dedicated KRaft controllers (process.roles=controller, node.id 100..) and broker-only
        nodes (process.roles=broker, node.id 1..brokers, RF = brokers), configured and formatted,
        not started. A controller's log dir holds only the metadata log."""
        require(version)
        base = pathlib.Path(base)
        cports = {100 + i: free_port() for i in range(controllers)}
        voters = ",".join(f"{i}@127.0.0.1:{p}" for i, p in cports.items())
        ctrls = []
        for i, cport in cports.items():
            d = base / f"controller{i}"
            p = Kafka._common(d, cport, i)
            for k in ("advertised.listeners", "num.partitions", "offsets.topic.replication.factor",
                      "transaction.state.log.replication.factor", "transaction.state.log.min.isr",
                      "group.initial.rebalance.delay.ms", "auto.create.topics.enable"):
                p.pop(k)
            p.update({"process.roles": "controller", "node.id": i, "controller.quorum.voters": voters,
                      "listeners": f"CONTROLLER://127.0.0.1:{cport}", "controller.listener.names": "CONTROLLER",
                      "listener.security.protocol.map": "CONTROLLER:PLAINTEXT"})
            k = Kafka(d, version, p, i)
            k.controller_only = True
            k.controller_port = cport
            ctrls.append(k)
        nodes = []
        for i in range(1, brokers + 1):
            d = base / f"broker{i}"
            p = Kafka._common(d, free_port(), i)
            p.update(_cluster_props(brokers))
            port = p["_port"]
            p.update({"process.roles": "broker", "node.id": i, "controller.quorum.voters": voters,
                      "listeners": f"PLAINTEXT://127.0.0.1:{port}", "controller.listener.names": "CONTROLLER",
                      "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                      "inter.broker.listener.name": "PLAINTEXT"})
            nodes.append(Kafka(d, version, _merge(p, segment_bytes, props), i))
        kc = cls(base, version, "kraft", nodes, controllers=ctrls)
        kc._format(format_timeout)
        return kc

    def _format(self, timeout):
        """Formats every node's storage with one new cluster id; a JVM each, in parallel, bounded."""
        self.cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        nodes = self.controllers + self.brokers
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(min(3, len(nodes))) as ex:
            futs = [ex.submit(b._java, "kafka.tools.StorageTool", "format", f"--cluster-id={self.cluster_id}",
                              "-c", str(b.config), timeout=timeout) for b in nodes]
            results = [f.result() for f in futs]
        for b, r in zip(nodes, results):
            b.cluster_id = self.cluster_id
            if r.returncode != 0:
                pytest.fail(f"formatting node {b.node_id} exited {r.returncode}: {r.stderr[-2000:]}{r.stdout[-2000:]}")

    @classmethod
    def zookeeper(cls, base, n=3, version=ZK_VERSION, zk_port=None, segment_bytes=None, props=None,
                  chroot="/kafka"):
        """n brokers (broker.id 1..n) in ZooKeeper mode, configured, not started. Without zk_port the
        cluster has its own Debian ZooKeeper in base/zk, started by start() and stopped by stop()."""
        require(version)
        base = pathlib.Path(base)
        zk, own = None, False
        if zk_port is None:
            import servers_zookeeper
            why = servers_zookeeper.available()
            if why:
                pytest.fail(why)
            zk, own = servers_zookeeper.ZooKeeper(base, "zk"), True
            zk.write_config()
            zk_port = zk.port
        brokers = []
        for i in range(1, n + 1):
            d = base / f"broker{i}"
            p = Kafka._common(d, free_port(), i)
            p.update(_cluster_props(n))
            p.update({"broker.id": i, "zookeeper.connect": f"127.0.0.1:{zk_port}{chroot}",
                      "zookeeper.connection.timeout.ms": 30000})
            brokers.append(Kafka(d, version, _merge(p, segment_bytes, props), i))
        kc = cls(base, version, "zookeeper", brokers, zk=zk, own_zk=own)
        kc.zk_port = zk_port
        return kc

    # -- life cycle --

    def start(self, timeout=180):
        """Starts every broker (and its own ZooKeeper) and waits until each serves and the
        cluster's metadata lists all of them with a controller."""
        deadline = time.time() + timeout
        try:
            if self._own_zk:
                self.zk.start()
                self.zk.wait_serving(timeout=max(5, deadline - time.time()))
            for n in self.controllers:
                n.launch()
            for b in self.brokers:
                b.launch()
            for b in self.brokers:
                b.wait_ready(timeout=max(1, deadline - time.time()))
            self.wait_brokers(timeout=max(1, deadline - time.time()))
        except BaseException:
            self.stop(kill=True)
            raise
        return self

    def wait_brokers(self, ids=None, timeout=60):
        """Until every broker's metadata lists brokers `ids` (default: all) and a controller."""
        from confluent_kafka.admin import AdminClient
        want = set(ids if ids is not None else (b.node_id for b in self.brokers))
        deadline, seen = time.time() + timeout, {}
        while time.time() < deadline:
            ok = True
            for b in self.brokers:
                if not b.running():
                    continue
                try:
                    md = AdminClient({"bootstrap.servers": b.bootstrap}).list_topics(timeout=3)
                    seen[b.node_id] = (sorted(md.brokers), md.controller_id)
                    ok = ok and want <= set(md.brokers) and md.controller_id >= 0
                except Exception as e:
                    seen[b.node_id] = repr(e)
                    ok = False
            if ok:
                return
            for b in self.brokers:
                if b.node_id in want and b.proc is not None:
                    b._check_alive()  # one that exited fails with its log tail
            time.sleep(0.5)
        pytest.fail(f"Kafka cluster: brokers {sorted(want)} not all in the metadata after {timeout} s: {seen}")

    def stop(self, kill=False, timeout=60):
        """Stops every broker by its PID, all at once (SIGTERM: controlled shutdowns while the quorum is
        still there; SIGKILL for those not gone within timeout), then the dedicated controllers, then
        its own ZooKeeper."""
        self._stop_nodes(self.brokers, kill, timeout)
        self._stop_nodes(self.controllers, kill, timeout)
        if self._own_zk and self.zk is not None:
            self.zk.stop()

    @staticmethod
    def _stop_nodes(nodes, kill, timeout):
        live = [(b, b.pid()) for b in nodes]
        live = [(b, pid) for b, pid in live if pid is not None]
        for b, pid in live:
            try:
                os.killpg(pid, signal.SIGKILL if kill else signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.time() + timeout
        for b, pid in live:
            while b.running():
                if time.time() > deadline:
                    try:
                        os.killpg(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    deadline = time.time() + 30
                if b.proc is not None and b.proc.pid == pid:
                    try:
                        b.proc.wait(timeout=0.2)
                    except subprocess.TimeoutExpired:
                        pass
                else:
                    time.sleep(0.2)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def broker(self, node_id):
        for b in self.brokers:
            if b.node_id == node_id:
                return b
        raise KeyError(node_id)

    def pids(self):
        return {b.node_id: b.pid() for b in self.controllers + self.brokers if b.running()}

    def stop_broker(self, node_id, kill=False):
        """Stops one broker by its PID (SIGTERM: controlled shutdown; kill: SIGKILL); its data stays."""
        self.broker(node_id).stop(kill=kill)

    def start_broker(self, node_id, timeout=120):
        """Starts a stopped broker again on its data, port and config; waits until all brokers list it."""
        b = self.broker(node_id)
        deadline = time.time() + timeout
        if self.mode == "zookeeper":
            # After a SIGKILL its ephemeral /brokers/ids/<id> lives until the ZooKeeper session expires;
            # registering again before that is fatal. The other brokers list it until then.
            others = [o.node_id for o in self.brokers if o is not b and o.running()]
            self._wait_gone(node_id, others, timeout=max(1, deadline - time.time()))
        b.launch()
        b.wait_ready(timeout=max(1, deadline - time.time()))
        self.wait_brokers(ids=[o.node_id for o in self.brokers if o.running()],
                          timeout=max(1, deadline - time.time()))
        return b

    def _wait_gone(self, node_id, others, timeout):
        from confluent_kafka.admin import AdminClient
        deadline = time.time() + timeout
        while time.time() < deadline:
            listed = False
            for o in others:
                try:
                    md = AdminClient({"bootstrap.servers": self.broker(o).bootstrap}).list_topics(timeout=3)
                    listed = listed or node_id in md.brokers
                except Exception:
                    listed = True
            if not listed:
                return
            time.sleep(0.5)
        pytest.fail(f"Kafka cluster: broker {node_id} is still registered {timeout} s after it stopped")

    # -- topics --

    def create_topic(self, name, partitions=1, rf=None, config=None, timeout=60):
        """Creates a topic (replication factor: the number of brokers) and waits until every partition
        has a leader and its full ISR."""
        from confluent_kafka.admin import AdminClient, NewTopic
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        fs = admin.create_topics([NewTopic(name, num_partitions=partitions,
                                           replication_factor=rf or len(self.brokers), config=config or {})])
        for f in fs.values():
            f.result(timeout=timeout)
        return wait_isr(self.bootstrap, name, timeout=timeout)

    def topic_state(self, topic):
        return topic_state(self.bootstrap, topic)

    def leader(self, topic, partition):
        return topic_state(self.bootstrap, topic)[partition]["leader"]

    def partition_dir(self, node_id, topic, partition):
        return self.broker(node_id).log_dir / f"{topic}-{partition}"


# ---- records with checksums ----------------------------------------------

def _record_hash_update(h, key, value):
    """Length-prefixed (None: 0xffffffff), so record boundaries count: the hash says nothing of offsets."""
    for b in (key, value):
        if b is None:
            h.update(b"\xff\xff\xff\xff")
        else:
            h.update(len(b).to_bytes(4, "big"))
            h.update(b)


def keyed_record(i, value_size, seed=0):
    """Record i of produce_keyed: (key, value). The value is SHAKE-256 output: random-looking,
    incompressible, and the same on every run."""
    import hashlib
    key = f"key-{seed}-{i:09d}".encode()
    return key, hashlib.shake_256(b"cairn-kafka-value:" + key).digest(value_size)


def produce_keyed(bootstrap, topic, partitions, n, value_size, acks="all", seed=0, timeout=300,
                  producer_config=None):
    """Produces n keyed records, record i to partition i % partitions (keyed_record(i)), and
    waits for every delivery. Returns {partition: {"count": int, "sha256": hex}}: the records each
    partition got, hashed (key, value) in offset order as consume_checksums does. Idempotent with
    acks=all (no duplicates, no reordering on retries); otherwise one request in flight."""
    import hashlib
    from confluent_kafka import Producer
    conf = {"bootstrap.servers": bootstrap, "acks": acks, "linger.ms": 20, "compression.type": "none",
            "message.timeout.ms": int(timeout * 1000), "socket.timeout.ms": 30000}
    if str(acks) in ("all", "-1"):
        conf["enable.idempotence"] = True
    else:
        conf["max.in.flight.requests.per.connection"] = 1
    conf.update(producer_config or {})
    p = Producer(conf)
    got = {q: [] for q in range(partitions)}
    errors = []

    def delivered(i):
        def cb(err, msg):
            if err is not None:
                errors.append((i, err))
            else:
                got[msg.partition()].append((msg.offset(), i))
        return cb

    deadline = time.time() + timeout
    for i in range(n):
        key, value = keyed_record(i, value_size, seed)
        while True:
            try:
                p.produce(topic, value=value, key=key, partition=i % partitions, on_delivery=delivered(i))
                break
            except BufferError:
                if time.time() > deadline:
                    raise AssertionError(f"produce_keyed: local queue still full after {timeout} s")
                p.poll(0.2)
        if i % 1000 == 0:
            p.poll(0)
        if errors:
            break
    left = p.flush(max(1.0, deadline - time.time()))
    if errors or left:
        raise AssertionError(f"produce_keyed: {len(errors)} failed deliveries (first: {errors[:3]}), "
                             f"{left} not delivered within {timeout} s")
    out = {}
    for q, recs in got.items():
        recs.sort()
        h = hashlib.sha256()
        for _, i in recs:
            _record_hash_update(h, *keyed_record(i, value_size, seed))
        out[q] = {"count": len(recs), "sha256": h.hexdigest()}
    assert sum(v["count"] for v in out.values()) == n
    return out


def consume_checksums(bootstrap, topic, timeout=120):
    """Reads every partition of topic from its first offset to its high watermark (taken at the
    start). Returns {partition: {"count": int, "sha256": hex}} like produce_keyed."""
    import hashlib
    from confluent_kafka import Consumer, KafkaError, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "cairn-test-" + uuid.uuid4().hex,
                  "enable.auto.commit": False, "auto.offset.reset": "earliest",
                  "enable.partition.eof": True, "isolation.level": "read_uncommitted"})
    try:
        md = c.list_topics(topic, timeout=15)
        t = md.topics.get(topic)
        if t is None or t.error is not None or not t.partitions:
            raise AssertionError(f"consume_checksums: topic {topic}: {t.error if t else 'missing'}")
        hashes, counts, his, done = {}, {}, {}, set()
        assign = []
        for q in sorted(t.partitions):
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, q), timeout=15)
            hashes[q], counts[q], his[q] = hashlib.sha256(), 0, hi
            if hi <= lo:
                done.add(q)
            else:
                assign.append(TopicPartition(topic, q, lo))
        next_off = {tp.partition: tp.offset for tp in assign}
        if assign:
            c.assign(assign)
        deadline = time.time() + timeout
        while len(done) < len(his):
            if time.time() > deadline:
                raise AssertionError(f"consume_checksums: {topic} not read to its end in {timeout} s: "
                                     f"at {next_off}, ends {his}")
            for m in c.consume(num_messages=500, timeout=1.0):
                q = m.partition()
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF and m.offset() >= his[q]:
                        done.add(q)
                    continue
                if q in done or m.offset() < next_off[q] or m.offset() >= his[q]:
                    continue
                _record_hash_update(hashes[q], m.key(), m.value())
                counts[q] += 1
                next_off[q] = m.offset() + 1
                if m.offset() >= his[q] - 1:
                    done.add(q)
        return {q: {"count": counts[q], "sha256": hashes[q].hexdigest()} for q in sorted(his)}
    finally:
        c.close()


def topic_state(bootstrap, topic, timeout=10):
    """{partition: {"leader": id (-1: none), "replicas": [ids], "isr": [ids]}} from the metadata."""
    from confluent_kafka.admin import AdminClient
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=timeout)
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        raise LookupError(f"topic {topic}: {t.error if t else 'missing'}")
    return {q: {"leader": p.leader, "replicas": list(p.replicas), "isr": sorted(p.isrs)}
            for q, p in sorted(t.partitions.items())}


def wait_isr(bootstrap, topic, timeout=120):
    """Waits until every partition of topic has a leader and its ISR equals its replica set;
    returns topic_state. Fails with the last state seen."""
    deadline, state = time.time() + timeout, None
    while time.time() < deadline:
        try:
            state = topic_state(bootstrap, topic)
            if state and all(s["leader"] >= 0 and s["isr"] == sorted(s["replicas"]) for s in state.values()):
                return state
        except Exception as e:
            state = repr(e)
        time.sleep(0.5)
    pytest.fail(f"wait_isr: {topic} partitions not fully in sync after {timeout} s: {state}")


def make_cds_archive(version, work):
    """Writes cds_archive(version): a KRaft broker of that version started in `work`
    with -XX:ArchiveClassesAtExit, asked a topic's metadata, and stopped (the JVM
    writes the archive as it exits). Written under a temporary name and renamed,
    so a run that dies leaves no half archive. Returns its path."""
    archive = cds_archive(version)
    tmp = f"{archive}.tmp{os.getpid()}"
    k = Kafka.kraft(pathlib.Path(work) / "cds", version=version)
    k.proc = _launch(k.dir, version, extra_jvm=[f"-XX:ArchiveClassesAtExit={tmp}"])
    try:
        k.wait_ready(120)
        k.create_topic("cds")
    finally:
        _stop_pid(k.dir)
        if k.proc:
            k.proc.wait()
    return jvm.keep_archive(tmp, archive, k.log)


if __name__ == "__main__":
    # The agent's start_command / stop_command for a test broker: the agent
    # starts and stops it the way the tests do, by the PID in DIR/server.pid.
    import sys
    if len(sys.argv) == 3 and sys.argv[1] == "cds":
        jvm.archive_command(sys.argv, cds_archive, make_cds_archive, "cairn-kafka-cds-")
    if len(sys.argv) != 3 or sys.argv[1] not in ("start", "stop", "kill", "hang"):
        sys.exit(f"usage: {sys.argv[0]} start|stop|kill|hang DIR | cds VERSION")
    d = pathlib.Path(sys.argv[2])
    began = time.time()
    if sys.argv[1] == "stop":
        _stop_pid(d)
        with open(d / "service.log", "a") as f:  # when each stop ran (tests check the stop order)
            f.write(f"stop {began:.3f} {time.time():.3f}\n")
    elif sys.argv[1] == "kill":
        _stop_pid(d, kill=True)
    elif sys.argv[1] == "hang":
        time.sleep(3600)  # a stop that never ends; the agent kills this command, then the broker
    elif _running_pid(d) is None:
        _launch(d, (d / "version").read_text().strip())
    sys.exit(0)
