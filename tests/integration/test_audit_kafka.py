"""The audit trail on a real Kafka broker (4.x, KRaft; jars from Maven Central,
servers_kafka.py): the controller publishes its outbox, `cairn-audit` reads the
topic and verifies the chain and the signed checkpoints.

- every event the catalog holds reaches the topic once, in order, and verifies;
- Kafka stopped while operations happen and the controller restarted
  meanwhile: when Kafka is back, no gap and no duplicate;
- an event altered, removed or replayed on the topic (forged with Kafka's own
  console producer) is reported by cairn-audit as exactly that event;
- Kafka 3.9 in ZooKeeper mode; SASL_SSL with a client certificate.

Operations: refused CURVE handshakes with unknown keys (each one a
`login.refuse` event; the audit budget raised for the test) and the events of
the controller's own start.
"""
import concurrent.futures
import hashlib
import json
import os
import re
import subprocess
import time

import pytest

import curvezmq
import servers_kafka
from cluster import BUILD, Cluster, catalog

AUDIT = BUILD / "audit" / "cairn-audit"
TOPIC = "cairn.audit"


def refused_logins(c, n):
    """n handshakes with fresh unknown keys on the operator socket: n audit events."""
    server = curvezmq.z85_decode((c.keys / "controller-curve.pub").read_text().strip())
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        for name, _ in ex.map(lambda _: curvezmq.handshake(c.op_port, server), range(n)):
            assert name in (b"ERROR", None)


def catalog_events(c):
    con = catalog(c)
    try:
        return con.execute("SELECT count(*), coalesce(max(seq), 0) FROM audit_outbox").fetchone()
    finally:
        con.close()


def unpublished(c):
    con = catalog(c)
    try:
        return con.execute("SELECT count(*) FROM audit_outbox WHERE published_at IS NULL").fetchone()[0]
    finally:
        con.close()


def run_audit(c, kafka, topic=TOPIC, out=None, extra=()):
    out = out or (c.base / f"audit-{topic}.jsonl")
    if out.exists():
        out.unlink()
    p = subprocess.run([os.fspath(AUDIT), "--brokers", kafka.bootstrap, "--topic", topic,
                        "--trusted-keys", os.fspath(c.keys / "controller-signing.pub"),
                        "--from-beginning", "--until-end", "--output", os.fspath(out), "--timeout", "60", *extra],
                       capture_output=True, text=True, timeout=180)
    events = [json.loads(l) for l in out.read_text().splitlines()] if out.exists() else []
    return p.returncode, events, p.stderr


def summary(stderr):
    m = re.search(r"(\d+) events and (\d+) checkpoints verified, (\d+) problems", stderr)
    assert m, stderr
    return tuple(int(x) for x in m.groups())


@pytest.fixture
def kafka(tmp_path):
    servers_kafka.require(servers_kafka.KRAFT_VERSION)
    k = servers_kafka.Kafka.kraft(tmp_path / "kafka")
    k.start()
    try:
        yield k
    finally:
        k.stop()


def audited_cluster(base, kafka, checkpoint_every=100, create_topic=True):
    """A started controller publishing its audit trail to kafka's TOPIC (created here); the caller stops it."""
    if not AUDIT.exists():
        pytest.fail(f"binary not found: {AUDIT}")
    if create_topic:
        kafka.create_topic(TOPIC)
    c = Cluster(base)
    c.init()
    with open(c.controller_cfg, "a") as f:
        f.write(f"""[audit]
refusals_per_minute = 100000
[audit.kafka]
brokers = "{kafka.bootstrap}"
topic = "{TOPIC}"
checkpoint_every = {checkpoint_every}
checkpoint_interval_s = 1
""")
    try:
        c.start_controller()
    except BaseException:
        c.stop_all()
        raise
    return c


@pytest.fixture
def audited(tmp_path, kafka):
    c = audited_cluster(tmp_path / "cluster", kafka)
    try:
        yield c
    finally:
        c.stop_all()


def wait_published(c, timeout=60):
    c.wait_for("the audit outbox published to Kafka", lambda: unpublished(c) == 0, timeout=timeout)


def audit_until_signed(c, kafka, last, topic=TOPIC, extra=()):
    """cairn-audit, again until a signed checkpoint covers event `last` (events are
    verified only then; the controller signs every second in these tests)."""
    deadline = time.time() + 30
    while True:
        rc, events, err = run_audit(c, kafka, topic, extra=extra)
        if (events and events[-1]["seq"] >= last) or time.time() > deadline:
            return rc, events, err
        time.sleep(1)


