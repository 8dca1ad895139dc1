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

Tests talk to the brokers with python3-confluent-kafka (librdkafka, Debian).
"""
import base64
import glob
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import time
import uuid

import pytest

from ports import free_port

CACHE = os.environ.get("CAIRN_KAFKA_CACHE", "/var/cache/cairn/kafka")
KRAFT_VERSION = os.environ.get("CAIRN_KAFKA_KRAFT_VERSION", "4.1.1")
ZK_VERSION = os.environ.get("CAIRN_KAFKA_ZK_VERSION", "3.9.1")


def lib_dir(version):
    return os.path.join(CACHE, version)


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
        (self.dir / "log4j.properties").write_text(
            "log4j.rootLogger=INFO, stdout\n"
            "log4j.appender.stdout=org.apache.log4j.ConsoleAppender\n"
            "log4j.appender.stdout.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n\n")

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
    def kraft(cls, d, version=KRAFT_VERSION, node_id=1):
        """A single combined broker+controller in KRaft mode, storage formatted."""
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
        k = cls(d, version, props, node_id)
        k.cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        k._java("kafka.tools.StorageTool", "format", f"--cluster-id={k.cluster_id}", "-c", str(k.config), check=True)
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
        cmd = ["java", "-Xmx256m", f"-Dlog4j.configuration=file:{self.dir / 'log4j.properties'}",
               "-cp", self._classpath(), main, *args]
        r = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            pytest.fail(f"{main} {' '.join(args)} exited {r.returncode}: {r.stderr[-2000:]}{r.stdout[-2000:]}")
        return r

    def start(self, timeout=90):
        """Starts the broker and waits until it answers metadata requests."""
        self.log_dir.mkdir(exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                ["java", "-Xmx512m", "-Xms128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                 f"-Dlog4j.configuration=file:{self.dir / 'log4j.properties'}",
                 "-cp", self._classpath(), "kafka.Kafka", str(self.config)],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        (self.dir / "server.pid").write_text(str(self.proc.pid))
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"Kafka {self.version} exited with {self.proc.returncode} before serving; "
                            f"log {self.log}:\n{self.log.read_text()[-3000:]}")
            if _listening(self.port) and self.ready():
                return self
            time.sleep(0.3)
        self.stop()
        pytest.fail(f"Kafka {self.version} did not serve on {self.bootstrap} within {timeout} s; log {self.log}")

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
        if not self.proc or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def create_topic(self, name, partitions=1, rf=1, config=None):
        from confluent_kafka.admin import AdminClient, NewTopic
        admin = AdminClient({"bootstrap.servers": self.bootstrap})  # alive until the futures are done
        fs = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=rf, config=config or {})])
        for f in fs.values():
            f.result(timeout=30)

    def console_producer(self, topic, lines, key_separator="\t"):
        """Kafka's own console producer (from the fetched jars): each line 'key<TAB>value'."""
        # Moved from the broker's Scala core to the tools module in 4.0.
        main = "kafka.tools.ConsoleProducer" if self.version.startswith("3.") else "org.apache.kafka.tools.ConsoleProducer"
        r = self._java(main, "--bootstrap-server", self.bootstrap, "--topic", topic,
                       "--property", "parse.key=true", "--property", f"key.separator={key_separator}",
                       stdin="".join(l + "\n" for l in lines))
        if r.returncode != 0:
            pytest.fail(f"kafka console producer exited {r.returncode}: {r.stderr[-2000:]}")

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


def kraft_or_fail(tmp_path, name="kafka"):
    require(KRAFT_VERSION)
    return Kafka.kraft(tmp_path / name).start()
