"""Garbage from the controller's side of the fleet socket must not take a real
cairn-agent down. The agent only connects out, so the test plays the
controller: a ZeroMQ ROUTER with the controller's CURVE key (pyzmq, Debian's
python3-zmq — a test stand-in for cairn-controller, which never sends such
frames) feeds the agent malformed frames, then a valid RegisterReply, and
checks the agent refused each bad message with an ErrorReply or a refusing
ack, kept its process, and then went on heartbeating like a healthy agent."""
import time

import pytest
import zmq

from cluster import cluster  # noqa: F401

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
    return varint(num << 3 | 2) + varint(len(data)) + data


def field_int(num, v):
    return varint(num << 3) + varint(v)


def read_varint(b, i):
    n = shift = 0
    while True:
        c = b[i]
        i += 1
        n |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return n, i


def fields(b):
    """Top-level fields of a protobuf message: [(number, value)], value bytes or int."""
    out, i = [], 0
    while i < len(b):
        tag, i = read_varint(b, i)
        num, wt = tag >> 3, tag & 7
        if wt == 0:
            v, i = read_varint(b, i)
        elif wt == 2:
            n, i = read_varint(b, i)
            v, i = b[i:i + n], i + n
        else:
            raise AssertionError(f"unexpected wire type {wt}")
        out.append((num, v))
    return out


# AgentMessage body field numbers (proto/cairn.proto)
REGISTER, HEARTBEAT, PLAN_ACK, ERROR, KEY_ACK = 1, 2, 3, 6, 7
MISSING_SIGNATURE, MALFORMED_ENVELOPE = 101, 110


class FakeController:
    def __init__(self, secret_z85):
        self.ctx = zmq.Context()
        self.s = self.ctx.socket(zmq.ROUTER)
        self.s.curve_server = True
        self.s.curve_secretkey = secret_z85.encode()
        self.s.linger = 0
        self.s.router_mandatory = True  # a send to a vanished agent fails loudly
        self.port = self.s.bind_to_random_port("tcp://127.0.0.1")
        self.rid = None
        self.last_beat = 0
        self.got = []  # (body field number, value) of every AgentMessage received

    def pump(self, seconds):
        """Receives for `seconds`, heartbeating so the agent never times out on us."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if self.rid is not None and time.monotonic() - self.last_beat > 0.15:
                self.send(PROTO, field_bytes(2, field_int(1, int(time.time()))))
            if self.s.poll(50):
                frames = self.s.recv_multipart()
                self.rid = frames[0]
                assert frames[1] == PROTO, f"agent sent protocol id {frames[1]!r}"
                (body,) = fields(frames[2])[:1] or [(None, None)]
                self.got.append(body)

    def send(self, *frames):
        assert self.rid is not None, "the agent never connected"
        self.s.send_multipart([self.rid, *frames])
        self.last_beat = time.monotonic()

    def answer(self, frames, kinds, seconds=3):
        """Sends frames; returns the first reply whose body is one of kinds."""
        self.got.clear()
        self.send(*frames)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.pump(0.1)
            for n, v in self.got:
                if n in kinds:
                    return n, v
        return None

    def close(self):
        self.s.close()
        self.ctx.term()


def test_agent_survives_garbage_from_the_controller_side(cluster):
    c = cluster
    c.add_agent("node-a", {"a.txt": b"alpha"})
    secret = (c.keys / "controller-curve.key").read_text().strip()
    fake = FakeController(secret)
    cfg = c.agent_dirs["node-a"]["config"]
    cfg.write_text(cfg.read_text().replace(f"127.0.0.1:{c.fleet_port}", f"127.0.0.1:{fake.port}"))
    agent = c.agents["node-a"].start()
    try:
        fake.pump(3)
        assert (REGISTER in [n for n, _ in fake.got]), f"no Register from the agent: {fake.got}\n{c.logs()}"
        bad = b"\xff" * 200  # a varint that never ends: no protobuf parser takes it
        big = b"\xff" * (3 << 20)
        # (frames, the refusal the agent must answer with)
        junk = [
            ((b"one frame only",), ERROR),
            ((b"CAIRN-FLEET/9", b"\x0a\x00"), ERROR),
            ((PROTO, bad), ERROR),
            ((PROTO, b""), ERROR),
            ((PROTO, field_bytes(1, field_bytes(1, b"ag-x") + field_int(2, 2))[:5]), ERROR),  # truncated RegisterReply
            ((PROTO, field_bytes(9, b"\x01\x02")), ERROR),  # unknown body field
            ((PROTO, bad, b"an extra frame"), ERROR),
            ((PROTO, big), ERROR),
            ((PROTO, field_bytes(3, bad)), PLAN_ACK),  # plan: bytes that are no envelope
            ((PROTO, field_bytes(4, bad)), KEY_ACK),  # key announcement: same
            ((PROTO, field_bytes(3, b"")), PLAN_ACK),  # empty plan
        ]
        # Every bad message is answered with a refusal of its own kind.
        for frames, want in junk:
            reply = fake.answer(frames, {want})
            assert agent.alive(), f"agent died after {[f[:40] for f in frames]!r}\n{c.logs()}"
            assert reply, f"no {want} reply to {[f[:40] for f in frames]!r}: got {fake.got}\n{c.logs()}"
            if want == PLAN_ACK:
                ack = dict(fields(reply[1]))
                assert not ack.get(2) and ack.get(3) in (MALFORMED_ENVELOPE, MISSING_SIGNATURE), ack
            if want == KEY_ACK:
                assert not dict(fields(reply[1])).get(2), reply

        # Still a working agent: a valid RegisterReply, then heartbeats.
        fake.got.clear()
        fake.send(PROTO, field_bytes(1, field_bytes(1, b"ag-fake") + field_int(2, 2) + field_int(3, 200) +
                                     field_int(4, 5)))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and HEARTBEAT not in [n for n, _ in fake.got]:
            fake.pump(0.3)
        assert HEARTBEAT in [n for n, _ in fake.got], f"no heartbeat after registering: {fake.got}\n{c.logs()}"
        assert agent.alive()
        log = agent.log.read_text(errors="replace")
        assert "refused a message from the controller" in log, log[-3000:]
    finally:
        fake.close()
