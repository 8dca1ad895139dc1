"""Loopback ports for the real servers the tests start (etcd, ZooKeeper,
Prometheus, HAProxy and the backends they name).

Most of these servers cannot bind port 0 and say which port they got, so the
test chooses. A port bound and released from the kernel's ephemeral range can
be handed to another process before the server binds it (an outgoing
connection, another test's bind(0)); CI once saw a test block on whatever
held it. So ports are taken below the ephemeral range, and each is locked
with flock on /tmp/cairn-test-ports/<port> for the life of this process: no
two tests running at once (ctest -j, the C++ tests' free_port() in
tests/unit/agent/agent_fixture.h uses the same files) pick the same one.
"""
import fcntl
import os
import random
import socket

LOCK_DIR = "/tmp/cairn-test-ports"
_held = []  # lock files kept open (and locked) until the process exits


def _bindable(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_port():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    first, last = 15000, low - 1
    if last - first >= 1000:
        os.makedirs(LOCK_DIR, mode=0o1777, exist_ok=True)
        rng = random.Random(os.getpid() ^ int.from_bytes(os.urandom(4), "little"))
        for _ in range(4000):
            port = rng.randint(first, last)
            fd = os.open(os.path.join(LOCK_DIR, str(port)), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            if not _bindable(port):
                os.close(fd)
                continue
            _held.append(fd)
            return port
    with socket.socket() as s:  # the range is unusable: the kernel's choice
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