def published_and_verified(c, kafka, operations):
    """operations refused logins → every event of the catalog published, and cairn-audit
    verifies the whole topic: every seq once, in order. Returns (last seq, events, stderr)."""
    refused_logins(c, operations)
    wait_published(c)
    count, last = catalog_events(c)
    assert count == last >= operations
    rc, events, err = audit_until_signed(c, kafka, last)
    assert rc == 0, err
    assert [e["seq"] for e in events] == list(range(1, last + 1))
    return last, events, err


def test_one_thousand_operations_reach_the_topic_and_verify(audited, kafka):
    c = audited
    last, events, err = published_and_verified(c, kafka, 1000)
    assert sum(e["action"] == "login.refuse" for e in events) == 1000
    n, checkpoints, problems = summary(err)
    assert (n, problems) == (last, 0)
    assert checkpoints >= last // 100, err
    # The records on the topic: every event exactly once.
    seqs = [json.loads(v)["seq"] for _, _, v in kafka.read_all(TOPIC) if json.loads(v)["kind"] == "event"]
    assert seqs == list(range(1, last + 1))
    status = c.ok("status")
    assert "audit publisher   publishing" in status, status


def test_kafka_down_and_controller_restarted_no_gap_no_duplicate(audited, kafka):
    c = audited
    refused_logins(c, 50)
    wait_published(c)
    kafka.stop()
    refused_logins(c, 100)  # the controller keeps working; events wait
    c.wait_for("the publisher reporting that events wait",
               lambda: "waiting for Kafka" in c.ctl("status")[1] or None, timeout=60)
    assert unpublished(c) >= 100
    c.controller.stop()
    c.start_controller()
    refused_logins(c, 50)
    assert unpublished(c) >= 150
    kafka.start()
    wait_published(c, timeout=120)
    count, last = catalog_events(c)
    assert count == last >= 200
    rc, events, err = audit_until_signed(c, kafka, last)
    assert rc == 0, err
    assert [e["seq"] for e in events] == list(range(1, last + 1))
    seqs = [json.loads(v)["seq"] for _, _, v in kafka.read_all(TOPIC) if json.loads(v)["kind"] == "event"]
    assert seqs == list(range(1, last + 1)), "a duplicate or a gap on the topic itself"


def produce(kafka, topic, values, key=b"cairn-audit"):
    """Records written as an attacker with produce rights writes them: with
    librdkafka (confluent_kafka), keyed like the controller's."""
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": kafka.bootstrap})
    for v in values:
        p.produce(topic, key=key, value=v if isinstance(v, bytes) else v.encode(), partition=0)
    assert p.flush(30) == 0


def copy_topic(kafka, records, name, skip_seq=None):
    """A new topic with the given records in order (optionally one event left out)."""
    from confluent_kafka import Producer
    kafka.create_topic(name)
    p = Producer({"bootstrap.servers": kafka.bootstrap})
    for _, k, v in records:
        if skip_seq is not None and json.loads(v).get("kind") == "event" and json.loads(v)["seq"] == skip_seq:
            continue
        p.produce(name, key=k, value=v, partition=0)
    assert p.flush(30) == 0


def test_altered_removed_and_replayed_events_are_reported_as_exactly_those(audited, kafka):
    c = audited
    published_and_verified(c, kafka, 30)  # the untouched topic verifies
    records = kafka.read_all(TOPIC)
    by_seq = {json.loads(v)["seq"]: v for _, _, v in records if json.loads(v)["kind"] == "event"}
    assert len(by_seq) >= 30

    # Altered: event 10 with another outcome, forged with librdkafka.
    altered = json.loads(by_seq[10])
    altered["outcome"] = "ok"
    altered["actor"] = "operator:mallory"
    copy_topic(kafka, records, "t-altered")
    produce(kafka, "t-altered", [json.dumps(altered, separators=(",", ":"))])
    rc, events, err = run_audit(c, kafka, "t-altered")
    assert rc == 1, err
    problems = [l for l in err.splitlines() if l.startswith("cairn-audit: ") and ": event " in l]
    assert len(problems) == 1 and problems[0].startswith("cairn-audit: altered: event 10 "), err
    assert [e["seq"] for e in events] == sorted(by_seq)  # the genuine ones all verify

    # Removed: event 7 left out of a copy of the topic.
    copy_topic(kafka, records, "t-removed", skip_seq=7)
    rc, events, err = run_audit(c, kafka, "t-removed")
    assert rc == 1, err
    assert "cairn-audit: gap: events 7 are missing" in err, err
    assert summary(err)[2] == 1, err
    assert 7 not in [e["seq"] for e in events]

    # Replayed: event 5 produced again, byte for byte.
    copy_topic(kafka, records, "t-replayed")
    produce(kafka, "t-replayed", [by_seq[5]])
    rc, events, err = run_audit(c, kafka, "t-replayed")
    assert rc == 1, err
    assert "cairn-audit: duplicate: event 5 " in err, err
    assert summary(err)[2] == 1, err


