"""The audit trail fails closed (issue 33), on a real Kafka 4.x broker: an
attacker with produce rights on the topic but without the controller's signing
key (records forged with librdkafka, confluent_kafka) can neither silence the
controller nor get cairn-audit to vouch for what no signed checkpoint covers.

Controller: a forged record with a high seq on the live topic, a second
controller on the same topic, the topic cut back while the controller runs,
the topic recreated holding only a copied genuine checkpoint, the outbox bound applied as events are added, a compacted topic.
cairn-audit: a chain with no checkpoint at all, a tail cut right after a
checkpoint, a head removed, two events with one seq.
"""
import hashlib
import json
import time
import urllib.request

import pytest

from cluster import catalog
from test_audit_kafka import (AUDIT, TOPIC, audited, audited_cluster, audit_until_signed, catalog_events, kafka,  # noqa: F401
                              produce, refused_logins, run_audit, summary, unpublished, wait_published)


def audit_hash(e):
    """common/audit/chain.h: SHA-256 over "cairn-audit-v1" and each field length-prefixed."""
    b = b"cairn-audit-v1"
    for f in ("event_id", "seq", "time", "actor", "action", "target", "outcome", "reason", "details", "prev_hash"):
        v = str(e[f]).encode()
        b += len(v).to_bytes(4, "big") + v
    return hashlib.sha256(b).hexdigest()


def records(kafka, topic=TOPIC):
    return [(o, json.loads(v)) for o, _, v in kafka.read_all(topic)]


def event_seqs(kafka, topic=TOPIC):
    return [r["seq"] for _, r in records(kafka, topic) if r["kind"] == "event"]


def catalog_actions(c):
    con = catalog(c)
    try:
        return [r[0] for r in con.execute("SELECT action FROM audit_outbox ORDER BY seq")]
    finally:
        con.close()


def signed_batches(c, batches, n=20):
    """batches x n audit events, each batch signed (the controller signs every second here)
    before the next: checkpoints between the events, as a running controller leaves them."""
    for _ in range(batches):
        refused_logins(c, n)
        time.sleep(1.5)


def copy(kafka, name, recs):
    kafka.create_topic(name)
    produce(kafka, name, [json.dumps(r, separators=(",", ":")) for _, r in recs])


def recreate(kafka, recs):
    from confluent_kafka.admin import AdminClient
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    for f in admin.delete_topics([TOPIC]).values():
        f.result(timeout=30)
    deadline = time.time() + 30
    while TOPIC in admin.list_topics(timeout=10).topics:
        assert time.time() < deadline, "the topic is not gone"
        time.sleep(0.5)
    copy(kafka, TOPIC, recs)


def test_a_forged_high_seq_does_not_make_the_controller_withhold_events(audited, kafka):
    """A record {"seq": 5000} with a junk signature on the live topic, then a
    controller restart: the controller ignores it (it is not its own chain),
    says so loudly (log, status, an audit event), and publishes every event
    after it; its status counts checkpoints again after the restart."""
    c = audited
    refused_logins(c, 20)
    wait_published(c)
    forged = {"kind": "checkpoint", "v": 1, "seq": 5000, "hash": "0" * 64, "time": int(time.time() * 1000),
              "key_id": "k", "public_key": "ed25519:AAAA", "signature": "AAAA", "announcements": []}
    produce(kafka, TOPIC, [json.dumps(forged), json.dumps({"kind": "event", "v": 1, "seq": 5001, "hash": "x"})])
    c.controller.stop()
    c.start_controller()
    refused_logins(c, 39)
    wait_published(c)  # without the fix: everything up to 5000 marked published, nothing more sent
    count, last = catalog_events(c)
    seqs = event_seqs(kafka)
    assert set(range(1, last + 1)) <= set(seqs), f"events withheld: the topic holds {sorted(set(seqs))[-5:]}, the catalog up to {last}"
    assert "did not write" in c.controller.log.read_text(), c.logs()
    st = c.wait_for("a checkpoint counted since the restart", lambda: (lambda s: s if "0 checkpoints" not in s else None)(c.ok("status")), timeout=20)
    assert "audit publisher   publishing" in st and "audit topic       PROBLEM" in st and "did not write" in st, st
    assert "audit.topic_foreign" in catalog_actions(c)
    c.wait_for("/metrics saying the topic has a problem", lambda: "cairn_audit_topic_problem 1" in
               urllib.request.urlopen(c.http_url() + "metrics", timeout=10).read().decode() or None, timeout=20)
    # cairn-audit names the forgeries and still verifies the genuine chain.
    time.sleep(2)  # the controller signs every second: its newest event covered
    rc, events, err = audit_until_signed(c, kafka, last)
    assert rc == 1, err
    assert "checkpoint_key" in err or "checkpoint_signature" in err, err
    assert [e["seq"] for e in events] == list(range(1, last + 1))


