"""A compromised node stays inside its own node (docs/protocol.md § Ownership).

A real cairn-controller; the agents are stand-ins: pyzmq DEALERs (Debian's
python3-zmq) speaking CURVE with their own approved keys and hand-encoded
protobuf — test stand-ins for cairn-agent, which never names another agent's
task. node-b accepts a plan and then forgets its task (it re-registers without
it running), so the controller waits one liveness timeout for its result.
node-a, holding only its own key, keeps naming node-b's task in heartbeats and
progress reports: the task must still end `failed` (agent lost), and the
attempt must be logged and audited."""
import hashlib
import time

import zmq

from cluster import HEARTBEAT_MS, LIVENESS, agent_state, backup_set_id, catalog, cluster, lower_enum  # noqa: F401

PROTO = b"CAIRN-FLEET/1"


def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field_bytes(num, data):
    if isinstance(data, str):
        data = data.encode()
    return varint(num << 3 | 2) + varint(len(data)) + data


def field_varint(num, v):
    return varint(num << 3) + varint(v)


def fields(buf):
    """Top-level fields of a protobuf message: {number: [value, ...]} (bytes or int)."""
    out, i = {}, 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _read_varint(buf, i)
        elif wt == 2:
            n, i = _read_varint(buf, i)
            v, i = buf[i:i + n], i + n
        elif wt == 1:
            v, i = buf[i:i + 8], i + 8
        elif wt == 5:
            v, i = buf[i:i + 4], i + 4
        else:
            raise AssertionError(f"wire type {wt} in a controller message")
        out.setdefault(num, []).append(v)
    return out


def _read_varint(buf, i):
    v = shift = 0
    while True:
        b = buf[i]
        i += 1
        v |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return v, i


def register(name):
    component = field_bytes(1, "etc") + field_bytes(2, "files") + field_varint(3, 1)
    r = field_bytes(1, name) + field_bytes(2, name + ".local") + field_bytes(3, "stand-in") + field_bytes(4, component)
    return field_bytes(1, r)


def heartbeat(task_ids=()):
    h = field_varint(1, int(time.time())) + b"".join(field_bytes(2, t) for t in task_ids)
    return field_bytes(2, h)


def progress(task_id, done):
    return field_bytes(4, field_bytes(2, task_id) + field_varint(3, 2) + field_varint(4, done))


def plan_ack(envelope):
    return field_bytes(3, field_varint(2, 1) + field_bytes(5, hashlib.sha256(envelope).digest()))


LIVE = []  # stand-ins kept alive by wait()


def wait(c, what, pred, timeout=20):
    """c.wait_for, heartbeating every live stand-in meanwhile (liveness is 1 s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for s in LIVE:
            s.beat()
        r = pred()
        if r:
            return r
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {timeout} s\n{c.logs()}")


class StandIn:
    """A stand-in agent: its own CURVE key, enrolled and approved like a real one."""

    def __init__(self, c, name):
        self.c, self.name = c, name
        self.public, self.secret = zmq.curve_keypair()
        self.sock = None
        self.last = 0.0

    def beat(self, task_ids=()):
        if self.sock is not None and time.monotonic() - self.last > 0.1:
            self.send(heartbeat(task_ids))

    def connect(self):
        if self.sock is not None:
            self.sock.close(0)
        s = zmq.Context.instance().socket(zmq.DEALER)
        s.linger = 0
        s.curve_serverkey = (self.c.keys / "controller-curve.pub").read_text().strip().encode()
        s.curve_publickey = self.public
        s.curve_secretkey = self.secret
        s.connect(f"tcp://127.0.0.1:{self.c.fleet_port}")
        self.sock = s

    def send(self, body):
        self.sock.send_multipart([PROTO, body])
        self.last = time.monotonic()

    def recv(self, timeout=5.0):
        """The next controller message that is not a heartbeat, as its top-level fields."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.sock.poll(int(max(0.0, deadline - time.monotonic()) * 1000)):
                break
            frames = self.sock.recv_multipart()
            assert frames[0] == PROTO and len(frames) == 2, frames
            m = fields(frames[1])
            if 2 in m:  # heartbeat
                continue
            return m
        return None

    def enrol(self):
        c = self.c
        key = self.public.decode()
        self.connect()
        self.send(register(self.name))  # refused at the handshake, recorded as pending
        pend = wait(c, f"{self.name} pending", lambda: (lambda a: a if a and agent_state(a) == "pending" else None)(
            c.find_agent(key=key)))
        c.ok("agent", "approve", pend["agent_id"])
        self.connect()
        self.send(register(self.name))
        reply = self.recv()
        assert reply and 1 in reply, f"no RegisterReply for {self.name}: {reply}\n{c.logs()}"
        LIVE.append(self)


def test_another_agents_heartbeats_and_progress_do_not_keep_a_lost_task_alive(cluster):
    c = cluster
    LIVE.clear()
    a, b = StandIn(c, "node-a"), StandIn(c, "node-b")
    a.enrol()
    b.enrol()
    sid = backup_set_id(c.ok("backup", "create", "--node", "node-b"))
    m = b.recv()
    assert m and 3 in m, f"node-b got no plan: {m}\n{c.logs()}"
    b.send(plan_ack(m[3][0]))
    task = wait(c, "node-b's task accepted",
                      lambda: (lambda t: t if lower_enum(t.get("state", ""), "task_state_") == "accepted" else None)(
                          c.json("backup", "show", sid)["tasks"][0]))
    task_id = task["task_id"]
    # node-b forgets its task: it registers again without it running.
    b.send(register("node-b"))
    assert b.recv() is not None
    assert c.connected("node-a") and c.connected("node-b"), c.agents_of()

    # node-a names it for three liveness timeouts; node-b stays connected.
    timeout_s = HEARTBEAT_MS * LIVENESS / 1000
    end = time.monotonic() + 3 * timeout_s
    i = 0
    while time.monotonic() < end:
        a.send(heartbeat([task_id]))
        a.send(progress(task_id, 1000 + i))
        b.send(heartbeat())
        i += 1
        time.sleep(0.05)
    assert c.connected("node-a") and c.connected("node-b"), c.agents_of()

    def ended():
        s = c.json("backup", "show", sid)
        return s if lower_enum(s.get("state", ""), "set_state_") == "failed" else None

    LIVE.remove(a)  # node-a goes on naming the task below, node-b only heartbeats
    s = wait(c, "node-b's forgotten task failing", lambda: (a.beat([task_id]), ended())[1], timeout=10)
    t = s["tasks"][0]
    assert lower_enum(t["state"], "task_state_") == "failed", t
    assert "agent_lost" in str(t["reasons"][0].get("code", "")).lower(), t
    assert int(t.get("progress", {}).get("bytes_done", 0) or 0) < 1000, f"node-a's progress reached the task: {t}"
    log = c.controller.log.read_text(errors="replace")
    assert "naming 1 id(s) of other agents" in log, log[-3000:]
    con = catalog(c)
    try:
        rows = con.execute("SELECT details FROM audit_outbox WHERE action = 'agent.foreign_ids'").fetchall()
    finally:
        con.close()
    assert rows and any(task_id in r[0] for r in rows), rows
    # Once a minute at most: not one event per message.
    assert len(rows) <= 2, rows
    for s_ in (a, b):
        s_.sock.close(0)