def test_the_audit_trail_on_kafka_3_9_in_zookeeper_mode(tmp_path):
    """Users run both: the same publisher and cairn-audit against Kafka 3.9 with Debian's ZooKeeper."""
    import servers_zookeeper
    servers_kafka.require(servers_kafka.ZK_VERSION)
    if servers_zookeeper.available():
        pytest.fail(servers_zookeeper.available())
    zk = servers_zookeeper.ZooKeeper(tmp_path, "zk")
    zk.write_config()
    zk.start()
    kafka = c = None
    try:
        zk.wait_serving()
        kafka = servers_kafka.Kafka.zookeeper(tmp_path / "kafka", zk.port).start()
        c = audited_cluster(tmp_path / "cluster", kafka, checkpoint_every=50)
        last, _, err = published_and_verified(c, kafka, 200)
        assert summary(err)[1] >= last // 50, err
        # A forged record with a high seq (issue 33), then a restart: ignored, reported, nothing withheld.
        produce(kafka, TOPIC, [json.dumps({"kind": "event", "v": 1, "seq": 5000, "hash": "0"})])
        c.controller.stop()
        c.start_controller()
        refused_logins(c, 20)
        wait_published(c)
        _, last = catalog_events(c)
        seqs = [json.loads(v)["seq"] for _, _, v in kafka.read_all(TOPIC) if json.loads(v)["kind"] == "event"]
        assert set(range(1, last + 1)) <= set(seqs), "events withheld after a forged record"
        assert "did not write" in c.ok("status")
    finally:
        if c:
            c.stop_all()
        if kafka:
            kafka.stop()
        zk.stop()


def test_the_audit_trail_over_sasl_ssl_with_a_client_certificate(tmp_path):
    """The publisher and cairn-audit with the settings a secured cluster needs:
    SASL_SSL (PLAIN; the password from a 0600 file), the broker's certificate
    checked against a CA, a client certificate the broker requires. Every
    event reaches the topic and verifies; the password is in no log."""
    servers_kafka.require(servers_kafka.KRAFT_VERSION)
    tls = servers_kafka.make_tls(tmp_path / "tls")
    password = "audit-" + os.urandom(6).hex()
    kafka = servers_kafka.Kafka.kraft(tmp_path / "kafka", secure={"tls_dir": tls, "user": "cairn", "password": password})
    kafka.start()
    c = None
    try:
        pw = tmp_path / "sasl-password"
        pw.write_text(password + "\n")
        os.chmod(pw, 0o600)
        kafka.create_topic(TOPIC)
        c = Cluster(tmp_path / "cluster")
        c.init()
        security = (f'security_protocol = "sasl_ssl"\nsasl_mechanism = "PLAIN"\nsasl_username = "cairn"\n'
                    f'sasl_password_file = "{pw}"\nssl_ca_file = "{tls / "ca.pem"}"\n'
                    f'ssl_cert_file = "{tls / "client.crt"}"\nssl_key_file = "{tls / "client.key"}"\n')
        with open(c.controller_cfg, "a") as f:
            f.write(f'[audit]\nrefusals_per_minute = 100000\n[audit.kafka]\nbrokers = "{kafka.secure_bootstrap}"\n'
                    f'topic = "{TOPIC}"\ncheckpoint_every = 50\ncheckpoint_interval_s = 1\n{security}')
        c.start_controller()
        refused_logins(c, 200)
        wait_published(c)
        count, last = catalog_events(c)
        assert count == last >= 200

        # cairn-audit over the same listener, from its configuration file.
        cfg = tmp_path / "audit.toml"
        cfg.write_text(f'[kafka]\nbrokers = "{kafka.secure_bootstrap}"\ntopic = "{TOPIC}"\n{security}')
        out = tmp_path / "audit.jsonl"
        deadline = time.time() + 30
        while True:  # until a checkpoint covers the last event
            out.unlink(missing_ok=True)
            p = subprocess.run([os.fspath(AUDIT), "--config", os.fspath(cfg),
                                "--trusted-keys", os.fspath(c.keys / "controller-signing.pub"),
                                "--from-beginning", "--until-end", "--output", os.fspath(out), "--timeout", "60"],
                               capture_output=True, text=True, timeout=180)
            assert p.returncode == 0, p.stderr
            events = [json.loads(line) for line in out.read_text().splitlines()]
            if events[-1]["seq"] >= last or time.time() > deadline:
                break
            time.sleep(1)
        assert [e["seq"] for e in events] == list(range(1, last + 1))
        assert summary(p.stderr)[1] >= last // 50, p.stderr
        assert password not in c.logs() and password not in p.stderr
    finally:
        if c:
            c.stop_all()
        kafka.stop()