def test_two_controllers_on_one_topic_withhold_nothing_from_each_other(tmp_path, kafka):
    """A second controller (its own key) writing to the same topic: after
    restarts, each still publishes every one of its events; each says the
    topic holds records it did not write."""
    a = audited_cluster(tmp_path / "a", kafka)
    b = None
    try:
        b = audited_cluster(tmp_path / "b", kafka, create_topic=False)
        for c in (a, b):
            refused_logins(c, 10)
            wait_published(c)
        for c in (a, b):
            c.controller.stop()
            c.start_controller()
        for c in (a, b):
            refused_logins(c, 15)
        for c in (a, b):
            wait_published(c)
        hashes = {r["hash"] for _, r in records(kafka) if r["kind"] == "event"}
        for c in (a, b):
            con = catalog(c)
            try:
                mine = {h for (h,) in con.execute("SELECT hash FROM audit_outbox")}
            finally:
                con.close()
            assert mine <= hashes, f"{len(mine - hashes)} event(s) of {c.base.name} never reached the topic"
            assert "did not write" in c.ok("status")
    finally:
        a.stop_all()
        if b:
            b.stop_all()


def test_the_topic_cut_back_while_the_controller_runs_is_filled_again_from_the_outbox(audited, kafka):
    """The topic recreated holding only the records up to an earlier
    checkpoint, while the controller runs: it notices within seconds, sends
    the missing events again from its outbox, and says what happened (log,
    status, an audit.topic_rewound event)."""
    c = audited
    signed_batches(c, 3)
    wait_published(c)
    _, last = catalog_events(c)
    recs = records(kafka)
    cut = next(i for i, (_, r) in enumerate(recs) if r["kind"] == "checkpoint" and 10 <= r["seq"] < last - 10)
    recreate(kafka, recs[:cut + 1])
    c.wait_for("the controller sending the lost events again",
               lambda: set(range(1, last + 1)) <= set(event_seqs(kafka)) or None, timeout=90, interval=2)
    assert "cut back or recreated" in c.controller.log.read_text(), c.logs()
    assert "audit.topic_rewound" in catalog_actions(c)
    assert "cut back or recreated" in c.ok("status")


@pytest.mark.parametrize("when", ["stopped", "running"])
def test_a_topic_recreated_with_only_a_copied_checkpoint_gets_every_event_again(audited, kafka, when):
    """The topic recreated holding one genuine checkpoint (signed by this
    controller, covering its newest event) and none of the events: the
    checkpoint vouches for nothing the topic holds, so the controller, whether
    it was stopped then or running, sends every event again from its outbox
    and says why (log, status, audit.topic_rewound). Without the check it took
    the checkpoint as the topic's end and sent nothing."""
    c = audited
    signed_batches(c, 2)
    wait_published(c)
    _, last = catalog_events(c)
    cps = [(o, r) for o, r in records(kafka) if r["kind"] == "checkpoint" and r["seq"] == last]
    deadline = time.time() + 30
    while not cps:
        assert time.time() < deadline, "no checkpoint covers the newest event"
        time.sleep(1)
        cps = [(o, r) for o, r in records(kafka) if r["kind"] == "checkpoint" and r["seq"] == last]
    if when == "stopped":
        c.controller.stop()
        recreate(kafka, cps[-1:])
        c.start_controller()
    else:
        recreate(kafka, cps[-1:])
    c.wait_for("the controller sending every event again",
               lambda: set(range(1, last + 1)) <= set(event_seqs(kafka)) or None, timeout=90, interval=2)
    log = c.controller.log.read_text()
    assert "holds checkpoints only" in log and f"not event {last} at offset" in log, c.logs()
    assert "audit.topic_rewound" in catalog_actions(c)
    assert "holds checkpoints only" in c.ok("status")


def test_checkpoints_only_at_the_end_of_the_genuine_topic_resend_nothing(audited, kafka):
    """The other side: an idle controller's topic ends in its own checkpoints
    (here 80 more copies of its newest, more than the tail it reads at start),
    its events still before them. A restart believes them: nothing is sent
    twice, no rewind is reported, and new events follow."""
    c = audited
    refused_logins(c, 20)
    wait_published(c)
    _, last = catalog_events(c)
    deadline = time.time() + 30
    while not (cps := [r for _, r in records(kafka) if r["kind"] == "checkpoint" and r["seq"] == last]):
        assert time.time() < deadline, "no checkpoint covers the newest event"
        time.sleep(1)
    c.controller.stop()
    produce(kafka, TOPIC, [json.dumps(cps[-1], separators=(",", ":"))] * 80)
    c.start_controller()
    refused_logins(c, 5)
    wait_published(c)
    _, now = catalog_events(c)
    assert event_seqs(kafka) == list(range(1, now + 1)), "an event sent twice, or one missing"
    assert "audit.topic_rewound" not in catalog_actions(c)
    assert "holds checkpoints only" not in c.controller.log.read_text(), c.logs()


