"""A small private network on one machine for the integration tests: a
controller-host namespace holding a bridge, and one namespace per node joined
to it by a veth pair, all with addresses chosen at random from 10.0.0.0/8.

Nothing touches the root namespace's interfaces or routes: each veth pair is
created inside the controller-host namespace with its peer put straight into
the node's namespace. Names carry a random suffix (interface names stay
within Linux's 15 characters), so runs side by side do not meet. A node's
link is cut by setting the bridge side of its veth down, and restored by
setting it up again.

Processes run in a namespace with `ip netns exec NS argv...`, which execs
the command: the PID the caller gets is the process's own, so it is stopped
by that PID. `teardown()` deletes the namespaces (and with the controller's,
the bridge and every veth); the caller stops its processes first.
"""
import ctypes
import os
import secrets
import socket
import subprocess
import threading

import pytest

IP = "/usr/sbin/ip" if os.path.exists("/usr/sbin/ip") else "ip"
CLONE_NEWNET = 0x40000000


def _ip(*args, check=True):
    p = subprocess.run([IP, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    if check and p.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)} exited {p.returncode}: {p.stderr.decode(errors='replace').strip()}")
    return p


def exec_prefix(ns):
    """argv prefix that runs a command in namespace ns (same PID: ip execs it)."""
    return [IP, "netns", "exec", ns] if ns else []


def socket_in(ns, family=socket.AF_INET, type=socket.SOCK_STREAM):
    """A socket created in namespace ns (it stays there whatever thread uses it)."""
    if not ns:
        return socket.socket(family, type)
    out = {}

    def make():
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    e = ctypes.get_errno()
                    raise OSError(e, f"setns({ns}): {os.strerror(e)}")
            finally:
                os.close(fd)
            out["s"] = socket.socket(family, type)
        except BaseException as e:  # handed to the caller's thread
            out["e"] = e

    # A thread of its own: setns moves only the calling thread, which ends here.
    t = threading.Thread(target=make, daemon=True)
    t.start()
    t.join()
    if "e" in out:
        raise out["e"]
    return out["s"]


class Net:
    """A controller-host namespace with a bridge and one namespace per node."""

    def __init__(self, nodes):
        self.sfx = secrets.token_hex(3)  # 6 hex digits
        a, b = 16 + secrets.randbelow(230), secrets.randbelow(256)
        self.prefix_len = 24
        self.ctl_ns = f"cairn-{self.sfx}-ctl"
        self.ctl_addr = f"10.{a}.{b}.1"
        self.bridge = f"cb{self.sfx}"  # 8 characters
        self.nodes = list(nodes)
        self.ns, self.addr, self.veth_node, self.veth_bridge = {}, {}, {}, {}
        for i, n in enumerate(self.nodes, start=1):
            self.ns[n] = f"cairn-{self.sfx}-{n}"
            self.addr[n] = f"10.{a}.{b}.{10 + i}"
            self.veth_node[n] = f"cn{self.sfx}{i}"  # 9 characters
            self.veth_bridge[n] = f"cp{self.sfx}{i}"
        self.made = []  # namespaces created, deleted by teardown()

    def namespaces(self):
        return [self.ctl_ns] + [self.ns[n] for n in self.nodes]

    def up(self):
        p = _ip("netns", "add", self.ctl_ns, check=False)
        if p.returncode != 0:
            pytest.skip(f"cannot create a network namespace (ip netns add {self.ctl_ns}): "
                        f"{p.stderr.decode(errors='replace').strip()}")
        self.made.append(self.ctl_ns)
        c = self.ctl_ns
        _ip("-n", c, "link", "set", "lo", "up")
        _ip("-n", c, "link", "add", self.bridge, "type", "bridge")
        _ip("-n", c, "addr", "add", f"{self.ctl_addr}/{self.prefix_len}", "dev", self.bridge)
        _ip("-n", c, "link", "set", self.bridge, "up")
        for n in self.nodes:
            ns = self.ns[n]
            _ip("netns", "add", ns)
            self.made.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            # Made in the controller's namespace, the peer put straight into the node's:
            # the root namespace never holds either end.
            _ip("-n", c, "link", "add", self.veth_bridge[n], "type", "veth", "peer", "name", self.veth_node[n],
                "netns", ns)
            _ip("-n", c, "link", "set", self.veth_bridge[n], "master", self.bridge)
            _ip("-n", c, "link", "set", self.veth_bridge[n], "up")
            _ip("-n", ns, "addr", "add", f"{self.addr[n]}/{self.prefix_len}", "dev", self.veth_node[n])
            _ip("-n", ns, "link", "set", self.veth_node[n], "up")
        return self

    def reachable(self, node, timeout=1.0):
        """The controller host answers the node (a refused connection is an answer)."""
        s = socket_in(self.ns[node])
        s.settimeout(timeout)
        try:
            s.connect((self.ctl_addr, 9))
            return True
        except ConnectionRefusedError:
            return True
        except OSError:
            return False
        finally:
            s.close()

    def wait_reachable(self, timeout=20):
        """Every node reaches the controller host's address (bridge ports forwarding)."""
        import time
        deadline = time.monotonic() + timeout
        for n in self.nodes:
            while not self.reachable(n):
                if time.monotonic() > deadline:
                    raise AssertionError(f"node {n} ({self.addr[n]}) cannot reach {self.ctl_addr}")
                time.sleep(0.2)

    def cut(self, node):
        _ip("-n", self.ctl_ns, "link", "set", self.veth_bridge[node], "down")

    def restore(self, node):
        _ip("-n", self.ctl_ns, "link", "set", self.veth_bridge[node], "up")

    def link_up(self, node):
        out = _ip("-n", self.ctl_ns, "-o", "link", "show", self.veth_bridge[node]).stdout.decode()
        return ",UP" in out or "<UP" in out

    def teardown(self):
        """Deletes the namespaces (the bridge and veths with them). Stop their processes first."""
        errors = []
        for ns in reversed(self.made):
            p = _ip("netns", "del", ns, check=False)
            if p.returncode != 0:
                errors.append(f"ip netns del {ns}: {p.stderr.decode(errors='replace').strip()}")
        self.made = []
        return errors