def test_the_outbox_bound_holds_as_events_are_added(audited, kafka):
    """Kafka down, outbox_max_events = 1000: the outbox never holds more than
    that (not only after the next 10-minute sweep); the loss is logged as an
    error and recorded by audit.dropped events."""
    c = audited
    wait_published(c)
    c.controller.stop()
    c.controller_cfg.write_text(c.controller_cfg.read_text().replace("checkpoint_every = 100",
                                                                     "checkpoint_every = 100\noutbox_max_events = 1000"))
    kafka.stop()
    c.start_controller()
    refused_logins(c, 1150)
    assert unpublished(c) <= 1000, unpublished(c)
    assert "audit.dropped" in catalog_actions(c)
    log = c.controller.log.read_text()
    assert "unpublished event(s) lost" in log and "[error]" in log.split("unpublished event(s) lost")[0].splitlines()[-1], log[-3000:]
    kafka.start()


def test_a_compacted_topic_is_refused(audited, kafka):
    """Every record has one key: a compacted topic would keep one. cairn-audit
    refuses it (exit 2, saying what to set); the controller reports it."""
    c = audited
    kafka.create_topic("t-compact", config={"cleanup.policy": "compact"})
    produce(kafka, "t-compact", [b'{"kind":"event"}'])  # the topic's partition known to every client
    rc, events, err = run_audit(c, kafka, "t-compact")
    assert rc == 2 and "cleanup.policy=compact" in err and "cleanup.policy=delete" in err, err


def test_cairn_audit_vouches_only_for_what_a_signed_checkpoint_covers(audited, kafka):
    """Each case a copy of the genuine topic, altered as an attacker with
    produce rights could: cairn-audit exits 1, names the problem, and writes
    only events a signed checkpoint covers."""
    c = audited
    signed_batches(c, 3)
    wait_published(c)
    _, last = catalog_events(c)
    rc, events, err = audit_until_signed(c, kafka, last)
    assert rc == 0, err
    recs = [(o, r) for o, r in records(kafka) if r["kind"] == "event" or r["seq"] <= last]
    evs = {r["seq"]: r for _, r in recs if r["kind"] == "event"}

    # No checkpoint at all (a chain rebuilt from genesis): nothing verified, exit 1.
    copy(kafka, "t-nocp", [(o, r) for o, r in recs if r["kind"] == "event"])
    rc, events, err = run_audit(c, kafka, "t-nocp")
    assert rc == 1 and events == [] and "stale: no signed checkpoint" in err, err

    # A tail cut right after a checkpoint: older than the interval + grace, stale.
    cp = next(i for i, (_, r) in enumerate(recs) if r["kind"] == "checkpoint" and 10 <= r["seq"] < last - 5)
    signed = recs[cp][1]["seq"]
    copy(kafka, "t-cut", recs[:cp + 1])
    # And the chain rewritten after that checkpoint, later checkpoints removed:
    # three events with consistent hashes that no checkpoint covers.
    rewritten, prev = [], evs[signed]["hash"]
    for seq in range(signed + 1, signed + 4):
        e = dict(evs[seq], actor="operator:mallory", prev_hash=prev)
        e["hash"] = prev = audit_hash(e)
        rewritten.append((-1, e))
    copy(kafka, "t-rewritten", recs[:cp + 1] + rewritten)
    time.sleep(3)
    for topic in ("t-cut", "t-rewritten"):
        rc, events, err = run_audit(c, kafka, topic, extra=("--checkpoint-interval", "1", "--grace", "1"))
        assert rc == 1 and "stale: the newest signed checkpoint" in err, err
        assert [e["seq"] for e in events] == list(range(1, signed + 1)), err
    assert f"unsigned: 3 event(s) {signed + 1}..{signed + 3}" in err, err

    # The head removed (what DeleteRecords leaves: the topic starts at event 17).
    start = next(i for i, (_, r) in enumerate(recs) if r["kind"] == "event" and r["seq"] == 17)
    copy(kafka, "t-head", recs[start:])
    rc, events, err = run_audit(c, kafka, "t-head")
    assert rc == 1 and "gap: events 1..16 are missing" in err and "--from-seq 17" in err, err
    rc, events, err = run_audit(c, kafka, "t-head", extra=("--from-seq", "17"))
    assert rc == 0, err
    assert [e["seq"] for e in events] == list(range(17, last + 1))

    # Two events with seq 20: a forged one (consistent hash) before the genuine one.
    forged = dict(evs[20], actor="operator:mallory", outcome="ok")
    forged["hash"] = audit_hash(forged)
    at = next(i for i, (_, r) in enumerate(recs) if r["kind"] == "event" and r["seq"] == 20)
    copy(kafka, "t-conflict", recs[:at] + [(-1, forged)] + recs[at:])
    rc, events, err = run_audit(c, kafka, "t-conflict")
    assert rc == 1 and "conflict: event 20" in err and "forged: event 20" in err, err
    assert [e["seq"] for e in events] == list(range(1, last + 1))
    assert next(e for e in events if e["seq"] == 20)["actor"] == evs[20]["actor"] != "operator:mallory"
    assert summary(err)[2] == 2, err
